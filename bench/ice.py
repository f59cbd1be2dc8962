"""ICE completion and SDP speed, side by side in one run.

- ICE: time from "remote candidates known" to "pair selected" on the controlling agent, for
  lyncgate (controlling, without the MS-SIP hint, as in production) <-> libnice and
  libnice (controlling) <-> libnice, host candidates on loopback, N rounds each. Goal
  (issue 5): lyncgate <= 1.0x libnice (median).
- SDP: parse + write per second of the RFC 5245 part of a Lync 2013 multipart offer, and the
  multipart split + pick in front of it.

    .venv/bin/python bench/ice.py [--rounds 15] [--compat rfc5245|oc2007r2]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent]

import aioice  # noqa: E402

from ice.candidate import Candidate  # noqa: E402
from ice.ports import PortAllocator  # noqa: E402
from ice.session import IceSession  # noqa: E402
from sdp.multipart import pick_sdp, split  # noqa: E402
from sdp.parse import parse_sdp  # noqa: E402

sys.path.insert(0, str(ROOT))
from tests.kit.nice import NiceAgent  # noqa: E402

OFFER = ROOT / "tests" / "sdp" / "fixtures" / "lync2013_multipart.txt"
BOUNDARY = "fBpPKSsLpkk7z9bwWz9IMqKUhHN9DKnl"


async def introduce(agent: NiceAgent, ufrag: str, pwd: str,
                    candidates: list[aioice.Candidate]) -> None:
    """Gives libnice `agent` the peer's credentials and candidates."""
    agent.remote_username, agent.remote_password = ufrag, pwd
    for c in candidates:
        await agent.add_remote_candidate(c)


async def lyncgate_vs_libnice(compat: str, ports: PortAllocator, hint: bool
                              ) -> tuple[float, str]:
    """Seconds to the selected pair, and what told the session the peer's STUN form."""
    peer = await NiceAgent.start(compat)
    try:
        session = IceSession(controlling=True, components=1, address="127.0.0.1", ports=ports,
                             msice2_peer=hint)
        await session.gather()
        await introduce(peer, session.ufrag, session.pwd,
                        [c.to_aioice() for c in session.local_candidates()])
        await peer.start_checks()
        started = time.perf_counter()
        await session.set_remote(peer.local_username, peer.local_password,
                                 [Candidate.from_aioice(c).attribute()
                                  for c in peer.local_candidates])
        await session.connect(10)
        elapsed = time.perf_counter() - started
        await peer.connect()
        await session.close()
        return elapsed, session.stats.peer_form_from
    finally:
        await peer.close()


async def libnice_vs_libnice(compat: str) -> float:
    controlling = await NiceAgent.start(compat, controlling=True)
    controlled = await NiceAgent.start(compat)
    try:
        for one, other in ((controlling, controlled), (controlled, controlling)):
            await introduce(one, other.local_username, other.local_password,
                            other.local_candidates)
        await asyncio.gather(controlling.connect(), controlled.connect())
        return controlling.seconds
    finally:
        await controlling.close()
        await controlled.close()


def sdp_rate(seconds: float) -> tuple[float, float]:
    body = OFFER.read_bytes()
    part = pick_sdp(split(body, BOUNDARY)).body
    out = []
    works: tuple[Callable[[], bytes], ...] = (
        lambda: parse_sdp(part).to_bytes(),
        lambda: parse_sdp(pick_sdp(split(body, BOUNDARY)).body).to_bytes())
    for work in works:
        count, started = 0, time.process_time()
        while time.process_time() - started < seconds:
            for _ in range(200):
                work()
            count += 200
        out.append(count / (time.process_time() - started))
    return out[0], out[1]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--compat", choices=("rfc5245", "oc2007r2"), default="rfc5245")
    args = parser.parse_args()
    ports = PortAllocator(41000, 41999)
    # The headline is the production path: no hint, the session learns the peer's form
    # (gateway/calls/lync_callee.py sends none, as an RFC 5389 peer would reject MS-ICE2).
    # In the Microsoft mode the MS-SIP hint (MS-ICE2 from the first check) is measured too.
    hinted = args.compat == "oc2007r2"
    ours, learned, with_hint, theirs = [], Counter[str](), [], []
    for _ in range(args.rounds):  # interleaved, so machine noise hits all alike
        elapsed, source = await lyncgate_vs_libnice(args.compat, ports, False)
        ours.append(elapsed)
        learned[source] += 1
        if hinted:
            with_hint.append((await lyncgate_vs_libnice(args.compat, ports, True))[0])
        theirs.append(await libnice_vs_libnice(args.compat))
    ours_ms = statistics.median(ours) * 1000
    theirs_ms = statistics.median(theirs) * 1000
    print(f"ICE ({args.compat}, host candidates on loopback, {args.rounds} rounds each)")
    print(f"  lyncgate -> libnice  median {ours_ms:7.1f} ms   max {max(ours) * 1000:7.1f} ms"
          "   (no hint; peer's form learned from: "
          + ", ".join(f"{source} {n}" for source, n in learned.most_common()) + ")")
    if with_hint:
        print(f"  ... with the MS-SIP hint median {statistics.median(with_hint) * 1000:7.1f} ms "
              "(MS-ICE2 from the first check)")
    print(f"  libnice  -> libnice  median {theirs_ms:7.1f} ms   max {max(theirs) * 1000:7.1f} ms")
    print(f"  ratio lyncgate/libnice: {ours_ms / theirs_ms:.2f}x (goal <= 1.0x)")
    alone, with_multipart = sdp_rate(1.5)
    print("SDP, Lync 2013 RFC 5245 part (3 m= lines' worth of attributes)")
    print(f"  parse + write            {alone:10,.0f} /CPU-s")
    print(f"  multipart split + pick + parse + write {with_multipart:10,.0f} /CPU-s")


if __name__ == "__main__":
    asyncio.run(main())
