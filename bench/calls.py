"""Calls through a SIP element: lyncgate against Kamailio and sippy, side by side in one run.

SIPp UAC -> element -> SIPp UAS over UDP on 127.0.0.1, with the lab's record-routing scenarios
(tests/scenarios/uac_rr.xml, uas_rr.xml: INVITE, 100, 180, 200, ACK, BYE, 200 on each leg), the
UAC's copy tying responses to the INVITE transaction so that a 180 overtaken by the 200 is
ignored rather than failed (REORDERING_UAC).
The elements: lyncgate (`gateway.cli run`, one routing rule sending `call-N` to the UAS),
Kamailio as the lab's stateful relay (kamailio-relay.cfg with our ports; record-route +
t_relay), and sippy's b2bua_simple (PyPI `sippy`), skipped with the reason when it is missing
or does not run. CPU is utime+stime of the element's process and all its descendants, from
/proc (bench/common.py): before the calls, after them, and once more SETTLE_S later, because
a transaction's clean-up comes 32 s after it ends (Timer J/K); what an element burns idle
(measured before the calls: sippy polls) is taken off that last part. Calls per CPU-second
divides the successful calls by that total.

Modes:
  compare (default)  the same calls at the same rate through each element: attempted,
                     successful and failed calls, calls per CPU-second, the ratios. Goals:
                     lyncgate >= 0.5x Kamailio and >= 4x sippy calls per CPU-second.
  soak               lyncgate alone at --rate for --duration s (default 300/s for 60 s):
                     goal 0 failed calls.
  overload           anchored calls at 2x and 4x the rate lyncgate sustains (measured first,
                     or --rate), Kamailio with ratelimit beside it: see bench/overload.py
                     for the goals (>= 90% of the sustained rate served, every failure a
                     503, no kernel drops, back to full service within 2 s).
  latency            INVITE -> 180 at the UAC, through lyncgate (anchored and signalling only)
                     and Kamailio and UAC -> UAS direct, at --rate (default 200/s): p99
                     added by the element (p99 through it minus p99 direct), goal < 5 ms
                     for lyncgate. Times are the kernel's receive stamps on lo (an AF_PACKET
                     socket with a BPF filter for the INVITEs from and the 180s to the UAC's
                     port; needs root), because SIPp's response times (-trace_rtt) count
                     whole milliseconds; SIPp's figure is printed beside it as a cross-check.

Each table also shows the datagrams the kernel dropped at the element's port (its receive
buffer full: the element stalled) and how long the element waited, runnable, for a CPU (other
load on this 2-core machine, which skews every figure).

Every run is bounded (SIPp -m = rate x duration, -timeout, -recv_timeout) and every process
started is stopped on the way out, Ctrl-C and SIGTERM included. Other benchmarks share this
machine, so take the lock:

    flock /tmp/bench.lock .venv/bin/python bench/calls.py [--rate 100 --duration 30]
    flock /tmp/bench.lock .venv/bin/python bench/calls.py soak [--rate 300 --duration 60]
    flock /tmp/bench.lock .venv/bin/python bench/calls.py latency [--rate 200 --duration 20]
    flock /tmp/bench.lock .venv/bin/python bench/calls.py overload [--rate R --duration 20]

Add --keep to keep the logs and SIPp traces (the directory is printed).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import importlib.util
import json
import math
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from common import (
    LYNCGATE_NODE,
    ROOT,
    cpu_seconds,
    free_port,
    kamailio,
    lyncgate,
    runnable_wait_seconds,
    running,
    sipp,
    sipp_counts,
    udp_drops,
    wait_udp_answer,
    wait_udp_bound,
)

SCENARIOS = ROOT / "tests" / "scenarios"
UAC, UAS = SCENARIOS / "uac_rr.xml", SCENARIOS / "uas_rr.xml"
LAB_KAMAILIO = ROOT.parent / "shared" / "lab" / "kamailio-relay.cfg"
SERVICE = "call-1"  # the alias the UAC dials; lyncgate's rule rewrites it toward the UAS
RECV_TIMEOUT_MS = 10_000  # a call stuck waiting for a message fails instead of hanging SIPp
UAS_TIMEWAIT_S = 4  # uas_rr.xml holds each call this long after the BYE
SETTLE_S = 36  # UDP Timer J/K (64 x T1 = 32 s) and a margin: the last transactions are gone

LYNCGATE_CFG = LYNCGATE_NODE + r"""[global]
anchor_sip_media = {anchor}
[[routing_rules]]
name = "to the SIPp UAS"
priority = 10
protocols = ["sip"]
match = 'call-(\d+)'
replace = 'uas-\1@127.0.0.1:{uas_port};transport=udp'
"""
LYNCGATE_ARGS = ("--log-format", "json", "--log-level", "warning")
LYNCGATE_NOTE = ("lyncgate: JSON logs at warning; media anchored at the relay (the default; "
                 "default media ports), CDRs written to SQLite")
LYNCGATE_SIG_NOTE = ("lyncgate-sig: the same with global.anchor_sip_media = false (signalling "
                     "only, like for like with Kamailio and sippy, which relay no media)")

# Where Kamailio listens and relays to in the lab's file; we substitute ours.
LAB_LISTEN, LAB_NEXT_HOP = "127.0.0.1:5070", "127.0.0.1:5090"


def substitute(text: str, replacements: dict[str, str], what: str) -> str:
    """`text` with each key replaced; a key that is absent means `what` changed under us,
    and a silently different scenario or config would make the figures lie."""
    for old, new in replacements.items():
        if old not in text:
            raise RuntimeError(f"{what}: expected {old!r}, not found; update bench/calls.py")
        text = text.replace(old, new)
    return text


# -- the elements --------------------------------------------------------------------------
# Each starts with the UAS port it relays to and yields (pid to measure or None, its port).
Start = Callable[[Path, int], contextlib.AbstractContextManager[tuple[int | None, int]]]


@contextlib.contextmanager
def lyncgate_element(work: Path, uas_port: int, anchor: bool = True
                     ) -> Iterator[tuple[int | None, int]]:
    port = free_port()
    config = LYNCGATE_CFG.format(port=port, uas_port=uas_port,
                                 anchor="true" if anchor else "false")
    with lyncgate(config, args=LYNCGATE_ARGS, log=work / "lyncgate.log") as proc:
        wait_udp_answer(port, timeout=30, in_dialog=True)
        yield proc.pid, port


@contextlib.contextmanager
def kamailio_element(work: Path, uas_port: int) -> Iterator[tuple[int | None, int]]:
    port = free_port()
    config = substitute(
        LAB_KAMAILIO.read_text(),
        {f"listen=udp:{LAB_LISTEN}": f"listen=udp:127.0.0.1:{port}",
         f"listen=tcp:{LAB_LISTEN}": f"listen=tcp:127.0.0.1:{port}",
         f"sip:{LAB_NEXT_HOP};": f"sip:127.0.0.1:{uas_port};"},
        str(LAB_KAMAILIO),
    )
    with kamailio(config, log=work / "kamailio.log") as proc:
        # Without a To tag the relay would forward the probe to the UAS, which never answers.
        wait_udp_answer(port, in_dialog=True)
        yield proc.pid, port


@contextlib.contextmanager
def sippy_element(work: Path, uas_port: int) -> Iterator[tuple[int | None, int]]:
    port = free_port()
    cmd = [sys.executable, "-m", "sippy.b2bua_simple", "-f", "-l", "127.0.0.1",
           "-p", str(port), "-n", f"127.0.0.1:{uas_port}"]
    # Warning level, as for lyncgate: at INFO sippy writes every message it sends or receives.
    env = {"SIPLOG_LVL": "WARN", "SIPLOG_BEND": "stderr"}
    with running(cmd, log=work / "sippy.log", env=env) as proc:
        try:
            wait_udp_answer(port, timeout=30, in_dialog=True)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}; {tail(work / 'sippy.log')}") from exc
        yield proc.pid, port


@contextlib.contextmanager
def no_element(work: Path, uas_port: int) -> Iterator[tuple[int | None, int]]:
    yield None, uas_port


# SIPp fails a call on a 100 or 180 that arrives after the 200; an element with several
# workers (Kamailio's UDP children, sippy's threads) sends them in that order now and then,
# which UDP allows and a real UA ignores. Tying the responses to the INVITE's transaction
# (start_txn/response_txn) makes SIPp ignore such a provisional, for every element alike.
# SIPp then also wants the 2xx ACK named (it resends it if the 200 is retransmitted, as a UA
# should); the ACK's branch stays its own.
INVITE_SEND = '<send retrans="500">\n    <![CDATA[\n      INVITE'
ACK_SEND = "<send>\n    <![CDATA[\n      ACK"
REORDERING_UAC = {
    INVITE_SEND: INVITE_SEND.replace('retrans="500"', 'retrans="500" start_txn="invite"'),
    ACK_SEND: ACK_SEND.replace("<send>", '<send ack_txn="invite">'),
    **{f'<recv response="{code}" optional="true"/>':
       f'<recv response="{code}" optional="true" response_txn="invite"/>' for code in (100, 180)},
    '<recv response="200" rtd="true" rrs="true"/>':
        '<recv response="200" rtd="true" rrs="true" response_txn="invite"/>',
}
# Two more changes sippy needs, neither to the messages' flow or count:
# - its Contact carries a display name (`Anonymous <sip:127.0.0.1:PORT>`) and SIPp 3.6's
#   [next_url] copies that whole into the ACK and BYE Request-URI, which sippy cannot parse:
#   the UAC takes the URI out of the Contact itself;
# - it sends its BYE to the UAS's Contact and refuses `transport=UDP` in upper case
#   ("newTransaction() to unsupported transport: UDP"): the UAS leaves the parameter out
#   (UDP is the default).
SIPPY_UAC = {  # applied after REORDERING_UAC
    '<recv response="200" rtd="true" rrs="true" response_txn="invite"/>':
        '<recv response="200" rtd="true" rrs="true" response_txn="invite"><action><ereg '
        'regexp="sip:[^>;]*" search_in="hdr" header="Contact:" check_it="true" '
        'assign_to="target"/></action></recv>',
    "ACK [next_url]": "ACK [$target]",
    "BYE [next_url]": "BYE [$target]",
}
SIPPY_UAS = {"Contact: <sip:[local_ip]:[local_port];transport=[transport]>":
             "Contact: <sip:[local_ip]:[local_port]>"}


def scenarios(work: Path, *, sippy: bool = False) -> tuple[Path, Path]:
    """The lab's uac_rr.xml and uas_rr.xml as the comparison runs them (see above)."""
    uac_text = substitute(UAC.read_text(), REORDERING_UAC, str(UAC))
    uas_text = UAS.read_text()
    if sippy:
        uac_text = substitute(uac_text, SIPPY_UAC, str(UAC))
        uas_text = substitute(uas_text, SIPPY_UAS, str(UAS))
    prefix = "sippy_" if sippy else ""
    uac, uas = work / f"{prefix}uac.xml", work / f"{prefix}uas.xml"
    uac.write_text(uac_text)
    uas.write_text(uas_text)
    return uac, uas


