"""The call path in process: bench/calls.py's calls replayed through a real Node whose
transport is a list, so what is measured is the node's own work per call (parse, transactions,
dialogs, the B2BUA, CDRs, timers), with no socket, no SIPp and no other process.

The caller's and the callee's messages are SIPp's (tests/scenarios/uac_rr.xml, uas_rr.xml),
built here from what the node sent: INVITE, 180, 200, ACK, BYE, 200 on each leg. Calls go
in batches: `--batch` INVITEs, then their answers, and so on; the time counted is spent in
the node's message handler and in the event loop's turns between steps (the set-up tasks of
anchored calls), never in building the peers' messages.

    .venv/bin/python bench/call_core.py [--calls 3000] [--anchor] [--batch 50] [--gap 0]

`--gap S` sleeps S seconds before each message, as messages arrive spread out in a real run:
the same work then costs several times more CPU (see docs/architecture.md, "What a call
costs, and where"). For figures that move little with the machine's load, count instructions
(hash seed fixed; the node's timers still fire by the wall clock, against which the program
runs some 50 times slower under valgrind, so compare two trees run at the same time):

    PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        .venv/bin/python bench/call_core.py --calls 550   # minus a --calls 50 run, / 500
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path, where bench/routing.py would
# shadow the `routing` package: the project comes before it.
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from calls import LYNCGATE_CFG, SERVICE  # noqa: E402

from gateway import logs  # noqa: E402
from gateway.config.load import parse_text  # noqa: E402
from gateway.daemon.command import tune_gc  # noqa: E402
from gateway.daemon.node import Node  # noqa: E402
from gateway.sip.message import Message, Request, Response  # noqa: E402
from gateway.sip.parse import parse_message  # noqa: E402
from gateway.transport.peer import Peer, Transport  # noqa: E402

NODE_PORT, UAC_PORT, UAS_PORT = 5999, 6001, 6002
UAC, UAS = (Peer(Transport.UDP, "127.0.0.1", UAC_PORT),
            Peer(Transport.UDP, "127.0.0.1", UAS_PORT))
SDP = ("v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
       "t=0 0\r\nm=audio {port} RTP/AVP 9\r\na=rtpmap:9 G722/8000\r\n")


def caller_invite(n: int) -> bytes:
    sdp = SDP.format(port=6000)
    return (f"INVITE sip:{SERVICE}@127.0.0.1:{NODE_PORT} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{UAC_PORT};branch=z9hG4bK-{n}-1-0\r\n"
            f"From: sipp <sip:sipp@127.0.0.1:{UAC_PORT}>;tag={n}SIPpTag00{n}\r\n"
            f"To: {SERVICE} <sip:{SERVICE}@127.0.0.1:{NODE_PORT}>\r\n"
            f"Call-ID: {n}-1@127.0.0.1\r\nCSeq: 1 INVITE\r\n"
            f"Contact: sip:sipp@127.0.0.1:{UAC_PORT};transport=UDP\r\nMax-Forwards: 70\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}"
            ).encode()


def callee_answer(request: Request, status: int, reason: str, tag: str, sdp: str = "") -> bytes:
    """uas_rr.xml's answer: the request's Via, From, To (+ tag), Call-ID, CSeq and
    Record-Route echoed."""
    h = request.headers
    lines = [f"SIP/2.0 {status} {reason}", *(f"Via: {v}" for v in h.lines("Via")),
             f"From: {h.get('From')}", f"To: {h.get('To')}{f';tag={tag}' if tag else ''}",
             f"Call-ID: {h.get('Call-ID')}", f"CSeq: {h.get('CSeq')}",
             *(f"Record-Route: {v}" for v in h.lines("Record-Route")),
             f"Contact: <sip:127.0.0.1:{UAS_PORT};transport=UDP>"]
    if sdp:
        lines += ["Content-Type: application/sdp", f"Content-Length: {len(sdp)}", "", sdp]
    else:
        lines += ["Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()


def caller_in_dialog(n: int, ok: Response, method: str, cseq: int) -> bytes:
    """uac_rr.xml's ACK and BYE: to the 200's Contact, through its Record-Route reversed."""
    routes = ", ".join(ok.headers.lines("Record-Route")).split(", ")
    route = ", ".join(reversed(routes)) if routes != [""] else ""
    contact = (ok.headers.get("Contact") or "").strip("<>")
    lines = [f"{method} {contact} SIP/2.0",
             f"Via: SIP/2.0/UDP 127.0.0.1:{UAC_PORT};branch=z9hG4bK-{n}-{cseq}-{method}",
             *([f"Route: {route}"] if route else []),
             f"From: sipp <sip:sipp@127.0.0.1:{UAC_PORT}>;tag={n}SIPpTag00{n}",
             f"To: {ok.headers.get('To')}", f"Call-ID: {n}-1@127.0.0.1", f"CSeq: {cseq} {method}",
             f"Contact: sip:sipp@127.0.0.1:{UAC_PORT};transport=UDP", "Max-Forwards: 70",
             "Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()


class Replay:
    """The node, a list for its transport, and a clock of the time spent inside it."""

    def __init__(self, node: Node, gap: float) -> None:
        self.node, self.gap, self.spent = node, gap, 0.0
        self.sent: list[tuple[bytes, Peer]] = []
        sent = self.sent

        class ListTransport:
            def send(self, data: bytes, peer: Peer) -> None:
                sent.append((data, peer))

            async def close(self) -> None:
                pass

        node.transport = ListTransport()  # type: ignore[assignment]

    def feed(self, data: bytes, peer: Peer) -> None:
        if self.gap:
            time.sleep(self.gap)
        began = time.perf_counter()
        self.node._on_message(data, peer, None)
        self.spent += time.perf_counter() - began

    async def turn(self, port: int = 0, count: int = 0) -> None:
        """Let the loop run the node's tasks (anchored calls reserve ports in one), until
        `count` messages wait to go to `port`."""
        began = time.perf_counter()
        await asyncio.sleep(0)
        while sum(p.port == port for _, p in self.sent) < count:
            await asyncio.sleep(0)
        self.spent += time.perf_counter() - began

    def take(self, port: int) -> list[Message]:
        mine: list[Message] = [parse_message(d) for d, p in self.sent if p.port == port]
        self.sent[:] = [(d, p) for d, p in self.sent if p.port != port]
        return mine


async def replay(calls: int, anchor: bool, batch: int, gap: float) -> None:
    logs.configure(json=True, level="warning")
    with tempfile.TemporaryDirectory() as state:
        text = LYNCGATE_CFG.format(port=NODE_PORT, anchor=str(anchor).lower(),
                                   uas_port=UAS_PORT).replace("@STATE@", state)
        node = Node(parse_text(text, "bench.toml", base_dir=None))
        node.local.ports[Transport.UDP] = NODE_PORT
        run = Replay(node, gap)
        tune_gc()
        completed = 0
        began = time.process_time()
        for first in range(0, calls, batch):
            numbers = range(first, min(first + batch, calls))
            for n in numbers:
                run.feed(caller_invite(n), UAC)
            await run.turn(UAS_PORT, len(numbers))
            invites = [m for m in run.take(UAS_PORT) if isinstance(m, Request)]
            for k, invite in enumerate(invites):
                run.feed(callee_answer(invite, 180, "Ringing", f"uas{k}"), UAS)
                run.feed(callee_answer(invite, 200, "OK", f"uas{k}", SDP.format(port=6010)), UAS)
            await run.turn()
            oks = {m.call_id: m for m in run.take(UAC_PORT)
                   if isinstance(m, Response) and m.status == 200}
            for n in numbers:
                ok = oks[f"{n}-1@127.0.0.1"]
                run.feed(caller_in_dialog(n, ok, "ACK", 1), UAC)
                run.feed(caller_in_dialog(n, ok, "BYE", 2), UAC)
            await run.turn()
            for m in run.take(UAS_PORT):
                if isinstance(m, Request) and m.method == "BYE":
                    run.feed(callee_answer(m, 200, "OK", ""), UAS)
            await run.turn()
            completed += sum(isinstance(m, Response) and m.cseq.method == "BYE"
                             for m in run.take(UAC_PORT))
            run.sent.clear()
        whole = time.process_time() - began
        await node.close()
    mode = "media anchored" if anchor else "signalling only"
    print(f"{calls} calls ({mode}), {completed} completed, batches of {batch}, gap {gap} s")
    print(f"  in the node: {1000 * run.spent / calls:.3f} ms per call "
          f"({calls / run.spent:.0f} calls per second of it)")
    print(f"  whole process (the peers' messages built and read too): "
          f"{1000 * whole / calls:.3f} ms per call")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--anchor", action="store_true", help="media anchored (the default "
                        "config); without it, signalling only")
    parser.add_argument("--batch", type=int, default=50, help="calls in each step")
    parser.add_argument("--gap", type=float, default=0.0, help="seconds before each message")
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(replay(args.calls, args.anchor, args.batch, args.gap))
    else:
        uvloop.run(replay(args.calls, args.anchor, args.batch, args.gap))


if __name__ == "__main__":
    main()
