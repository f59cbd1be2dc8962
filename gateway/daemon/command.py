"""`lyncgate run [--config FILE]`: the daemon. SIGTERM/SIGINT drain and exit; SIGHUP reloads
the config file, keeping the running config when the new one is refused."""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal
import sys

from gateway import logs
from gateway.api import server as api_server
from gateway.config.load import load_for_command
from gateway.config.schema import Config
from gateway.daemon.node import Node

DRAIN_SECONDS = 32.0  # long enough for a non-INVITE transaction's Timer F


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML config (default: embedded)")
    parser.add_argument("--log-format", choices=("json", "console"),
                        help="default: json unless stderr is a terminal")
    parser.add_argument("--log-level", default="info",
                        choices=("debug", "info", "warning", "error"))


def run(args: argparse.Namespace) -> int:
    logs.configure(
        json=None if args.log_format is None else args.log_format == "json",
        level=args.log_level,
    )
    log = logs.get("gateway.daemon")
    config = load_for_command(args.config)
    if config is None:
        return 2
    try:
        import uvloop
    except ImportError:
        log.info("event_loop", loop="asyncio", note="uvloop not installed")
        return asyncio.run(_serve(config, args.config))
    return uvloop.run(_serve(config, args.config))


def tune_gc() -> None:
    """A collection scans every tracked object of the generations it collects, and the loop
    stalls meanwhile (datagrams queue in the socket buffer). Start-up state (config, router,
    imports) lives as long as the process: gc.freeze moves it out of every scan. Calls free
    themselves by reference counting (completed transactions keep only bytes and keys, see
    docs/architecture.md), so collections find almost nothing, and what makes them slow is
    the live transactions (32 s each) they scan: small young and middle generations keep each
    pause short, and full collections, which scan every live transaction, are made rare.
    Measured with bench/calls.py latency (200 calls/s): p99 added setup +12-19 ms with
    (5_000, 5, 1000) against +28-35 ms with (20_000, 20, 100)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(5_000, 5, 1000)


# How long the loop waits for the GIL before it makes another thread hand it over.
SWITCH_INTERVAL_S = 0.0005


def tune_threads() -> None:
    """The CDR writer thread runs Python for a millisecond or more per batch (encoding the
    records), and a loop woken by a datagram meanwhile waits for the GIL until the writer
    drops it: at most the switch interval, 5 ms by default, which is the whole set-up
    latency budget. Half a millisecond bounds that wait; a switch costs microseconds, and
    only happens when both threads want to run. Measured with bench/calls.py latency
    (200 calls/s, anchored): p99 added +5.5 ms twice with 5 ms, +2.7-4.1 ms with 0.5 ms."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)


async def _serve(config: Config, path: str | None) -> int:
    log = logs.get("gateway.daemon")
    node = Node(config)
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task[None]] = []
    # Signals are handled from the first moment: the node answers on UDP while it still opens
    # its other listeners, and until then SIGHUP's default action would kill it. One that
    # comes before the node has started is acted on once it has.
    early: list[str] = []
    started = False

    def stop(signame: str) -> None:
        if not started:
            early.append(signame)
            return
        if stopping:
            return
        log.info("signal", signal=signame, action="drain")
        stopping.append(loop.create_task(node.drain(DRAIN_SECONDS)))

    def reload() -> None:
        if not started:
            early.append("SIGHUP")
            return
        log.info("signal", signal="SIGHUP", action="reload")
        node.reload_file(path)

    loop.add_signal_handler(signal.SIGTERM, stop, "SIGTERM")
    loop.add_signal_handler(signal.SIGINT, stop, "SIGINT")
    loop.add_signal_handler(signal.SIGHUP, reload)
    try:
        await node.start()
    except OSError as exc:
        log.error("listen_failed", error=str(exc))
        await node.close()
        return 1
    api = await api_server.start(node, path)
    tune_gc()
    tune_threads()
    started = True
    for signame in early:
        if signame == "SIGHUP":
            reload()
        else:
            stop(signame)
    await node.stopped.wait()
    if api is not None:
        await api.cleanup()
    return 0