def latency_scenario(work: Path) -> Path:
    """The comparison's UAC timing INVITE -> 180 (SIPp's RTD 1) instead of INVITE -> 200; the
    180 is required, so a call whose 180 is lost fails rather than drops out of the figures."""
    text = substitute(substitute(UAC.read_text(), REORDERING_UAC, str(UAC)), {
        'start_txn="invite"': 'start_txn="invite" start_rtd="1"',
        '<recv response="180" optional="true" response_txn="invite"/>':
            '<recv response="180" rtd="1" response_txn="invite"/>',
        '<recv response="200" rtd="true" rrs="true" response_txn="invite"/>':
            '<recv response="200" rrs="true" response_txn="invite"/>',
    }, str(UAC))
    (work / "latency_uac.xml").write_text(text)
    return work / "latency_uac.xml"


# -- one run -------------------------------------------------------------------------------
@dataclass
class Run:
    name: str
    rate: int
    calls: int
    uac: dict[str, int] = field(default_factory=dict)
    uas: dict[str, int] = field(default_factory=dict)
    cpu: float | None = None
    wall: float = 0.0
    skipped: str = ""
    errors: list[str] = field(default_factory=list)
    setup_ms: list[float] = field(default_factory=list)  # INVITE -> 180, kernel stamps
    sipp_rtd_ms: list[float] = field(default_factory=list)  # the same, as SIPp counts it
    no_ringing: int = 0  # INVITEs seen without a 180 seen
    pid: int | None = None
    cpu_before: float = 0.0
    ended: float = 0.0  # time.monotonic() when the UAC was done
    cpu_settled: float | None = None  # cpu, plus what the element did in the SETTLE_S after
    idle_rate: float = 0.0  # the element's CPU seconds per second before any call
    waited: float | None = None  # seconds runnable but without a CPU, during the calls
    drops: int = 0  # datagrams the kernel dropped at the element's port (buffer full)

    @property
    def attempted(self) -> int:
        return self.uac.get("Outgoing calls created", 0)

    @property
    def successful(self) -> int:
        return self.uac.get("Successful call", 0)

    @property
    def failed(self) -> int:
        # Calls SIPp never started (killed early) count as failed too.
        return self.uac.get("Failed call", 0) + max(0, self.calls - self.attempted)

    @property
    def per_cpu_second(self) -> float | None:
        cpu = self.cpu if self.cpu_settled is None else self.cpu_settled
        if cpu is None or cpu <= 0 or self.successful == 0:
            return None
        return self.successful / cpu


