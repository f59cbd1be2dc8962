"""Overload: lyncgate offered 2x and 4x the call rate it sustains, media anchored, and
Kamailio (its ratelimit module capping INVITEs at the same sustained rate) under the same
offered load beside it. Run as `bench/calls.py overload`; SIPp and the scenarios are
bench/calls.py's.

1. The sustained rate: lyncgate alone at rising rates, 8 s each, until a run has a failed
   call or a kernel drop at its port; the last clean rate is the one it sustains here.
2. 2x and 4x that rate for --duration s each (default 20). Per run: successful calls per
   second of offered load against the sustained rate (goal >= 90%), failed calls split into
   503s and everything else (goal: every failure a 503, none at the UAS, no retransmission
   timeouts), datagrams the kernel dropped at the SIP port (goal 0), and how long after the
   load stopped the node admitted every new call again (its /status; goal <= 2 s).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from calls import (
    LAB_KAMAILIO,
    LAB_LISTEN,
    LAB_NEXT_HOP,
    LYNCGATE_ARGS,
    LYNCGATE_CFG,
    SIPP_EVENT,
    Run,
    Start,
    print_problems,
    run_calls,
    scenarios,
    substitute,
)
from common import free_port, kamailio, lyncgate, wait_udp_answer

PROBE_RATES = (100, 200, 300, 400, 500, 600, 700, 800, 1000, 1200)
PROBE_S = 8
RECOVERY_GOAL_S = 2.0

# Kamailio as an operator would cap it: new INVITEs beyond the rate get 503 from the
# ratelimit module's pipe (TAILDROP), before any transaction is made.
KAMAILIO_LIMIT = {
    'loadmodule "siputils.so"\n':
        'loadmodule "siputils.so"\nloadmodule "ratelimit.so"\n'
        'modparam("ratelimit", "pipe", "0:TAILDROP:@LIMIT@")\n'
        'modparam("ratelimit", "timer_interval", 1)\n',
    "  if (is_method(\"CANCEL\"))":
        "  if (is_method(\"INVITE\") && !rl_check(\"0\")) {\n"
        "    append_to_reply(\"Retry-After: 30\\r\\n\");\n"
        "    sl_send_reply(\"503\", \"Service Unavailable (rate limit)\"); exit;\n  }\n"
        "  if (is_method(\"CANCEL\"))",
}


@dataclass
class Watch:
    """lyncgate's admitted share of new dialogs over time, read from its /status."""

    api_port: int = 0
    seen: list[tuple[float, float]] = field(default_factory=list)  # (monotonic, share)
    stop: threading.Event = field(default_factory=threading.Event)

    def poll(self) -> None:
        url = f"http://127.0.0.1:{self.api_port}/status"
        while not self.stop.is_set():
            with contextlib.suppress(OSError, ValueError):
                with urllib.request.urlopen(url, timeout=1) as reply:
                    status = json.loads(reply.read())
                self.seen.append((time.monotonic(), float(status["overload"]["admitted_share"])))
            self.stop.wait(0.05)

    def back_after(self, when: float) -> float | None:
        """Seconds from `when` until the share was back to 1 (0 if it already was)."""
        shares = [(t, s) for t, s in self.seen if t >= when]
        if not shares:
            return None
        return next((max(0.0, t - when) for t, s in shares if s >= 1.0), None)


def lyncgate_watched(watch: Watch) -> Start:
    @contextlib.contextmanager
    def start(work: Path, uas_port: int) -> Iterator[tuple[int | None, int]]:
        port, watch.api_port = free_port(), free_port()
        config = LYNCGATE_CFG.format(port=port, uas_port=uas_port, anchor="true") + (
            f"[api]\nport = {watch.api_port}\n")
        with lyncgate(config, args=LYNCGATE_ARGS, log=work / "lyncgate.log") as proc:
            wait_udp_answer(port, timeout=30, in_dialog=True)
            poller = threading.Thread(target=watch.poll, daemon=True)
            poller.start()
            try:
                yield proc.pid, port
            finally:
                watch.stop.set()
                poller.join()
    return start


