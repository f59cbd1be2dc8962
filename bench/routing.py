"""Routing decisions per second and latency percentiles: 10,000 service aliases and 200 rules
(mixed literals and regexes, most dialled aliases missing every rule before a late
catch-all), the shape issue 4 sets. Goal: p99 <= 20 us per decision.

    .venv/bin/python bench/routing.py [--decisions N]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and its name would shadow the
# `routing` package it measures.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent]

from gateway.config.load import parse_data  # noqa: E402
from routing.engine import CallContext, Router  # noqa: E402


def build(seed: int = 7) -> Router:
    rng = random.Random(seed)
    services = [
        {"name": f"room {i}", "aliases": [f"room{i}@vc.example.com", f"r{i}"],
         "target": f"sip:mcu{i % 17}@mcu.example.com"}
        for i in range(5000)
    ]
    rules: list[dict[str, object]] = []
    for i in range(199):
        kind = i % 4
        if kind == 0:
            match = f"desk{i}@example\\.com"  # a literal
        elif kind == 1:
            match = f"8{i:03d}(\\d{{4,6}})@example\\.com"
        elif kind == 2:
            match = f".*@site{i}\\.example\\.org"
        else:
            match = f"(\\w+)\\.{i}@partner{rng.randint(0, 9)}\\.net"
        rules.append({"name": f"rule {i:03d}", "priority": 1 + i % 190, "match": match,
                      "replace": "\\1" if kind in (1, 3) else "",
                      "protocols": ["sip", "mssip", "h323", "webrtc"][: 1 + i % 4]})
    rules.append({"name": "zz catch-all", "priority": 200, "match": ".*@example\\.com",
                  "protocols": ["sip", "mssip", "h323", "webrtc"]})
    config = parse_data({"services": services, "routing_rules": rules}, "bench", base_dir=None)
    return Router(config.services, config.routing_rules)


def aliases(n: int, seed: int = 11) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        roll = rng.random()
        if roll < 0.2:
            out.append(f"sip:room{rng.randrange(5000)}@vc.example.com")
        elif roll < 0.25:
            out.append(f"sip:desk{4 * rng.randrange(50)}@example.com;transport=tls")
        elif roll < 0.3:
            out.append(f"sip:8{rng.randrange(0, 199, 4) + 1:03d}123456@example.com")
        else:  # falls through every rule to the catch-all, or to a rejection
            user = f"user{rng.randrange(100000)}"
            out.append(f"sip:{user}@{rng.choice(['example.com', 'elsewhere.org'])}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=200_000)
    args = parser.parse_args()
    router = build()
    contexts = [CallContext(protocol=p, location="") for p in ("sip", "mssip", "h323")]
    work = aliases(args.decisions)
    for alias in work[:2000]:  # warm the per-context plans and the alias cache
        for ctx in contexts:
            router.decide(alias, ctx)
    samples = []
    clock = time.perf_counter_ns
    started = time.process_time()
    for i, alias in enumerate(work):
        ctx = contexts[i % 3]
        t0 = clock()
        router.decide(alias, ctx)
        samples.append(clock() - t0)
    cpu = time.process_time() - started
    samples.sort()
    q = statistics.quantiles(samples, n=100)
    print(f"routing: 10,000 service aliases, 200 rules, {len(work)} decisions "
          f"({len(set(work))} distinct aliases)")
    print(f"  decisions per CPU-second: {len(work) / cpu:,.0f}")
    print(f"  p50 {q[49] / 1000:.1f} us   p99 {q[98] / 1000:.1f} us   "
          f"max {samples[-1] / 1000:.1f} us   (goal: p99 <= 20 us)")


if __name__ == "__main__":
    main()