def run_calls(name: str, start: Start, work: Path, element: contextlib.ExitStack, *,
              rate: int, calls: int, uac: Path = UAC, uas: Path = UAS,
              sniff: bool = False, idle_s: float = 0.0) -> Run:
    """`calls` calls at `rate` through the element `start` makes, which is left running on
    `element` (the caller's to close: it may let the element settle first). `idle_s`: how
    long to watch the element's idle CPU first."""
    run = Run(name, rate, calls)
    where = work / name
    where.mkdir()
    bound = calls / rate + 30
    uas_port, uac_port = free_port(), free_port()
    # The UAS starts first and waits for the element, so it gets longer.
    uas_cmd = ["sipp", "-sf", str(uas), "-i", "127.0.0.1", "-p", str(uas_port),
               "-m", str(calls), "-nostdin", "-timeout", f"{int(bound + idle_s + 30)}s",
               "-recv_timeout", str(RECV_TIMEOUT_MS), "-trace_err"]
    # Ten seconds of calls may be open at once before SIPp holds back new ones, so a stalling
    # element shows as timeouts and failures, not as a quietly lower offered rate.
    uac_args = ["-s", SERVICE, "-p", str(uac_port), "-m", str(calls), "-r", str(rate),
                "-l", str(rate * 10), "-recv_timeout", str(RECV_TIMEOUT_MS), "-trace_err"]
    if sniff:
        uac_args += ["-trace_rtt", "-rtt_freq", "100"]
    sniffer: SetupSniffer | None = None
    with running(uas_cmd, cwd=where, log=where / "uas.out") as uas_proc:
        wait_udp_bound(uas_port)
        try:
            pid, port = element.enter_context(start(where, uas_port))
        except (RuntimeError, OSError) as exc:
            run.skipped = f"did not start: {exc}"
            return run
        if pid and idle_s:
            idle_from, idle_began = cpu_seconds(pid), time.monotonic()
            time.sleep(idle_s)
            run.idle_rate = (cpu_seconds(pid) - idle_from) / (time.monotonic() - idle_began)
        with contextlib.ExitStack() as sniffing:
            if sniff:
                sniffer = sniffing.enter_context(SetupSniffer(uac_port))
            run.pid, run.cpu_before = pid, cpu_seconds(pid) if pid else 0.0
            waited = runnable_wait_seconds(pid) if pid else 0.0
            dropped = udp_drops(port)
            began = time.monotonic()
            out = sipp(f"127.0.0.1:{port}", uac, uac_args, timeout=bound, cwd=where)
            run.ended = time.monotonic()
            run.wall = run.ended - began
            run.cpu = cpu_seconds(pid) - run.cpu_before if pid else None
            run.waited = runnable_wait_seconds(pid) - waited if pid else None
            run.drops = udp_drops(port) - dropped
        # The UAS ends by itself once its last call's timewait is over.
        with contextlib.suppress(subprocess.TimeoutExpired):
            uas_proc.wait(timeout=UAS_TIMEWAIT_S + 10)
    (where / "uac.out").write_text(out)
    run.uac = sipp_counts(out)
    run.uas = sipp_counts((where / "uas.out").read_text(errors="replace"))
    run.errors = sipp_errors(where)
    if "sipp killed" in out:
        run.errors.insert(0, out.rsplit("\n", 2)[-2])
    if sniffer is not None:
        run.setup_ms = sniffer.setup_ms()
        run.no_ringing = len(sniffer.invite) - len(run.setup_ms)
        run.sipp_rtd_ms = sipp_rtd(where)
    return run


