"""Shared pieces of the side-by-side benchmarks: free ports, peers, CPU accounting.

CPU is measured, not wall time: the sum of utime+stime over a process and all its descendants
(Kamailio forks workers), read from /proc before and after a run. Ratios between elements
measured in the same run are what the goals are stated in.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO

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


def runnable_wait_seconds(pid: int) -> float:
    """How long `pid`, its threads and live descendants have been runnable but waiting for a
    CPU (run_delay in /proc/PID/task/TID/schedstat): near zero unless something else on the
    machine competes, and then the figures measured alongside are suspect."""
    total = 0
    for p in _descendants(pid):
        for task in Path(f"/proc/{p}/task").glob("*"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                total += int((task / "schedstat").read_text().split()[1])
    return total / 1e9


def udp_drops(port: int) -> int:
    """Datagrams the kernel dropped for the UDP socket bound to 127.0.0.1:`port` (its receive
    buffer was full: the owner did not read fast enough); 0 when no such socket."""
    wanted = f"0100007F:{port:04X}"
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == wanted:
            return int(fields[-1])
    return 0


def wait_udp_answer(port: int, timeout: float = 10.0, *, in_dialog: bool = False,
                    host: str = "127.0.0.1") -> None:
    """Wait until a SIP element on `host`:`port` answers an OPTIONS over UDP.

    `in_dialog` puts a To tag on the probe: a relaying proxy then answers it itself (no
    route) instead of forwarding it to a next hop that may never answer an OPTIONS.
    """
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(0.2)
        probe = options_probe(port, int(s.getsockname()[1]), in_dialog=in_dialog)
        while time.monotonic() < deadline:
            s.sendto(probe, (host, port))
            with contextlib.suppress(OSError):
                s.recv(65535)
                return
    raise RuntimeError(f"nothing answered on udp {host}:{port} within {timeout}s")


def wait_udp_bound(port: int, timeout: float = 10.0) -> None:
    """Wait until some process has bound udp/`port` on 127.0.0.1 (for peers such as a SIPp
    UAS, which discards an OPTIONS probe instead of answering it)."""
    wanted = f"0100007F:{port:04X}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = Path("/proc/net/udp").read_text().splitlines()[1:]
        if any(line.split()[1] == wanted for line in lines):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing bound udp/{port} within {timeout}s")


def options_probe(port: int, local_port: int, *, in_dialog: bool = False) -> bytes:
    to_tag = ";tag=probe" if in_dialog else ""
    return (
        f"OPTIONS sip:ping@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{local_port};branch=z9hG4bK-probe;rport\r\n"
        f"From: <sip:probe@127.0.0.1>;tag=p\r\nTo: <sip:ping@127.0.0.1>{to_tag}\r\n"
        "Call-ID: probe\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


@contextlib.contextmanager
def running(
    cmd: list[str],
    *,
    cwd: Path | None = None,
    log: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """`cmd` in a session of its own (a Ctrl-C reaches only us, and we stop it), stopped with
    its whole process group on the way out, however that happens.

    `log` takes stdout and stderr: a busy element would block on a full pipe nobody reads.
    `env` is added to ours.
    """
    with contextlib.ExitStack() as stack:
        out: IO[bytes] | int = subprocess.DEVNULL
        err: IO[bytes] | int = subprocess.PIPE
        if log is not None:
            out = err = stack.enter_context(log.open("ab"))
        proc = subprocess.Popen(
            cmd, cwd=cwd, stdout=out, stderr=err, start_new_session=True,
            env=None if env is None else {**os.environ, **env},
        )
        stack.callback(_stop, proc)
        yield proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # Workers the leader forked (Kamailio's) can outlive it.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def lyncgate(
    config_text: str, *, args: Sequence[str] = (), log: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """`lyncgate run` on `config_text`, whose @STATE@ becomes a fresh state directory; `args`
    follow `run` (log format and level, say)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lyncgate.toml"
        path.write_text(config_text.replace("@STATE@", tmp))
        cmd = [sys.executable, "-m", "gateway.cli", "run", "--config", str(path), *args]
        with running(cmd, cwd=ROOT, log=log) as proc:
            yield proc


@contextlib.contextmanager
def kamailio(config_text: str, *, log: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """Kamailio on `config_text`, in the foreground (-DD). It still forks its workers: read
    its CPU with `cpu_seconds`, which follows descendants."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "kamailio.cfg"
        cfg.write_text(config_text)
        pidfile = Path(tmp) / "kamailio.pid"
        cmd = ["kamailio", "-f", str(cfg), "-P", str(pidfile), "-Y", tmp, "-DD", "-E"]
        with running(cmd, log=log) as proc:
            yield proc


def sipp(
    target: str, scenario: Path, args: list[str], timeout: float, *, cwd: Path | None = None
) -> str:
    """Run SIPp (Debian's sip-tester) to completion, bounded in time; returns its statistics.

    SIPp exits 0 when every call succeeded, 1 when some failed; both print the summary. Its
    -timeout only begins a graceful stop that waits for the open calls, so one call waiting
    for a message that never comes keeps it running (add -recv_timeout to fail such calls).
    `timeout` + 10 s after the start it is killed, and what it printed is returned with a note.
    """
    cmd = ["sipp", target, "-sf", str(scenario), "-i", "127.0.0.1", "-nostdin",
           "-timeout", f"{int(timeout)}s", *args]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 10,
                              check=False, cwd=cwd)
    except subprocess.TimeoutExpired as exc:
        printed = [p.decode(errors="replace") if isinstance(p, bytes) else p or ""
                   for p in (exc.stdout, exc.stderr)]
        return "".join(printed) + f"\nsipp killed: still running {timeout + 10:.0f} s after start\n"
    return done.stdout + done.stderr


def sipp_counts(output: str) -> dict[str, int]:
    """The cumulative counters of SIPp's last statistics screen ("Successful call", "Failed
    call", "Outgoing calls created", ...), with "retransmissions" and "timeouts" summed over
    the message table printed before it."""
    counts: dict[str, int] = {}
    before, _, screen = output.rpartition("Statistics Screen")
    for line in screen.splitlines() if before else []:
        cells = [cell.strip() for cell in line.split("|")]
        if len(cells) == 3 and cells[2].isdigit():
            counts[cells[0]] = int(cells[2])
    retransmissions = timeouts = 0
    for line in before.rpartition("Messages  Retrans")[2].splitlines():
        words = line.split()
        arrow = next((i for i, w in enumerate(words) if w.strip("-") in ("<", ">")), None)
        if arrow is None:
            continue
        # A UAC's rows read "INVITE ---->  [E-RTDn] Messages Retrans Timeout ...", a UAS's
        # "----> INVITE ...": the message name (maybe a status code) is not a count.
        rest = words[arrow + 2:] if arrow == 0 else words[arrow + 1:]
        numbers = [int(w) for w in rest if w.isdigit()]
        retransmissions += numbers[1] if len(numbers) > 1 else 0
        timeouts += numbers[2] if len(numbers) > 2 else 0
    counts["retransmissions"], counts["timeouts"] = retransmissions, timeouts
    return counts


# lyncgate on 127.0.0.1:{port} over UDP alone, for the benchmarks to add their rules to.
LYNCGATE_NODE = """
[node]
name = "bench"
sip_tls_fqdn = "localhost"
address = "127.0.0.1"
state_dir = "@STATE@"
[listen]
udp = {port}
tcp = 0
tls = 0
[tls]
verify_mode = "off"
"""
