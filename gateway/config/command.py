"""`lyncgate check-config FILE`: print every problem with its field path; exit 1 if any."""

from __future__ import annotations

import argparse
import sys

from gateway.config.errors import ConfigError
from gateway.config.load import load_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="the TOML configuration to validate")


def run(args: argparse.Namespace) -> int:
    try:
        config = load_file(args.file)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{exc.source}: {problem}", file=sys.stderr)
        print(f"{exc.source}: {len(exc.problems)} problem(s); not valid", file=sys.stderr)
        return 1
    print(
        f"{config.source}: valid ({len(config.services)} services, "
        f"{len(config.routing_rules)} routing rules, {len(config.locations)} locations)"
    )
    return 0