def kamailio_limited(limit: int) -> Start:
    @contextlib.contextmanager
    def start(work: Path, uas_port: int) -> Iterator[tuple[int | None, int]]:
        port = free_port()
        config = substitute(LAB_KAMAILIO.read_text(), {
            f"listen=udp:{LAB_LISTEN}": f"listen=udp:127.0.0.1:{port}",
            f"listen=tcp:{LAB_LISTEN}": f"listen=tcp:127.0.0.1:{port}",
            f"sip:{LAB_NEXT_HOP};": f"sip:127.0.0.1:{uas_port};"}, str(LAB_KAMAILIO))
        config = substitute(config, KAMAILIO_LIMIT, "ratelimit").replace("@LIMIT@", str(limit))
        with kamailio(config, log=work / "kamailio.log") as proc:
            wait_udp_answer(port, in_dialog=True)
            yield proc.pid, port
    return start


def refusals_503(where: Path) -> int:
    """UAC calls that ended on a 503 (SIPp's error log: an unexpected 503 response)."""
    return sum("received 'SIP/2.0 503" in event
               for log in where.glob("*uac*_errors.log")
               for event in SIPP_EVENT.split(log.read_text(errors="replace"))[1:])


def sustained(work: Path) -> int:
    uac, uas = scenarios(work)
    best = 0
    for rate in PROBE_RATES:
        with contextlib.ExitStack() as element:
            watch = Watch()
            run = run_calls(f"probe-{rate}", lyncgate_watched(watch), work, element,
                            rate=rate, calls=rate * PROBE_S, uac=uac, uas=uas)
        clean = (not run.skipped and run.failed == 0 and run.uas.get("Failed call", 0) == 0
                 and run.drops == 0)
        print(f"  probe {rate}/s for {PROBE_S} s: {run.successful} of {run.calls} calls, "
              f"{run.failed} failed, {run.drops} drops{'' if clean else '  <- over'}",
              flush=True)
        if not clean:
            break
        best = rate
    return best


def overload(work: Path, rate: int, duration: int) -> None:
    """`rate`: the sustained rate to use (0: measure it first)."""
    print("Overload: anchored calls through lyncgate at 2x and 4x the rate it sustains, "
          "Kamailio with ratelimit (capped at that rate) beside it")
    base = rate or sustained(work)
    if not base:
        print("  lyncgate sustained no probe rate without failures: nothing to overload")
        return
    print(f"  sustained rate: {base} calls/s ({'given' if rate else 'measured'})")
    uac, uas = scenarios(work)
    rows: list[tuple[Run, Path, float | None]] = []
    for factor in (2, 4):
        offered = base * factor
        for name, start in ((f"lyncgate-{factor}x", None), (f"kamailio-{factor}x",
                                                           kamailio_limited(base))):
            watch = Watch()
            with contextlib.ExitStack() as element:
                run = run_calls(name, start or lyncgate_watched(watch), work, element,
                                rate=offered, calls=offered * duration, uac=uac, uas=uas)
            stopped = run.ended - run.wall + duration  # the last INVITE was sent
            rows.append((run, work / name, watch.back_after(stopped) if start is None
                         else None))
    print(f"  {duration} s of offered load each; ok/s: successful calls per second of it; "
          "503s and other: the failed calls by how they ended")
    print("  element       offered  ok/s  of sustained  failed   503s  other  B-failed  "
          "timeouts  drops  back after")
    for run, where, back in rows:
        ok_rate = run.successful / duration
        shed = refusals_503(where)
        other = max(0, run.failed - shed)
        back_text = "-" if back is None and run.name.startswith("kamailio") else (
            "never" if back is None else f"{back:.1f} s")
        print(f"  {run.name:12s} {run.rate:8d} {ok_rate:5.0f} {100 * ok_rate / base:12.0f}% "
              f"{run.failed:7d} {shed:6d} {other:6d} {run.uas.get('Failed call', 0):9d} "
              f"{run.uac.get('timeouts', 0):9d} {run.drops:6d}  {back_text:>10s}")
        if run.name.startswith("lyncgate"):
            goals = {
                ">= 90% of sustained": ok_rate >= 0.9 * base,
                "every failure a 503": other == 0 and run.uas.get("Failed call", 0) == 0
                and run.uac.get("timeouts", 0) == 0,
                "no kernel drops": run.drops == 0,
                f"back within {RECOVERY_GOAL_S:g} s": back is not None
                and back <= RECOVERY_GOAL_S,
            }
            print("    goals: " + ", ".join(f"{goal}: {'met' if ok else 'MISSED'}"
                                             for goal, ok in goals.items()))
    for run, _, _ in rows:
        print_problems(run, work)
