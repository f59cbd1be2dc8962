"""`lyncgate run` when something is wrong around it: an unusable state directory, a port
already taken, no uvloop; and where its log and /status say so."""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from tests.cli.console import LYNCGATE, lyncgate
from tests.daemon.harness import ROOT
from tests.peers import free_port


def config(folder: Path, *, state: Path | None = None, udp: int = 0, tcp: int = 0,
           tls: int = 0, api: int = 0) -> Path:
    path = folder / "lyncgate.toml"
    path.write_text(f"""
[node]
state_dir = "{state or folder / 'state'}"
[listen]
udp = {udp or free_port()}
tcp = {tcp or free_port()}
tls = {tls or free_port()}
[api]
port = {api}
""")
    return path


def events(stderr: str) -> list[dict[str, Any]]:
    out = []
    for line in stderr.splitlines():
        with suppress(ValueError):
            out.append(json.loads(line))
    return out


def test_an_unwritable_state_directory_is_named_with_its_setting(tmp_path: Path) -> None:
    """Not `listen_failed ... Permission denied`, which reads as a port problem: the state
    directory, why, and node.state_dir. (A path under a regular file: unwritable even for
    root, who may write anywhere else.)"""
    (tmp_path / "file").write_text("")
    state = tmp_path / "file" / "state"
    done = lyncgate("run", "--config", str(config(tmp_path, state=state)),
                    "--log-format", "json", timeout=30)
    assert done.returncode == 1, done.stderr
    lines = events(done.stderr)
    assert not [e for e in lines if e["event"] == "listen_failed"], done.stderr
    [unusable] = [e for e in lines if e["event"] == "state_dir_unusable"]
    assert unusable["directory"] == str(state)
    assert unusable["error"] == "Not a directory"
    assert "set node.state_dir" in unusable["note"]


def test_a_user_whose_home_is_unwritable_is_told_about_the_state_directory() -> None:
    """The issue's case: no node.state_dir, HOME=/nonexistent, not root (as root, setpriv
    drops to nobody, whom the mode binds)."""
    folder = Path(tempfile.mkdtemp(prefix="lyncgate-nobody-"))
    try:
        folder.chmod(0o755)
        path = folder / "lyncgate.toml"
        path.write_text(f"[listen]\nudp = {free_port()}\ntcp = {free_port()}\n"
                        f"tls = {free_port()}\n[api]\nport = 0\n")
        path.chmod(0o644)
        nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        done = subprocess.run(
            [*(nobody if os.geteuid() == 0 else []), LYNCGATE, "run", "--config", str(path),
             "--log-format", "json"],
            env={"PATH": os.environ["PATH"], "HOME": "/nonexistent"}, capture_output=True,
            text=True, timeout=30, check=False)
    finally:
        shutil.rmtree(folder)
    assert done.returncode == 1, done.stderr
    [unusable] = [e for e in events(done.stderr) if e["event"] == "state_dir_unusable"]
    assert unusable["directory"] == "/nonexistent/.local/state/lyncgate"
    assert unusable["error"] == "Permission denied"
    assert "set node.state_dir" in unusable["note"]
    assert not [e for e in events(done.stderr) if e["event"] == "listen_failed"]


def test_a_udp_port_in_use_says_the_same_words_as_a_tcp_one(tmp_path: Path) -> None:
    failures = []
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as taken:
            taken.bind(("127.0.0.1", 0))
            if kind == socket.SOCK_STREAM:
                taken.listen()
            port = int(taken.getsockname()[1])
            other = free_port()
            # Both listeners of the pair take the port: UDP first, so the taken one fails.
            udp, tcp = (port, other) if kind == socket.SOCK_DGRAM else (other, port)
            done = lyncgate("run", "--config", str(config(tmp_path, udp=udp, tcp=tcp)),
                            "--log-format", "json", timeout=30)
        assert done.returncode == 1, done.stderr
        [failed] = [e for e in events(done.stderr) if e["event"] == "listen_failed"]
        failures.append(failed)
    assert [(f["transport"], f["error"]) for f in failures] == [
        ("udp", "address already in use (EADDRINUSE)"),
        ("tcp", "address already in use (EADDRINUSE)"),
    ]


SERVE_WITHOUT_UVLOOP = textwrap.dedent("""
    import argparse, sys, traceback
    sys.modules["uvloop"] = None  # what `import uvloop` meets where it is not installed
    from gateway.daemon import command

    async def serve(config, path):
        try:
            raise RuntimeError("a bug inside the running daemon")
        except RuntimeError:
            traceback.print_exc()
        return 0

    command._serve = serve
    sys.exit(command.run(argparse.Namespace(config=sys.argv[1], log_format="json",
                                            log_level="info")))
""")


def test_without_uvloop_a_traceback_from_the_daemon_carries_no_import_error(
    tmp_path: Path,
) -> None:
    done = subprocess.run([sys.executable, "-c", SERVE_WITHOUT_UVLOOP, str(config(tmp_path))],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "uvloop not installed" in done.stderr
    trace = done.stderr[done.stderr.index("Traceback"):]
    assert "RuntimeError: a bug inside the running daemon" in trace
    assert "uvloop" not in trace and "During handling" not in trace, trace


@contextmanager
def running(argv: list[str], cwd: Path) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([LYNCGATE, *argv], cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=40)


def test_status_shows_the_config_path_absolute(tmp_path: Path) -> None:
    api = free_port()
    config(tmp_path, api=api)
    with running(["run", "--config", "lyncgate.toml", "--log-format", "json"], tmp_path):
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{api}/status",
                                            timeout=2) as answer:
                    status = json.load(answer)
                break
            except OSError:
                assert time.monotonic() < deadline, "the API never answered"
                time.sleep(0.1)
    assert status["config"] == str(tmp_path / "lyncgate.toml")


def test_console_logs_are_coloured_on_a_terminal_only(tmp_path: Path) -> None:
    """The same failing start (a state directory under a file) twice: into a pipe, plain
    text; onto a terminal, ANSI colours."""
    (tmp_path / "file").write_text("")
    path = config(tmp_path, state=tmp_path / "file" / "state")
    piped = lyncgate("run", "--config", str(path), "--log-format", "console", timeout=30)
    assert "state_dir_unusable" in piped.stderr
    assert "\x1b[" not in piped.stderr
    controller, terminal = pty.openpty()
    proc = subprocess.Popen([LYNCGATE, "run", "--config", str(path), "--log-format", "console"],
                            stdout=subprocess.DEVNULL, stderr=terminal)
    os.close(terminal)
    screen = b""
    while select.select([controller], [], [], 30)[0]:
        try:
            data = os.read(controller, 65536)
        except OSError:  # the other side closed: the daemon exited
            break
        if not data:
            break
        screen += data
    os.close(controller)
    proc.wait(timeout=30)
    assert b"state_dir_unusable" in screen and b"\x1b[" in screen
