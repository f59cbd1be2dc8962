"""`lyncgate check-config FILE`: print every problem with its field path; exit 2 if any (the
exit codes of every command: README.md, "Exit codes")."""

from __future__ import annotations

import argparse
import sys

from gateway.config.errors import ConfigError
from gateway.config.load import load_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="the TOML configuration to validate")


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def run(args: argparse.Namespace) -> int:
    try:
        config = load_file(args.file)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{exc.source}: {problem}", file=sys.stderr)
        print(f"{exc.source}: {plural(len(exc.problems), 'problem')}; not valid",
              file=sys.stderr)
        return 2
    for warning in config.warnings:
        print(f"{config.source}: warning: {warning}", file=sys.stderr)
    print(
        f"{config.source}: valid ({plural(len(config.services), 'service')}, "
        f"{plural(len(config.routing_rules), 'routing rule')}, "
        f"{plural(len(config.locations), 'location')})"
    )
    return 0
