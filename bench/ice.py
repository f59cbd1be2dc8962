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
import json
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent]

from ice.ports import PortAllocator  # noqa: E402
from ice.session import IceSession  # noqa: E402
from sdp.multipart import pick_sdp, split  # noqa: E402
from sdp.parse import parse_sdp  # noqa: E402

AGENT = ROOT / "tests" / "kit" / "nice_agent.py"
OFFER = ROOT / "tests" / "sdp" / "fixtures" / "lync2013_multipart.txt"
BOUNDARY = "fBpPKSsLpkk7z9bwWz9IMqKUhHN9DKnl"


async def nice(compat: str, controlling: bool) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        "/usr/bin/python3", str(AGENT), "--compat", compat, "--controlling",
        str(int(controlling)), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)


async def line(proc: asyncio.subprocess.Process) -> dict[str, object]:
    assert proc.stdout is not None
    data = await asyncio.wait_for(proc.stdout.readline(), 20)
    if not data:
        raise RuntimeError("libnice agent exited: is gir1.2-nice-0.1 installed?")
    result: dict[str, object] = json.loads(data)
    return result


async def send(proc: asyncio.subprocess.Process, obj: dict[str, object]) -> None:
    assert proc.stdin is not None
    proc.stdin.write((json.dumps(obj) + "\n").encode())
    await proc.stdin.drain()


async def stop(*procs: asyncio.subprocess.Process) -> None:
    for proc in procs:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def lyncgate_vs_libnice(compat: str, ports: PortAllocator, hint: bool
                              ) -> tuple[float, str]:
    """Seconds to the selected pair, and what told the session the peer's STUN form."""
    peer = await nice(compat, False)
    try:
        theirs = await line(peer)
        session = IceSession(controlling=True, components=1, address="127.0.0.1", ports=ports,
                             msice2_peer=hint)
        await session.gather()
        await send(peer, {"ufrag": session.ufrag, "pwd": session.pwd,
                          "candidates": session.candidate_attributes()})
        started = time.perf_counter()
        await session.set_remote(str(theirs["ufrag"]), str(theirs["pwd"]),
                                 [str(c) for c in theirs["candidates"]])  # type: ignore[attr-defined]
        await session.connect(10)
        elapsed = time.perf_counter() - started
        await session.close()
        return elapsed, session.stats.peer_form_from
    finally:
        await stop(peer)


async def libnice_vs_libnice(compat: str) -> float:
    controlling, controlled = await nice(compat, True), await nice(compat, False)
    try:
        a, b = await line(controlling), await line(controlled)
        await send(controlled, a)
        await send(controlling, b)
        state = await line(controlling)
        if state["state"] != "ready":
            raise RuntimeError(f"libnice pair failed: {state}")
        return float(state["seconds"])  # type: ignore[arg-type]
    finally:
        await stop(controlling, controlled)


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
