"""OPTIONS load: lyncgate against Kamailio answering statelessly, in the same run.

SIPp sends the same number of OPTIONS transactions at the same rate to each element over UDP;
we read each element's CPU seconds (process and descendants) before and after and print
transactions per CPU-second and the ratio. Goal (issue 3): lyncgate >= 0.5x Kamailio.

    .venv/bin/python bench/options.py [--count 20000] [--rate 2000]
"""

from __future__ import annotations

import argparse
import shutil
import sys

from common import (
    LYNCGATE_NODE,
    ROOT,
    cpu_seconds,
    free_port,
    kamailio,
    lyncgate,
    sipp,
    wait_udp_answer,
)

SCENARIO = ROOT / "tests" / "scenarios" / "options_uac.xml"

KAMAILIO_CFG = """#!KAMAILIO
debug=0
log_stderror=yes
fork=yes
children=2
listen=udp:127.0.0.1:{port}
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "sl.so"
loadmodule "textops.so"
request_route {{
  if (is_method("OPTIONS")) {{ sl_send_reply("200", "OK"); exit; }}
  sl_send_reply("501", "Not Implemented");
}}
"""

LYNCGATE_CFG = LYNCGATE_NODE


def measure(pid: int, port: int, count: int, rate: int) -> tuple[float, str]:
    before = cpu_seconds(pid)
    out = sipp(
        f"127.0.0.1:{port}",
        SCENARIO,
        ["-p", str(free_port()), "-m", str(count), "-r", str(rate), "-l", "2000"],
        timeout=max(60.0, 4 * count / rate),
    )
    return cpu_seconds(pid) - before, out


def failed_calls(sipp_output: str) -> str:
    for line in sipp_output.splitlines():
        if "Failed call" in line:
            return line.rsplit("|", 1)[-1].strip()
    return "?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--rate", type=int, default=2000)
    args = parser.parse_args()
    for binary in ("sipp", "kamailio"):
        if not shutil.which(binary):
            print(f"missing {binary}: run scripts/install --test", file=sys.stderr)
            return 2

    results: dict[str, tuple[float, str]] = {}
    kport = free_port()
    with kamailio(KAMAILIO_CFG.format(port=kport)) as kam:
        wait_udp_answer(kport)
        results["kamailio"] = measure(kam.pid, kport, args.count, args.rate)

    lport = free_port()
    with lyncgate(LYNCGATE_CFG.format(port=lport)) as gate:
        wait_udp_answer(lport, timeout=30)
        results["lyncgate"] = measure(gate.pid, lport, args.count, args.rate)

    print(f"OPTIONS over UDP, {args.count} transactions at {args.rate}/s each")
    rate: dict[str, float] = {}
    for name, (cpu, out) in results.items():
        rate[name] = args.count / cpu if cpu > 0 else float("inf")
        print(f"  {name:9s} cpu {cpu:7.2f} s  {rate[name]:9.0f} transactions/CPU-s  "
              f"failed {failed_calls(out)}")
    print(f"  ratio lyncgate/kamailio: {rate['lyncgate'] / rate['kamailio']:.2f}x (goal >= 0.5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
