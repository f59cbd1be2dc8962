"""Presence in process: Lync's SUBSCRIBEs (the [MS-PRES] 4.11 form: MS categories asked for,
`ms-piggyback-first-notify`, over the pool's TLS connection) fed to a real Node whose
transport is a list, so what is measured is the node's own work: parse, transaction, the
presence decision and document, the 200 that carries it. No socket, no other process.

Two figures, with the issue's goals (issue 19):

- SUBSCRIBEs answered (200 with the document) per CPU-second of the whole process,
  goal >= 5,000;
- memory per held subscription with `--subscriptions` of them held (Python allocations,
  tracemalloc, once the transactions that set them up have gone), goal <= 2 kB: gross
  (the SIP core's bounded parse caches filling included) and marginal (one more on top).

    .venv/bin/python bench/presence.py [--subscriptions 10000] [--contacts 200]
                                     [--daemon [--rate 2000]]

`--daemon` runs the same through `lyncgate run` over loopback UDP instead (the daemon's
CPU from /proc, its resident memory before and after, once the transactions' Timer J has
let them go): what the process costs with its socket I/O and event loop, and an RSS figure
that also counts the allocator's slack.

Contacts cycle through `--contacts` aliases, half of them routed (Available) and half not
(Offline), as a contact list of rooms with a few typos would; each SUBSCRIBE is a new
subscription (its own Call-ID), which is the costly case: a refresh parses the same and
skips the table insert.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import socket
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path, where bench/routing.py would
# shadow the `routing` package: the project comes before it.
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from common import cpu_seconds, free_port, lyncgate, wait_udp_answer  # noqa: E402

from gateway import logs  # noqa: E402
from gateway.config.load import parse_text  # noqa: E402
from gateway.daemon.command import tune_gc  # noqa: E402
from gateway.daemon.node import Node  # noqa: E402
from gateway.transport.peer import Peer, Transport  # noqa: E402

NODE_PORT = 5999
POOL = Peer(Transport.TLS, "127.0.0.1", 61000, connection=1)
CONFIG = """
[node]
name = "bench"
sip_tls_fqdn = "gw.example.com"
address = "127.0.0.1"
state_dir = "@STATE@"

[listen]
udp = 0
tcp = 0
tls = 0

[avatar]
port = 0
url = "http://gw.example.com"

[presence]
max_subscriptions = 1000000
max_subscriptions_per_source = 1000000

[[services]]
type = "vmr"
name = "Board room"
description = "The fourth-floor board room"
aliases = ["meet.board@vc.example.com"]
target = "sip:mcu@127.0.0.1:9"