def settle(run: Run) -> None:
    """The element's CPU from the start of the calls until SETTLE_S after the last, less what
    it spends idle in that wait: a call's cost includes the clean-up its transactions
    schedule for later (Timer J/K), but not the idle loop of an element that polls."""
    if run.pid is None or run.cpu is None:
        return
    time.sleep(max(0.0, run.ended + SETTLE_S - time.monotonic()))
    waited = time.monotonic() - run.ended
    total = cpu_seconds(run.pid) - run.cpu_before
    # Less than during the calls: the element exited meanwhile and took its counts with it.
    if total >= run.cpu:
        run.cpu_settled = run.cpu + max(0.0, total - run.cpu - run.idle_rate * waited)


SIPP_EVENT = re.compile(r"\d{4}-\d\d-\d\d\t[\d:.]+\t[\d.]+: ")  # each -trace_err entry
CALL_ID_VALUE = re.compile(r"(Call-Id:? '?|Dead call '?)[^' ,]+")  # so that kinds add up


def sipp_errors(where: Path, limit: int = 4) -> list[str]:
    """What SIPp's -trace_err logs say went wrong, by kind, most frequent first: the message
    a call was waiting for and what came instead."""
    kinds: Counter[str] = Counter()
    for log in sorted(where.glob("*_errors.log")):
        who = "UAS" if "uas" in log.name else "UAC"
        for event in SIPP_EVENT.split(log.read_text(errors="replace"))[1:]:
            first = CALL_ID_VALUE.sub(r"\1...", event.strip().splitlines()[0] if event else "")
            kinds[f"SIPp {who}: {first[:150]}"] += 1
    return [f"{n:6d} x {kind}" for kind, n in kinds.most_common(limit)]


