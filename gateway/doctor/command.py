"""`lyncgate doctor [--config FILE] [--json] [--dns-server ADDRESS:PORT]`: a table of pass /
warn / fail with what was tried, what was found and what to do; exit 1 if any check fails.
Each result is printed as soon as it is known; on a terminal a progress line says what is
being tried meanwhile (a check may wait `--timeout` seconds on the network)."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import re
import sys
from dataclasses import asdict
from typing import TextIO

from gateway.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from gateway.config.load import load_for_command
from gateway.doctor.checks import Probe, Result, run_all

WIDTH = 30  # the check column; results are printed one by one, so it cannot fit the longest
_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_FQDN = re.compile(rf"^{_LABEL}(\.{_LABEL})*\.?$")


def address_port(text: str) -> tuple[str, int]:
    """ADDRESS:PORT with an IP address ([::1]:53 for IPv6): doctor asks that server and no
    other, so a host name, which would need a DNS server to find, is refused."""
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        host = ""
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not ADDRESS:PORT with an IP address (e.g. 127.0.0.1:53 or [::1]:53)")
    return host, int(port)


def pool_node(text: str) -> tuple[str, str]:
    fqdn, sep, address = text.partition("=")
    try:
        ipaddress.ip_address(address)
    except ValueError:
        address = ""
    if not sep or not _FQDN.match(fqdn) or not address:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not FQDN=ADDRESS (e.g. gw2.example.com=10.0.0.12)")
    return fqdn.lower(), address


def fqdn(text: str) -> str:
    if not _FQDN.match(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a valid FQDN")
    return text.lower()


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value <= 300:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds in (0, 300]")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML config (default: embedded)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--dns-server", metavar="ADDRESS:PORT", type=address_port,
                        help="ask this DNS server (an IP address) instead of the system's")
    parser.add_argument("--pool", metavar="FQDN", type=fqdn,
                        help="trusted application pool name that must resolve to every node")
    parser.add_argument("--pool-node", action="append", default=[], metavar="FQDN=ADDRESS",
                        type=pool_node, help="another node of the pool; repeat")
    parser.add_argument("--timeout", type=seconds, default=3.0, metavar="SECONDS",
                        help="seconds per network check (default 3)")


class Printer:
    """Results as they come; on a terminal, a progress line that the next line replaces."""

    def __init__(self, out: TextIO, progress: TextIO | None) -> None:
        self.out = out
        self.progress_to = progress
        self._shown = False

    def progress(self, text: str) -> None:
        if self.progress_to is not None:
            self.progress_to.write(f"\r\x1b[K... {text}")
            self.progress_to.flush()
            self._shown = True

    def clear(self) -> None:
        if self._shown and self.progress_to is not None:
            self.progress_to.write("\r\x1b[K")
            self.progress_to.flush()
            self._shown = False

    def result(self, result: Result) -> None:
        self.clear()
        self.out.write("\n".join(lines(result)) + "\n")
        self.out.flush()


def run(args: argparse.Namespace) -> int:
    config = load_for_command(args.config)
    if config is None:
        return EXIT_USAGE
    if args.json:
        printer = Printer(sys.stdout, sys.stderr if sys.stderr.isatty() else None)
    else:
        printer = Printer(sys.stdout, sys.stdout if sys.stdout.isatty() else None)
    probe = Probe(config, dns_server=args.dns_server, pool=args.pool or "",
                  pool_nodes=tuple(args.pool_node), timeout=args.timeout,
                  progress=printer.progress)
    results = asyncio.run(run_all(probe, None if args.json else printer.result))
    printer.clear()
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
    else:
        print(summary(results))
    return EXIT_FAILED if any(r.level == "fail" for r in results) else EXIT_OK


def lines(r: Result) -> list[str]:
    out = [f"{r.level.upper():4}  {r.check:{WIDTH}}  {r.found}"]
    if r.action:
        out.append(f"{'':4}  {'':{WIDTH}}  -> {r.action}")
    return out


def summary(results: list[Result]) -> str:
    failed = sum(r.level == "fail" for r in results)
    warned = sum(r.level == "warn" for r in results)
    checks = "check" if len(results) == 1 else "checks"
    return (f"{len(results)} {checks}: {failed} failed, {warned} "
            f"{'warning' if warned == 1 else 'warnings'}")


def table(results: list[Result]) -> str:
    return "\n".join([*(line for r in results for line in lines(r)), summary(results)])