[[routing_rules]]
name = "rooms"
description = "Video rooms by city"
priority = 10
protocols = ["sip", "mssip"]
match = '[a-z]+-room\\d\\d\\d@vc\\.example\\.com'
"""


def subscribe(n: int, contacts: int, via: str = "TLS 127.0.0.1:61000") -> bytes:
    k = n % contacts
    contact = f"city-room{k:03d}" if k % 2 == 0 else f"city-rooom{k:03d}"  # a typo: Offline
    return (f"SUBSCRIBE sip:{contact}@vc.example.com SIP/2.0\r\n"
            f"Via: SIP/2.0/{via};branch=z9hG4bK-{n}-bench;ms-received-port=61000"
            ";ms-received-cid=1DCEE00\r\n"
            "Max-Forwards: 70\r\n"
            f'From: "Alice" <sip:alice{n % 500}@example.com>;tag=38209ebf3e{n};epid=d6277c8671\r\n'
            f"To: <sip:{contact}@vc.example.com>\r\n"
            f"Call-ID: {n}-23ffb7f278764277871ff5b4ba90ae11\r\n"
            "CSeq: 1 SUBSCRIBE\r\n"
            f"Contact: <sip:alice{n % 500}@example.com;opaque=user:epid:fvceImg6cFWG7W6lvUt_-AAA"
            ";gruu>\r\n"
            "User-Agent: UCCAPI/16.0.4849.1000 OC/16.0.4849.1000 (Skype for Business)\r\n"
            "Event: presence\r\n"
            "Accept: application/msrtc-event-categories+xml, text/xml+msrtc.pidf, "
            "application/pidf+xml\r\n"
            "Supported: ms-benotify\r\nProxy-Require: ms-benotify\r\n"
            "Supported: ms-piggyback-first-notify\r\n"
            "Expires: 3600\r\nContent-Length: 0\r\n\r\n").encode()


class ListTransport:
    def __init__(self) -> None:
        self.sent = 0
        self.answered = 0

    def send(self, data: bytes, peer: Peer) -> None:
        self.sent += 1
        # the 200 with the document piggy-backed: its Content-Type says so
        if data.startswith(b"SIP/2.0 200") and b"msrtc-event-categories" in data:
            self.answered += 1

    async def close(self) -> None:
        pass


async def run(count: int, contacts: int) -> None:
    logs.configure(json=True, level="warning")
    with tempfile.TemporaryDirectory() as state:
        node = Node(parse_text(CONFIG.replace("@STATE@", state), "bench.toml", base_dir=None))
        node.local.ports[Transport.TLS] = NODE_PORT
        wire = ListTransport()
        node.transport = wire  # type: ignore[assignment]
        tune_gc()
        requests = [subscribe(n, contacts) for n in range(count)]
        on_message = node._on_message  # what the transport calls with each message

        # -- throughput ---------------------------------------------------------------
        began = time.process_time()
        for data in requests:
            on_message(data, POOL, None)
        spent = time.process_time() - began
        held = len(node.presence.table)
        assert wire.answered == count, (wire.answered, count)

        # -- memory per held subscription ------------------------------------------------
        # A second node, so the first run's objects do not count; the transactions are
        # cleared (their timers run out) before measuring what the subscriptions hold.
        # The SIP core's parse caches (8,192 URIs and addresses each) fill with the first
        # few thousand distinct subscribers and then stop growing: `gross` counts them,
        # `marginal` (a second batch on top of the first) is what one more costs.
        node2 = Node(parse_text(CONFIG.replace("@STATE@", state), "bench.toml",
                                base_dir=None))
        node2.local.ports[Transport.TLS] = NODE_PORT
        node2.transport = ListTransport()  # type: ignore[assignment]
        del node, requests
        first = [subscribe(count + n, contacts) for n in range(count)]
        second = [subscribe(2 * count + n, contacts) for n in range(count)]
        tracemalloc.start()
        marks = [_traced()]
        for batch in (first, second):
            for data in batch:
                node2.endpoint.receive(data, POOL, None, 0.0)
            node2.endpoint.handle_timeout(64.0)  # every transaction's clean-up is past
            assert len(node2.endpoint.transactions) == 0, len(node2.endpoint.transactions)
            marks.append(_traced())
        tracemalloc.stop()
        assert len(node2.presence.table) == 2 * count
        gross, marginal = (marks[1] - marks[0]) / count, (marks[2] - marks[1]) / count
        await node2.close()
    print(f"{count} Lync SUBSCRIBEs (piggy-backed categories document), {contacts} contacts "
          f"half Available, {held} held")
    print(f"  {count / spent:,.0f} SUBSCRIBE + 200 per CPU-second "
          f"({1e6 * spent / count:.0f} us each; goal >= 5,000/s)")
    print(f"  memory per held subscription: {gross:,.0f} bytes with {count:,} held, parse "
          f"caches included; {marginal:,.0f} bytes each for {count:,} more (goal <= 2,048)")


def daemon(count: int, contacts: int, rate: int) -> None:
    """The same SUBSCRIBEs to `lyncgate run` over loopback UDP at `rate` per second (the
    node's overload control sheds a burst beyond what its loop can take: a shed one, 503,
    is sent again a moment later and its 503 counted), twice: resident memory does not
    shrink when the first batch's transactions go (the allocator keeps the pages), so the
    second batch, reusing them, says what one more held subscription costs."""
    port = free_port()
    config = CONFIG.replace("udp = 0", f"udp = {port}")
    with lyncgate(config, args=("--log-format", "json", "--log-level", "warning")) as proc, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        wait_udp_answer(port, timeout=30)
        s.bind(("127.0.0.1", 0))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        s.setblocking(False)
        via = f"UDP 127.0.0.1:{s.getsockname()[1]}"
        rss = [_rss(proc.pid)]
        figures = []
        for first in (0, count):
            requests = {n: subscribe(n, contacts, via) for n in range(first, first + count)}
            cpu_before = cpu_seconds(proc.pid)
            shed = _send_paced(s, port, requests, rate)
            figures.append((count / (cpu_seconds(proc.pid) - cpu_before), shed))
            time.sleep(33)  # Timer J (64 * T1) lets the UDP server transactions go
            rss.append(_rss(proc.pid))
    print(f"{count:,} Lync SUBSCRIBEs to lyncgate run over loopback UDP at {rate}/s, twice")
    for i, (per_second, shed) in enumerate(figures, 1):
        print(f"  batch {i}: {per_second:,.0f} SUBSCRIBE + 200 per CPU-second of the daemon "
              f"({1e6 / per_second:.0f} us each; goal >= 5,000/s), {shed} shed 503 and sent "
              "again")
    print(f"  resident memory per held subscription: {(rss[1] - rss[0]) / count:,.0f} bytes "
          f"for the first {count:,} (the transactions' peak included), "
          f"{(rss[2] - rss[1]) / count:,.0f} for {count:,} more (goal <= 2,048)")


def _send_paced(s: socket.socket, port: int, requests: dict[int, bytes], rate: int) -> int:
    """Send `requests` at `rate` per second until each has its 200, as a UDP client does:
    one shed (503) or unanswered for half a second (lost to a full socket buffer) is sent
    again. Returns how many 503s overload control answered."""
    order = list(requests)
    waiting = dict.fromkeys(order, 0.0)  # number -> when last sent
    began = time.monotonic()
    deadline = began + 10 + 3 * len(order) / rate
    sent = shed = 0
    while waiting:
        now = time.monotonic()
        if now > deadline:
            raise RuntimeError(f"{len(waiting)} of {len(order)} still unanswered")
        due = min(len(order), int((now - began) * rate) + 1)
        while sent < due:
            s.sendto(requests[order[sent]], ("127.0.0.1", port))
            waiting[order[sent]] = now
            sent += 1
        for number, at in list(waiting.items())[:sent]:
            if at and now - at > 0.5:
                s.sendto(requests[number], ("127.0.0.1", port))
                waiting[number] = now
        time.sleep(0.002)
        while True:
            try:
                data = s.recv(65535)
            except BlockingIOError:
                break
            number = int(data.split(b"Call-ID: ", 1)[1].split(b"-", 1)[0])
            if data.startswith(b"SIP/2.0 200") and b"msrtc-event-categories" in data:
                waiting.pop(number, None)
            elif data.startswith(b"SIP/2.0 503") and number in waiting:
                shed += 1
                waiting[number] = time.monotonic() - 0.45  # again in 50 ms
    return shed


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def _traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscriptions", type=int, default=10_000)
    parser.add_argument("--contacts", type=int, default=200)
    parser.add_argument("--daemon", action="store_true",
                        help="through `lyncgate run` over loopback UDP")
    parser.add_argument("--rate", type=int, default=2000,
                        help="--daemon: SUBSCRIBEs sent per second")
    args = parser.parse_args()
    if args.daemon:
        daemon(args.subscriptions, args.contacts, args.rate)
    else:
        asyncio.run(run(args.subscriptions, args.contacts))


if __name__ == "__main__":
    main()