def sipp_rtd(where: Path) -> list[float]:
    values: list[float] = []
    for csv in where.glob("*_rtt.csv"):
        for line in csv.read_text().splitlines()[1:]:
            cells = line.split(";")
            if len(cells) >= 3 and cells[2].strip() == "1":
                values.append(float(cells[1]))
    return values


def tail(path: Path, lines: int = 5) -> str:
    if not path.exists():
        return f"{path.name}: empty"
    text = path.read_text(errors="replace").strip().splitlines()[-lines:]
    return f"{path.name}: " + " | ".join(text) if text else f"{path.name}: empty"


def log_events(path: Path) -> list[str]:
    """lyncgate's warnings and errors by event, most frequent first, with one example each."""
    seen: Counter[tuple[str, str]] = Counter()
    example: dict[tuple[str, str], str] = {}
    if not path.exists():
        return []
    for line in path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            key = ("stderr", line[:60])
        else:
            key = (str(entry.get("level", "?")), str(entry.get("event", "?")))
        seen[key] += 1
        example.setdefault(key, line[:300])
    return [f"{n:6d} x {level} {event}: {example[level, event]}"
            for (level, event), n in seen.most_common(8)]


# -- INVITE -> 180 from kernel timestamps ----------------------------------------------------
ETH_P_IP = 0x0800
SO_ATTACH_FILTER, SO_RCVBUFFORCE, SO_TIMESTAMPNS = 26, 33, 35  # Linux, asm-generic
CALL_ID = re.compile(rb"\r\n(?:call-id|i)[ \t]*:[ \t]*([^\r\n]+)", re.IGNORECASE)


def setup_filter(port: int) -> list[tuple[int, int, int, int]]:
    """Classic BPF over Ethernet-framed IPv4 on lo: unfragmented UDP from or to `port` whose
    payload starts "INVI" or "SIP/2.0 180 ". Everything else stays in the kernel, so the
    sniffer costs next to nothing beside the elements being measured."""
    return [  # (code, jt, jf, k); jumps count instructions skipped; 15 is "drop"
        (0x30, 0, 0, 23),                # ldb [23]          IP protocol
        (0x15, 0, 13, 17),               # jeq #17 (UDP)     else drop
        (0x28, 0, 0, 20),                # ldh [20]          flags, fragment offset
        (0x45, 11, 0, 0x1FFF),           # jset #0x1fff      fragment: drop
        (0xB1, 0, 0, 14),                # ldxb 4*([14]&0xf) IP header length
        (0x48, 0, 0, 14),                # ldh [x+14]        UDP source port
        (0x15, 2, 0, port),              # jeq #port         -> payload check
        (0x48, 0, 0, 16),                # ldh [x+16]        UDP destination port
        (0x15, 0, 6, port),              # jeq #port         else drop
        (0x40, 0, 0, 22),                # ld [x+22]         payload[0:4]
        (0x15, 3, 0, word("INVI")),      # jeq "INVI"        -> accept
        (0x15, 0, 3, word("SIP/")),      # jeq "SIP/"        else drop
        (0x40, 0, 0, 30),                # ld [x+30]         payload[8:12]
        (0x15, 0, 1, word("180 ")),      # jeq "180 "        else drop
        (0x06, 0, 0, 0xFFFF),            # ret #65535        accept
        (0x06, 0, 0, 0),                 # ret #0            drop
    ]


def word(text: str) -> int:
    """Four payload bytes as BPF's `ld` reads them (network order)."""
    return int.from_bytes(text.encode(), "big")


class SetupSniffer:
    """Kernel receive times on lo of each call's first INVITE from udp/`port` (the UAC) and
    first 180 to it. Both are stamped by the same clock as the packets cross lo, so SIPp's
    own scheduling and its millisecond clock stay out of the figure."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.invite: dict[bytes, float] = {}
        self.ringing: dict[bytes, float] = {}
        # Protocol 0 receives nothing until bind(), so no unfiltered packet queues up first.
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        program = b"".join(struct.pack("HBBI", *op) for op in setup_filter(port))
        buffer = ctypes.create_string_buffer(program)
        fprog = struct.pack("HL", len(program) // 8, ctypes.addressof(buffer))
        self._sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
        self._sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self._sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)
        self._sock.bind(("lo", ETH_P_IP))
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)

    @staticmethod
    def allowed() -> bool:
        try:
            socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close()
        except PermissionError:
            return False
        return True

    def __enter__(self) -> SetupSniffer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        time.sleep(0.2)  # what crossed lo just before the UAC exited
        self._stop.set()
        self._thread.join()
        self._sock.close()

    def _read(self) -> None:
        space = socket.CMSG_SPACE(16)
        while not self._stop.is_set():
            try:
                frame, ancillary, _, _ = self._sock.recvmsg(4096, space)
            except TimeoutError:
                continue
            stamp = next((struct.unpack("qq", data[:16]) for level, kind, data in ancillary
                          if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS), None)
            if stamp is not None:
                self._packet(frame[14:], stamp[0] + stamp[1] / 1e9)

    def _packet(self, ip: bytes, when: float) -> None:
        udp = ip[(ip[0] & 0x0F) * 4:]
        source, destination = struct.unpack("!HH", udp[:4])
        payload = udp[8:]
        found = CALL_ID.search(payload)
        if found is None:
            return
        call_id = found.group(1).strip()
        if source == self.port and payload.startswith(b"INVITE "):
            self.invite.setdefault(call_id, when)
        elif destination == self.port and payload.startswith(b"SIP/2.0 180 "):
            self.ringing.setdefault(call_id, when)

    def setup_ms(self) -> list[float]:
        return [(self.ringing[c] - t) * 1000 for c, t in self.invite.items() if c in self.ringing]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


# -- printing -------------------------------------------------------------------------------
WIDTHS = {"element": 9, "attempted": 9, "successful": 10, "failed": 6, "B-failed": 8,
          "retrans": 7, "drops": 5, "cpu-calls": 9, "+after": 7, "core": 5, "waited": 6,
          "calls/CPU-s": 11}
HEADER = "  " + " ".join(name.rjust(w) if name != "element" else name.ljust(w)
                         for name, w in WIDTHS.items())
COUNTS = ("  B-failed: calls the UAS failed; retrans: the UAC's retransmissions; drops: datagrams "
          "the kernel dropped at the element's port, its receive buffer full")
CPU_SETTLED = ("  cpu-calls: the element's CPU seconds during the calls; +after: with its clean-up "
               f"in the {SETTLE_S} s after them, less its idle CPU; calls/CPU-s divides by that")
CPU_CALLS = ("  cpu-calls: the element's CPU seconds during the calls, which calls/CPU-s "
             "divides by")
SHARE = ("  core: CPU during the calls / their wall time; waited: seconds the element was "
         "runnable but had no CPU (other load on the machine)")
IDLE_S = 5.0


def print_counts(run: Run) -> None:
    if run.skipped:
        print(f"  {run.name:9s} skipped: {run.skipped}")
        return
    per_cpu = run.per_cpu_second
    cells = [
        run.attempted, run.successful, run.failed, run.uas.get("Failed call", 0),
        run.uac["retransmissions"], run.drops,
        "-" if run.cpu is None else f"{run.cpu:.2f}",
        "-" if run.cpu_settled is None else f"{run.cpu_settled:.2f}",
        "-" if run.cpu is None else f"{100 * run.cpu / run.wall:.0f}%",
        "-" if run.waited is None else f"{run.waited:.2f}",
        "n/a" if per_cpu is None else f"{per_cpu:.0f}",
    ]
    widths = list(WIDTHS.values())
    print(f"  {run.name:{widths[0]}s} "
          + " ".join(str(cell).rjust(w) for cell, w in zip(cells, widths[1:], strict=True)))


def print_problems(run: Run, work: Path) -> None:
    if run.skipped or (run.failed == 0 and run.uas.get("Failed call", 0) == 0):
        return
    print(f"  {run.name} failures:")
    for line in run.errors:
        print(f"    {line}")
    if run.name.startswith("lyncgate"):
        for line in log_events(work / run.name / "lyncgate.log"):
            print(f"    log {line}")


def ratio(ours: Run, theirs: Run, goal: float) -> str:
    a, b = ours.per_cpu_second, theirs.per_cpu_second
    if a is None or b is None:
        why = theirs.skipped or ours.skipped or "no successful calls to divide"
        return f"n/a: {theirs.name} {why} (goal >= {goal:g}x)"
    verdict = "met" if a / b >= goal else "MISSED"
    return f"{a / b:.2f}x (goal >= {goal:g}x: {verdict})"


# -- the modes ------------------------------------------------------------------------------
def compare(work: Path, rate: int, duration: int) -> None:
    calls = rate * duration
    elements: list[tuple[str, Start, Path, Path]] = [
        ("lyncgate", lyncgate_element, *scenarios(work)),
        ("lyncgate-sig", functools.partial(lyncgate_element, anchor=False), *scenarios(work)),
        ("kamailio", kamailio_element, *scenarios(work))]
    if importlib.util.find_spec("sippy") is not None:
        elements.append(("sippy", sippy_element, *scenarios(work, sippy=True)))
    runs: list[Run] = []
    with contextlib.ExitStack() as keep:
        # Each element settles (SETTLE_S, for its deferred clean-up) while the next one takes
        # its calls: its own CPU is what is read, and the clean-up is a few % of a core.
        pending: list[tuple[Run, contextlib.ExitStack]] = []
        for name, start, uac, uas in elements:
            element = keep.enter_context(contextlib.ExitStack())
            run = run_calls(name, start, work, element, rate=rate, calls=calls, uac=uac,
                            uas=uas, idle_s=IDLE_S)
            pending.append((run, element))
            runs.append(run)
        for run, element in pending:
            settle(run)
            element.close()
    if len(runs) < 4:
        runs.append(Run("sippy", rate, calls,
                        skipped="not installed (.venv/bin/pip install sippy)"))
    lync, lync_sig, kam, sippy = runs
    print(f"Calls through each element over UDP: {calls} calls at {rate}/s, "
          "INVITE/180/200/ACK/BYE on each leg (uac_rr.xml -> element -> uas_rr.xml)")
    print(f"  {LYNCGATE_NOTE}")
    print(f"  {LYNCGATE_SIG_NOTE}")
    print("  kamailio: the lab's kamailio-relay.cfg (tm, record_route, t_relay) on our ports")
    print("  sippy: b2bua_simple, SIPLOG_LVL=WARN, two Contact quirks worked around in its "
          "copy of the scenarios (SIPPY_UAC, SIPPY_UAS: the same messages)")
    print("  all: a 100 or 180 after the 200 is ignored, not failed (REORDERING_UAC)")
    print("\n".join((COUNTS, CPU_SETTLED, SHARE)))
    print("  idle CPU before the calls: " + ", ".join(
        f"{run.name} {100 * run.idle_rate:.1f}%" for run in runs if not run.skipped)
        + " of a core")
    print(HEADER)
    for run in runs:
        print_counts(run)
    for name, ours in (("lyncgate", lync), ("lyncgate-sig", lync_sig)):
        print(f"  ratio {name}/kamailio calls per CPU-s: {ratio(ours, kam, 0.5)}")
        print(f"  ratio {name}/sippy    calls per CPU-s: {ratio(ours, sippy, 4)}")
    for run in runs:
        print_problems(run, work)


def soak(work: Path, rate: int, duration: int) -> None:
    calls = rate * duration
    with contextlib.ExitStack() as element:
        run = run_calls("lyncgate", lyncgate_element, work, element, rate=rate, calls=calls)
    print(f"Soak: {calls} calls at {rate}/s for {duration} s through lyncgate over UDP")
    print(f"  {LYNCGATE_NOTE}")
    print("\n".join((COUNTS, CPU_CALLS, SHARE)))
    print(HEADER)
    print_counts(run)
    if not run.skipped:
        started = run.attempted / run.wall if run.wall else 0.0
        uas_failed = run.uas.get("Failed call", 0)
        verdict = "met" if run.failed == 0 and uas_failed == 0 else "MISSED"
        print(f"  the UAC ran {run.wall:.1f} s: {started:.0f} calls/s started on average, "
              f"{run.uac['timeouts']} receive timeouts, {run.uac['retransmissions']} "
              "retransmissions")
        print(f"  failed calls: {run.failed} at the UAC, {uas_failed} at the UAS "
              f"(goal 0: {verdict})")
    print_problems(run, work)


def latency(work: Path, rate: int, duration: int) -> None:
    calls = rate * duration
    scenario = latency_scenario(work)
    stamps = "kernel receive stamps on lo (AF_PACKET)" if SetupSniffer.allowed() else ""
    if not stamps:
        print("latency: an AF_PACKET socket needs root; only SIPp's whole-millisecond RTD "
              "is available", file=sys.stderr)
    runs: list[Run] = []
    for name, start in (("direct", no_element), ("lyncgate", lyncgate_element),
                        ("lyncgate-sig", functools.partial(lyncgate_element, anchor=False)),
                        ("kamailio", kamailio_element)):
        with contextlib.ExitStack() as element:
            runs.append(run_calls(name, start, work, element, rate=rate, calls=calls,
                                  uac=scenario, sniff=bool(stamps)))
    print(f"Call setup, INVITE -> 180 at the UAC: {calls} calls at {rate}/s each, UAC -> UAS "
          f"direct and through each element; {stamps or 'SIPp RTD only'}, SIPp's own RTD "
          "(whole ms) beside it")
    print(f"  {LYNCGATE_NOTE}")
    print(f"  {LYNCGATE_SIG_NOTE}")
    print("  (waited: seconds the element was runnable but had no CPU, other load on the "
          "machine, which lengthens setup times; drops: datagrams the kernel dropped at its "
          "port, its receive buffer full)")
    print("  path      samples failed  p50 ms  p90 ms  p99 ms  max ms | SIPp p50 p99 ms | "
          "waited drops")
    for run in runs:
        if run.skipped:
            print(f"  {run.name:9s} skipped: {run.skipped}")
            continue
        got = run.setup_ms or run.sipp_rtd_ms
        figures = ("  ".join(f"{percentile(got, p):6.2f}" for p in (50, 90, 99))
                   + f"  {max(got):6.2f}") if got else "no samples"
        rtd = run.sipp_rtd_ms
        sipp_side = (f"{percentile(rtd, 50):4.0f} {percentile(rtd, 99):4.0f}" if rtd
                     else "   -    -")
        waited = "     -" if run.waited is None else f"{run.waited:6.2f}"
        print(f"  {run.name:9s} {len(got):7d} {run.failed:6d}  {figures} |     {sipp_side} | "
              f"{waited} {run.drops:5d}"
              + (f"  ({run.no_ringing} INVITEs without a 180 seen)" if run.no_ringing else ""))
    direct = runs[0].setup_ms or runs[0].sipp_rtd_ms
    for run, goal in ((runs[1], 5.0), (runs[2], 5.0), (runs[3], None)):
        got = run.setup_ms or run.sipp_rtd_ms
        if not got or not direct:
            print(f"  added by {run.name}: n/a (no samples)")
            continue
        added = percentile(got, 99) - percentile(direct, 99)
        median = percentile(got, 50) - percentile(direct, 50)
        target = "" if goal is None else (
            f" (goal < {goal:g} ms: {'met' if added < goal else 'MISSED'})")
        print(f"  added by {run.name}: p99 {added:+.2f} ms{target}, p50 {median:+.2f} ms")
    for run in runs:
        print_problems(run, work)


def overload(work: Path, rate: int, duration: int) -> None:
    """bench/overload.py (it builds on this module's runs)."""
    from overload import overload as run_overload

    run_overload(work, rate, duration)


# (measure, default rate, default duration); overload's rate 0: measure the sustained rate
MODES = {"compare": (compare, 100, 30), "soak": (soak, 300, 60), "latency": (latency, 200, 20),
         "overload": (overload, 0, 20)}


def _interrupted(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", nargs="?", choices=list(MODES), default="compare")
    parser.add_argument("--rate", type=int, help="calls per second (compare 100, soak 300, "
                        "overload: the sustained rate, measured when not given; "
                        "latency 200)")
    parser.add_argument("--duration", type=int, help="seconds of calls: SIPp -m = rate x "
                        "duration (compare 30, soak 60, latency 20)")
    parser.add_argument("--keep", action="store_true", help="keep logs and SIPp traces")
    args = parser.parse_args()
    for binary in ("sipp", "kamailio"):
        if not shutil.which(binary):
            print(f"missing {binary}: run scripts/install --test", file=sys.stderr)
            return 2
    if not LAB_KAMAILIO.exists():
        print(f"missing {LAB_KAMAILIO} (the lab's Kamailio relay)", file=sys.stderr)
        return 2
    measure, default_rate, default_duration = MODES[args.mode]
    rate, duration = args.rate or default_rate, args.duration or default_duration
    # SIGTERM unwinds like Ctrl-C, so every context manager stops what it started.
    signal.signal(signal.SIGTERM, _interrupted)
    work = Path(tempfile.mkdtemp(prefix="bench-calls-"))
    # Not ours to stop, but it explains noisy figures.
    print(f"load average before the run: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    try:
        measure(work, rate, duration)
    except KeyboardInterrupt:
        print("interrupted: every process started was stopped", file=sys.stderr)
        return 130
    finally:
        if args.keep:
            print(f"logs and traces kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
