"""Shared pieces of the side-by-side benchmarks: free ports, peers, CPU accounting.

CPU is measured, not wall time: the sum of utime+stime over a process and all its descendants
(Kamailio forks workers), read from /proc before and after a run. Ratios between elements
measured in the same run are what the goals are stated in.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A port free for both UDP and TCP on 127.0.0.1 at the time of asking."""
    while True:
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        other = socket.SOCK_STREAM if kind == socket.SOCK_DGRAM else socket.SOCK_DGRAM
        with socket.socket(socket.AF_INET, other) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


def _descendants(pid: int) -> list[int]:
    out = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            for child in (task / "children").read_text().split():
                out.extend(_descendants(int(child)))
    return out


def cpu_seconds(pid: int) -> float:
    """utime+stime of `pid` and every live descendant, in seconds."""
    total = 0
    for p in _descendants(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / TICKS


def wait_udp_answer(port: int, timeout: float = 10.0) -> None:
    """Wait until a SIP element on 127.0.0.1:`port` answers an OPTIONS over UDP."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(0.2)
        probe = options_probe(port, int(s.getsockname()[1]))
        while time.monotonic() < deadline:
            s.sendto(probe, ("127.0.0.1", port))
            with contextlib.suppress(OSError):
                s.recv(65535)
                return
    raise RuntimeError(f"nothing answered on udp/{port} within {timeout}s")


def options_probe(port: int, local_port: int) -> bytes:
    return (
        f"OPTIONS sip:ping@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{local_port};branch=z9hG4bK-probe;rport\r\n"
        "From: <sip:probe@127.0.0.1>;tag=p\r\nTo: <sip:ping@127.0.0.1>\r\n"
        "Call-ID: probe\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


@contextlib.contextmanager
def running(cmd: list[str], *, cwd: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


@contextlib.contextmanager
def lyncgate(config_text: str) -> Iterator[subprocess.Popen[bytes]]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lyncgate.toml"
        path.write_text(config_text.replace("@STATE@", tmp))
        cmd = [sys.executable, "-m", "gateway.cli", "run", "--config", str(path)]
        with running(cmd, cwd=ROOT) as proc:
            yield proc


def sipp(target: str, scenario: Path, args: list[str], timeout: float) -> str:
    """Run SIPp (Debian's sip-tester) to completion, bounded in time; returns its statistics.

    SIPp exits 0 when every call succeeded, 1 when some failed; both print the summary.
    """
    cmd = ["sipp", target, "-sf", str(scenario), "-i", "127.0.0.1", "-nostdin",
           "-timeout", f"{int(timeout)}s", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 10, check=False)
    return done.stdout + done.stderr
