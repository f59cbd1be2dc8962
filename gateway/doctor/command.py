"""`lyncgate doctor [--config FILE] [--json] [--dns-server HOST:PORT]`: a table of pass / warn
/ fail with what was found and what to do; exit 1 if any check fails."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import asdict

from gateway.config.load import load_for_command
from gateway.doctor.checks import Probe, Result, run_all


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML config (default: embedded)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--dns-server", metavar="HOST:PORT",
                        help="ask this DNS server instead of the system's")
    parser.add_argument("--pool", default="", metavar="FQDN",
                        help="trusted application pool name that must resolve to every node")
    parser.add_argument("--pool-node", action="append", default=[], metavar="FQDN=ADDRESS",
                        help="another node of the pool; repeat")
    parser.add_argument("--timeout", type=float, default=3.0,
                        help="seconds per network check (default 3)")


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--dns-server {text!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


def _node(text: str) -> tuple[str, str]:
    fqdn, sep, address = text.partition("=")
    if not sep or not fqdn or not address:
        raise ValueError(f"--pool-node {text!r}: expected FQDN=ADDRESS")
    return fqdn.lower(), address


def run(args: argparse.Namespace) -> int:
    config = load_for_command(args.config)
    if config is None:
        return 2
    try:
        dns_server = _host_port(args.dns_server) if args.dns_server else None
        nodes = tuple(_node(n) for n in args.pool_node)
    except ValueError as exc:
        print(f"lyncgate doctor: {exc}", file=sys.stderr)
        return 2
    probe = Probe(config, dns_server=dns_server, pool=args.pool,
                  pool_nodes=nodes, timeout=args.timeout)
    results = asyncio.run(run_all(probe))
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
    else:
        print(table(results))
    return 1 if any(r.level == "fail" for r in results) else 0


def table(results: list[Result]) -> str:
    width = max((len(r.check) for r in results), default=10)
    lines = []
    for r in results:
        lines.append(f"{r.level.upper():4}  {r.check:{width}}  {r.found}")
        if r.action:
            lines.append(f"{'':4}  {'':{width}}  -> {r.action}")
    failed = sum(r.level == "fail" for r in results)
    warned = sum(r.level == "warn" for r in results)
    lines.append(f"{len(results)} checks: {failed} failed, {warned} warnings")
    return "\n".join(lines)
