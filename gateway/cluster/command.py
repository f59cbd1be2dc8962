"""`lyncgate cluster status --config FILE [--json]`: the cluster's nodes as the nodes table
has them (state, heartbeat age, calls in progress, config generation in force), read from
the PostgreSQL named in the file's [cluster]; exit 1 when a node is gone or PostgreSQL
cannot be reached."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import asyncpg

from gateway.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, usage_error
from gateway.cluster.member import DB_DOWN, NODES_QUERY, node_row
from gateway.cluster.migrations import migrate
from gateway.cluster.view import NodeRow
from gateway.config.load import load_for_command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("status",), help="status: the nodes and their state")
    parser.add_argument("--config", metavar="FILE", required=True,
                        help="a node's config, whose [cluster] names the database")
    parser.add_argument("--json", action="store_true", help="print the nodes as JSON")


async def nodes(database: str) -> tuple[list[NodeRow], int]:
    """The nodes table, and the latest config generation stored (0: none)."""
    conn = await asyncpg.connect(database, timeout=5.0)
    try:
        await migrate(conn)
        rows = [node_row(r) for r in await conn.fetch(NODES_QUERY)]
        latest = await conn.fetchval("SELECT coalesce(max(generation), 0) "
                                     "FROM config_generations")
        return rows, int(latest)
    finally:
        await conn.close()


def run(args: argparse.Namespace) -> int:
    config = load_for_command(args.config)
    if config is None:
        return EXIT_USAGE
    if config.cluster is None:
        return usage_error("lyncgate cluster", f"{args.config} has no [cluster] section")
    try:
        rows, latest = asyncio.run(nodes(config.cluster.database))
    except DB_DOWN as exc:
        print(f"lyncgate cluster: cannot reach the cluster database: {exc}", file=sys.stderr)
        return EXIT_FAILED
    now = time.time()
    if args.json:
        print(json.dumps({"config_generation": latest,
                          "nodes": [row.to_json(now) for row in rows]}, indent=2))
    else:
        print(f"config generation {latest or 'none'} (latest pushed)")
        print(f"{'NODE':<20} {'STATE':<5} {'ADDRESS':<16} {'LOCATION':<12} {'CALLS':>5} "
              f"{'HEARTBEAT':>9} {'CONFIG':>6} VERSION")
        for row in rows:
            print(f"{row.name:<20} {row.state:<5} {row.address:<16} {row.location or '-':<12} "
                  f"{row.load:>5} {max(0.0, now - row.heartbeat):>8.1f}s "
                  f"{row.config_generation:>6} {row.version}")
    return EXIT_FAILED if any(row.state != "up" for row in rows) else EXIT_OK
