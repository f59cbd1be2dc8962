"""The daemon as users run it: `lyncgate run --config FILE` in a subprocess, JSON logs read
back as events."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.peers import free_port

ROOT = Path(__file__).resolve().parents[2]


def options(port: int, local_port: int, transport: str = "UDP", call_id: str = "probe") -> bytes:
    return (
        f"OPTIONS sip:ping@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.1:{local_port};branch=z9hG4bK-{call_id};rport\r\n"
        "From: <sip:probe@127.0.0.1>;tag=p\r\nTo: <sip:ping@127.0.0.1>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def committed_cdrs(tmp: Path, count: int = 1, timeout: float = 5.0) -> list[dict[str, Any]]:
    """The CDRs a running daemon on `tmp`'s state directory has committed, newest first,
    once there are at least `count`: its writer commits a few milliseconds after a call ends
    (gateway/calls/cdr.py), so a read at the moment the call's end is logged can miss it."""
    return _poll_db(tmp, "SELECT * FROM cdr ORDER BY id DESC",
                    lambda rows: len(rows) >= count, timeout)


def open_cdrs(tmp: Path, ready: Callable[[list[dict[str, Any]]], bool],
              timeout: float = 5.0) -> list[dict[str, Any]]:
    """The records of calls in progress (`cdr_open`, as the daemon last committed them)
    once `ready` holds for them."""
    rows = _poll_db(tmp, "SELECT record FROM cdr_open ORDER BY key",
                    lambda rows: ready([json.loads(r["record"]) for r in rows]), timeout)
    return [json.loads(r["record"]) for r in rows]


def _poll_db(tmp: Path, query: str, ready: Callable[[list[dict[str, Any]]], bool],
             timeout: float) -> list[dict[str, Any]]:
    path = tmp / "state" / "cdr.sqlite3"
    deadline = time.monotonic() + timeout
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        if path.exists():
            with contextlib.closing(sqlite3.connect(path)) as db:
                db.row_factory = sqlite3.Row
                rows = [dict(row) for row in db.execute(query)]
            if ready(rows):
                return rows
        time.sleep(0.02)
    raise AssertionError(f"{path}: {query!r} still gave {rows} after {timeout}s")


class Daemon:
    """A running `lyncgate run`; `text` may use @UDP@, @TCP@, @TLS@ and @STATE@; `host` is
    the loopback address its `node.address` names (a cluster's nodes: 127.0.0.2-4)."""

    def __init__(self, tmp: Path, text: str, attempts: int = 3, host: str = "127.0.0.1"
                 ) -> None:
        self.tmp = tmp
        self.host = host
        self.config = tmp / "lyncgate.toml"
        self.log_path = tmp / "lyncgate.log"
        for attempt in range(1, attempts + 1):
            self.udp, self.tcp, self.tls = free_port(), free_port(), free_port()
            self.write_config(text)
            self._log = self.log_path.open("wb")
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "run", "--config", str(self.config),
                 "--log-level", "debug"],
                cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            try:
                self.wait_ready()
                return
            except BaseException:
                # The constructor raises, so no test holds this daemon to stop it: stop it.
                self.proc.kill()
                self.proc.wait()
                self._log.close()
                # free_port() can only say a port was free when it was asked; another
                # process may take it before the daemon binds it. Then, and only then, the
                # daemon gets fresh ports.
                taken = [e for e in self.events("listen_failed") if "in use" in e["error"]]
                if not taken or attempt == attempts:
                    raise

    def write_config(self, text: str) -> None:
        self.config.write_text(
            text.replace("@UDP@", str(self.udp)).replace("@TCP@", str(self.tcp))
            .replace("@TLS@", str(self.tls)).replace("@STATE@", str(self.tmp / "state"))
        )

    def ask_udp(self, data: bytes, timeout: float = 2.0) -> bytes:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.settimeout(timeout)
            s.sendto(data.replace(b"@LOCAL@", str(s.getsockname()[1]).encode()),
                     (self.host, self.udp))
            return s.recv(65535)

    def wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"lyncgate exited {self.proc.returncode}: {self.text()}")
            try:
                self.ask_udp(options(self.udp, 0), timeout=0.2)
                return
            except OSError:
                continue
        raise RuntimeError(f"lyncgate did not answer within {timeout}s: {self.text()}")

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        out = []
        for line in self.text().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if name is None or event.get("event") == name:
                out.append(event)
        return out

    def wait_event(self, name: str, count: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.events(name)
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"no {name!r} event within {timeout}s; log:\n{self.text()[-3000:]}")

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def stop(self, grace: float = 40.0) -> int:
        """SIGTERM, then SIGKILL if the node has not exited within `grace` seconds (its
        drain waits for calls in progress)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode
