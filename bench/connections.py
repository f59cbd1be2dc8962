"""Idle connections: what lyncgate spends holding them, and that it lets go of dead ones.

A Lync pool keeps a mutual-TLS connection per front end and every client of a registrar
keeps one open for hours, so a node holds thousands of connections that carry almost nothing.
Three phases, each on a fresh daemon on 127.0.0.1 (a fresh one, so that one phase's freed
memory is not what the next reuses):

  tls   --count mutual-TLS connections (a throwaway CA from trustme: the node's certificate,
        a few client certificates as a pool's front ends and its clients would present;
        the node's [tls] with trusted_ca and verify_mode = "on"), each sending one CRLF
        keep-alive and reading the pong, then silent. The clients verify the node, so
        OpenSSL sends their certificate with the CA's (taken from their trust store): the
        node holds a two-certificate chain per connection, as it would a Lync certificate
        and its issuing CA; OpenSSL keeps that chain, decoded, for the connection's life
        (~6 kB of the figure).
        Figures: memory per connection (the daemon's RSS delta / connections; goal
        <= 30 kB, Kamailio's tls module ~61 kB), time to accept them all and the daemon's
        CPU per handshake.
  tcp   the same over TCP.
  idle  connections that send half a message (a cut head, a body shorter than its
        Content-Length) or nothing (TCP; TLS after the handshake; TLS that never starts its
        handshake), twice, on a daemon whose idle timeout is --idle-timeout s: all must be
        closed by the daemon (after the idle timeout, or the 10 s handshake timeout), and
        RSS after the second round must be where it was after the first (nothing left
        behind; RSS rarely falls back to where it began, since freed heap stays mapped).

Throughout, a separate process sends an OPTIONS over UDP every --probe-ms ms and times the
answer: p50/p99/max per phase (goal p99 < 10 ms) and what went unanswered.

`lyncgate run` caps connections (10,000) and idles them out (30 minutes) by transport
limits that are not in the config file, so the idle phase runs the daemon's own `run`
command with those limits replaced (`LAUNCH` below); the tls and tcp phases run it as is.
Descriptor limits: RLIMIT_NOFILE is raised for this process (root may raise the hard limit)
and inherited by the daemons it starts.

Bounded in count and time; everything started is stopped on the way out. Other benchmarks
share this machine, so take the lock:

    flock /tmp/bench.lock .venv/bin/python bench/connections.py [--count 10000]
        [--phases tls,tcp,idle] [--idle-timeout 10] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import resource
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import trustme
from common import (
    ROOT,
    cpu_seconds,
    free_port,
    options_probe,
    runnable_wait_seconds,
    running,
    wait_udp_answer,
)

NODE_NAME = "gw.example.com"
CLIENT_NAMES = ["fepool.example.com", *(f"client{i}.example.com" for i in range(1, 8))]
CONCURRENT_OPENS = 64  # connections being opened at once (the daemon's listen backlog is 100)
OPENING = [CONCURRENT_OPENS]  # --concurrency
SETTLE_S = 2.0  # after the last connection opens, before RSS is read
HOLD_S = 5.0  # connections held open, OPTIONS probed meanwhile
PING = b"\r\n\r\n"  # RFC 5626 keep-alive, answered with a CRLF

CONFIG = """
[node]
name = "bench"
sip_tls_fqdn = "{fqdn}"
address = "127.0.0.1"
state_dir = "{state}"
[listen]
udp = {udp}
tcp = {tcp}
tls = {tls}
[tls]
certificate = "{cert}"
private_key = "{key}"
trusted_ca = "{ca}"
verify_mode = "on"
[api]
port = {api}
"""

# The daemon's `run` with the transport limits replaced: `_serve` builds `Node(config)`, and
# neither the connection cap nor the idle timeout is read from the config file.
LAUNCH = """
import functools, sys
from gateway.cli import main
from gateway.daemon import command
from gateway.daemon.node import Node
from gateway.transport.layer import Limits
limits = Limits(idle_timeout=float(sys.argv[2]), max_connections=int(sys.argv[3]))
command.Node = functools.partial(Node, limits=limits)
sys.exit(main(["run", "--config", sys.argv[1], "--log-format", "json",
               "--log-level", "info"]))
"""

# Half messages for the idle phase, by kind: what each connection sends, then nothing.
HEAD = (b"OPTIONS sip:ping@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:9;branch=z9hG4bK-h\r\n"
        b"From: <sip:idle@127.0.0.1>;tag=1\r\nTo: <sip:ping@127.0.0.1>\r\nCall-ID: idle\r\n")
HALF = {
    "head cut short": HEAD,
    "body cut short": HEAD + b"CSeq: 1 OPTIONS\r\nContent-Type: text/plain\r\n"
                      b"Content-Length: 100\r\n\r\nhalf a body",
    "nothing": b"",
}


# -- helpers -----------------------------------------------------------------------------
def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def api_status(port: int) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=10) as reply:
        status: dict[str, object] = json.loads(reply.read())
        return status


def connections(api_port: int) -> int:
    count = api_status(api_port)["connections"]
    assert isinstance(count, int)
    return count


def raise_fd_limit(wanted: int) -> int:
    """RLIMIT_NOFILE up to `wanted` for this process and the daemons it starts (children
    inherit it); returns what it got."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(hard, wanted)))
    except (ValueError, OSError):  # not root: up to the hard limit
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass
class Pki:
    """A throwaway CA, the node's certificate and client certificates, as files."""

    directory: Path
    ca: trustme.CA = field(default_factory=trustme.CA)

    def __post_init__(self) -> None:
        node = self.ca.issue_cert(NODE_NAME)
        node.cert_chain_pems[0].write_to_path(str(self.cert))
        node.private_key_pem.write_to_path(str(self.key))
        self.ca.cert_pem.write_to_path(str(self.ca_file))

    @property
    def cert(self) -> Path:
        return self.directory / "node.pem"

    @property
    def key(self) -> Path:
        return self.directory / "node.key"

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.pem"

    def client_contexts(self) -> list[ssl.SSLContext]:
        out = []
        for name in CLIENT_NAMES:
            ctx = ssl.create_default_context()
            self.ca.configure_trust(ctx)
            self.ca.issue_cert(name).configure_cert(ctx)
            out.append(ctx)
        return out


@dataclass
class Node:
    pid: int
    udp: int
    tcp: int
    tls: int
    api: int


@contextlib.contextmanager
def daemon(work: Path, pki: Pki, name: str, *, idle_timeout: float | None = None,
           cap: int = 0) -> Iterator[Node]:
    """`lyncgate run` on a fresh state directory, or with `idle_timeout` the same command
    with the transport limits replaced (see LAUNCH)."""
    state = work / f"state-{name}"
    node = Node(0, free_port(), free_port(socket.SOCK_STREAM), free_port(socket.SOCK_STREAM),
                free_port(socket.SOCK_STREAM))
    config = work / f"{name}.toml"
    config.write_text(CONFIG.format(fqdn=NODE_NAME, state=state, udp=node.udp, tcp=node.tcp,
                                    tls=node.tls, cert=pki.cert, key=pki.key, ca=pki.ca_file,
                                    api=node.api))
    if idle_timeout is None:
        cmd = [sys.executable, "-m", "gateway.cli", "run", "--config", str(config),
               "--log-format", "json", "--log-level", "warning"]
    else:
        cmd = [sys.executable, "-c", LAUNCH, str(config), str(idle_timeout), str(cap)]
    with running(cmd, cwd=ROOT, log=work / f"{name}.log") as proc:
        node.pid = proc.pid
        wait_udp_answer(node.udp, timeout=20)
        deadline = time.monotonic() + 10
        while True:  # the API comes up after the SIP listeners
            try:
                connections(node.api)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield node


# -- the OPTIONS prober, a process of its own --------------------------------------------
def probe_main(port: int, interval: float, out: Path) -> int:
    """Until SIGTERM: an OPTIONS to 127.0.0.1:`port` every `interval` s; writes
    [sent_at, rtt or null] pairs (CLOCK_MONOTONIC, which the parent shares) to `out`."""
    stop = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    samples: list[tuple[float, float | None]] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        probe = options_probe(port, int(s.getsockname()[1]))
        while not stop:
            sent = time.monotonic()
            s.sendto(probe, ("127.0.0.1", port))
            rtt: float | None = None
            s.settimeout(1.0)
            with contextlib.suppress(OSError):
                s.recv(65535)
                rtt = time.monotonic() - sent
            samples.append((sent, rtt))
            time.sleep(max(0.0, interval - (time.monotonic() - sent)))
    out.write_text(json.dumps(samples))
    return 0


@dataclass
class Probes:
    samples: list[tuple[float, float | None]] = field(default_factory=list)
    cpu_wait: float = 0.0  # how long the prober waited, runnable, for a CPU


@contextlib.contextmanager
def prober(work: Path, port: int, interval: float) -> Iterator[Probes]:
    """The prober around a phase; what it yields is filled when the phase ends."""
    out = work / f"probe-{port}.json"
    probes = Probes()
    cmd = [sys.executable, __file__, "--probe", str(port), "--probe-ms", str(interval * 1000),
           "--probe-out", str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT)
    try:
        yield probes
    finally:
        # Its own wait for a CPU is in each round trip it times: on a machine whose cores
        # the daemon and the clients keep busy, that, not the daemon, can be the tail.
        probes.cpu_wait = runnable_wait_seconds(proc.pid)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if out.exists():
            probes.samples.extend((float(a), None if b is None else float(b))
                                  for a, b in json.loads(out.read_text()))


def probe_summary(probes: Probes) -> str:
    samples = probes.samples
    rtts = sorted(r for _, r in samples if r is not None)
    lost = sum(1 for _, r in samples if r is None)
    if not rtts:
        return f"OPTIONS: none answered of {len(samples)}"
    p99 = rtts[min(len(rtts) - 1, int(len(rtts) * 0.99))]
    verdict = "met" if p99 < 0.010 and not lost else "MISSED"
    return (f"OPTIONS over UDP: {len(samples)} probes, p50 {statistics.median(rtts) * 1e3:.2f}"
            f" ms, p99 {p99 * 1e3:.2f} ms, max {rtts[-1] * 1e3:.1f} ms, {lost} unanswered "
            f"(goal p99 < 10 ms: {verdict}); the prober waited {probes.cpu_wait:.2f} s for a "
            "CPU")


