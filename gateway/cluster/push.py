"""`lyncgate config push FILE --config LOCAL`: validate FILE as the cluster's shared config
(over LOCAL's own sections, as a node would take it) and store it as a new generation; every
node is told at once (NOTIFY) and loads it over its own local file. A file with a problem
is refused with its field paths, and nothing is stored: every node keeps the config in force.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import asyncpg

from gateway.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, usage_error
from gateway.cluster.generations import merged, shared_part
from gateway.cluster.member import CONFIG_CHANNEL, DB_DOWN
from gateway.cluster.migrations import migrate
from gateway.config.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("push",),
                        help="push: store FILE as the cluster's next config generation")
    parser.add_argument("file", help="the shared config (no [node], [listen], [tls], "
                        "[cluster], [api] or [avatar]: those stay in each node's file)")
    parser.add_argument("--config", metavar="LOCAL", required=True,
                        help="a node's local config: its [cluster] names the database")


async def store(database: str, text: str, source: str) -> int:
    conn = await asyncpg.connect(database, timeout=5.0)
    try:
        await migrate(conn)
        async with conn.transaction():
            generation = await conn.fetchval(
                "INSERT INTO config_generations (text, source) VALUES ($1, $2) "
                "RETURNING generation", text, source)
            await conn.execute("SELECT pg_notify($1, $2)", CONFIG_CHANNEL, str(generation))
        return int(generation)
    finally:
        await conn.close()


def run(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        text = path.read_text("utf-8")
        shared = shared_part(text, str(path))
        local = merged(Path(args.config), None, args.config)
        if local.cluster is None:
            return usage_error("lyncgate config", f"{args.config} has no [cluster] section")
        merged(Path(args.config), shared, str(path))
    except OSError as exc:
        print(f"{path}: cannot read: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{exc.source}: {problem}", file=sys.stderr)
        print(f"{exc.source}: refused; every node keeps the config in force", file=sys.stderr)
        return EXIT_USAGE
    try:
        generation = asyncio.run(store(local.cluster.database, text, path.name))
    except DB_DOWN as exc:
        print(f"lyncgate config: cannot reach the cluster database: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{path}: valid; stored as cluster config generation {generation}")
    return EXIT_OK