# -- the connections -------------------------------------------------------------------------
class Held(asyncio.Protocol):
    """One client connection: counts what arrives, notes when the daemon closes it."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.received = 0
        self.pong = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        if not self.pong.done():
            self.pong.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


@dataclass
class Opened:
    held: list[Held]
    failed: dict[str, int]
    seconds: float


async def open_many(port: int, count: int, contexts: Sequence[ssl.SSLContext | None],
                    first: bytes, *, wait_pong: bool, rate: float = 0.0) -> Opened:
    """`count` connections to 127.0.0.1:`port`, CONCURRENT_OPENS at a time and at most
    `rate` a second (0: as fast as they open), each with a context of `contexts` in turn
    (None: plain TCP), sending `first`."""
    loop = asyncio.get_running_loop()
    limit = asyncio.Semaphore(OPENING[0])
    held: list[Held] = []
    failed: dict[str, int] = {}
    started = time.monotonic()

    async def one(i: int) -> None:
        ctx = contexts[i % len(contexts)]
        if rate:
            await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
        async with limit:
            try:
                _, protocol = await asyncio.wait_for(loop.create_connection(
                    Held, "127.0.0.1", port, ssl=ctx,
                    server_hostname=NODE_NAME if ctx is not None else None), 30)
                if first:
                    assert protocol.transport is not None
                    protocol.transport.write(first)
                if wait_pong:
                    await asyncio.wait_for(protocol.pong, 30)
            except (OSError, TimeoutError, ssl.SSLError) as exc:
                reason = type(exc).__name__
                failed[reason] = failed.get(reason, 0) + 1
                return
            held.append(protocol)

    await asyncio.gather(*(one(i) for i in range(count)))
    return Opened(held, failed, time.monotonic() - started)


async def close_all(held: Sequence[Held]) -> None:
    for h in held:
        if h.transport is not None:
            h.transport.abort()  # a TLS close would wait for each close_notify in turn
    await asyncio.sleep(0)


def wait_connections(api: int, wanted: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while (count := connections(api)) != wanted and time.monotonic() < deadline:
        time.sleep(0.1)
    return count


def hold_phase(work: Path, pki: Pki, kind: str, count: int, probe_interval: float,
               rate: float) -> None:
    contexts: list[ssl.SSLContext | None] = (
        list(pki.client_contexts()) if kind == "tls" else [None])
    with daemon(work, pki, kind) as node, prober(work, node.udp, probe_interval) as probes:
        port = node.tls if kind == "tls" else node.tcp

        async def warm_up() -> None:
            # The code paths and the first allocations of each kind of connection, before
            # the baseline.
            opened = await open_many(port, 20, contexts, PING, wait_pong=True)
            await close_all(opened.held)

        asyncio.run(warm_up())
        wait_connections(node.api, 0, 10)
        time.sleep(1.0)
        rss0, cpu0 = rss_bytes(node.pid), cpu_seconds(node.pid)

        async def hold() -> tuple[Opened, int, float, int]:
            opened = await open_many(port, count, contexts, PING, wait_pong=True, rate=rate)
            cpu_open = cpu_seconds(node.pid) - cpu0
            await asyncio.sleep(SETTLE_S)
            rss_open = rss_bytes(node.pid)
            await asyncio.sleep(HOLD_S)
            alive = sum(1 for h in opened.held if not h.closed.done())
            await close_all(opened.held)
            return opened, rss_open, cpu_open, alive

        opened, rss_open, cpu_open, alive = asyncio.run(hold())
        held_by_node = len(opened.held)
        after_close = wait_connections(node.api, 0, 30)
        time.sleep(1.0)
        rss_closed = rss_bytes(node.pid)
    n = max(1, held_by_node)
    per = (rss_open - rss0) / n
    goal = {"tls": 30_000, "tcp": None}[kind]
    print(f"{kind}: {held_by_node} of {count} connections open "
          f"({opened.failed or 'none failed'}), {alive} still open after {HOLD_S:g} s idle")
    print(f"  accepted in {opened.seconds:.2f} s ({held_by_node / opened.seconds:.0f}/s, "
          f"{OPENING[0]} opening at a time, "
          f"{f'paced at {rate:g}/s' if rate else 'unpaced'}); daemon CPU {cpu_open:.2f} s "
          f"({cpu_open / n * 1e3:.2f} ms per connection)")
    print(f"  daemon RSS {rss0 / 2**20:.1f} MiB -> {rss_open / 2**20:.1f} MiB open: "
          f"{per / 1000:.1f} kB per connection"
          + ("" if goal is None else f" (goal <= {goal / 1000:.0f} kB: "
             f"{'met' if per <= goal else 'MISSED'})")
          + f"; {rss_closed / 2**20:.1f} MiB once closed ({after_close} left)")
    print(f"  {probe_summary(probes)}")


def idle_phase(work: Path, pki: Pki, count: int, idle_timeout: float,
               probe_interval: float) -> None:
    contexts: list[ssl.SSLContext | None] = list(pki.client_contexts())
    kinds = [("tcp", k) for k in HALF] + [("tls", k) for k in HALF] + [("tls", "no handshake")]
    per_kind = max(1, count // len(kinds))
    with daemon(work, pki, "idle", idle_timeout=idle_timeout, cap=count + 1000) as node, \
            prober(work, node.udp, probe_interval) as probes:

        async def one_round() -> tuple[int, int, float, int]:
            batches = []
            for transport, kind in kinds:
                port = node.tls if transport == "tls" else node.tcp
                ctxs = contexts if transport == "tls" and kind != "no handshake" else [None]
                batches.append(await open_many(port, per_kind, ctxs, HALF.get(kind, b""),
                                               wait_pong=False))
            opened_at = time.monotonic()
            held = [h for b in batches for h in b.held]
            await asyncio.sleep(0.5)
            rss_open = rss_bytes(node.pid)
            # The daemon must close every one: after the idle timeout (and the sweep that
            # notices it, every quarter of it), or the handshake timeout (10 s).
            limit = max(idle_timeout * 1.25, 10.0) + 5.0
            done, _ = await asyncio.wait([h.closed for h in held], timeout=limit)
            closed_at = time.monotonic()
            await close_all(held)
            return len(held), len(done), closed_at - opened_at, rss_open

        rss0 = rss_bytes(node.pid)
        rounds = []
        for _ in range(2):
            held, closed, took, rss_open = asyncio.run(one_round())
            wait_connections(node.api, 0, 10)
            time.sleep(1.0)
            rounds.append((held, closed, took, rss_open, rss_bytes(node.pid)))
        left = connections(node.api)
    print(f"idle: {per_kind} connections of each kind "
          f"({', '.join(f'{t} {k}' for t, k in kinds)}), idle timeout {idle_timeout:g} s, "
          "two rounds")
    for i, (held, closed, took, rss_open, rss_after) in enumerate(rounds, 1):
        print(f"  round {i}: {closed} of {held} closed by the daemon within {took:.1f} s; "
              f"RSS {rss_open / 2**20:.1f} MiB open, {rss_after / 2**20:.1f} MiB after")
    growth = rounds[1][4] - rounds[0][4]
    print(f"  RSS before {rss0 / 2**20:.1f} MiB; left behind by round 2: "
          f"{growth / 2**20:+.1f} MiB ({growth / max(1, rounds[1][0]):+.0f} B per connection)"
          f"; connections the daemon still holds: {left}")
    print(f"  {probe_summary(probes)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--phases", default="tls,tcp,idle")
    parser.add_argument("--idle-timeout", type=float, default=10.0)
    parser.add_argument("--probe-ms", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=CONCURRENT_OPENS,
                        help=f"connections being opened at once (default {CONCURRENT_OPENS})")
    parser.add_argument("--open-rate", type=float, default=0.0,
                        help="connections opened per second in the tls and tcp phases "
                        "(default 0: as fast as the daemon accepts them)")
    parser.add_argument("--keep", action="store_true", help="keep the logs (path printed)")
    parser.add_argument("--probe", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--probe-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe is not None:
        return probe_main(args.probe, args.probe_ms / 1000, args.probe_out)
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)  # each phase's figures as they come
    with contextlib.suppress(ImportError):
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    OPENING[0] = args.concurrency
    # Ours: every connection and a margin; the daemon's (inherited): the same.
    got = raise_fd_limit(args.count + 2000)
    if got < args.count + 500:
        print(f"RLIMIT_NOFILE is {got}: too low for {args.count} connections", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="bench-connections-"))
    try:
        pki = Pki(work)
        print(f"{args.count} connections per phase, each phase on a fresh daemon; "
              f"RLIMIT_NOFILE {got}")
        for phase in args.phases.split(","):
            if phase in ("tls", "tcp"):
                hold_phase(work, pki, phase, args.count, args.probe_ms / 1000, args.open_rate)
            elif phase == "idle":
                idle_phase(work, pki, args.count, args.idle_timeout, args.probe_ms / 1000)
            else:
                print(f"unknown phase {phase}", file=sys.stderr)
                return 2
    finally:
        if args.keep:
            print(f"logs kept in {work}")
        else:
            subprocess.run(["rm", "-rf", str(work)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
