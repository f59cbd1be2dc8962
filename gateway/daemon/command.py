"""`lyncgate run [--config FILE]`: the daemon. SIGTERM/SIGINT drain and exit; SIGHUP reloads
the config file, keeping the running config when the new one is refused."""

from __future__ import annotations

import argparse
import asyncio
import errno
import gc
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from gateway import logs
from gateway.api import avatars as avatar_server
from gateway.api import server as api_server
from gateway.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from gateway.config.load import load_for_command, log_warnings
from gateway.config.schema import Config
from gateway.daemon.node import Node
from gateway.daemon.state import StateDirError, prepare_state_dir

DRAIN_SECONDS = 32.0  # long enough for a non-INVITE transaction's Timer F


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML config (default: embedded)")
    parser.add_argument("--log-format", choices=("json", "console"),
                        help="default: json unless stderr is a terminal")
    parser.add_argument("--log-level", default="info",
                        choices=("debug", "info", "warning", "error"),
                        help="lines below this level are not written (default: info; debug "
                        "adds every SIP message)")


Runner = Callable[[Coroutine[Any, Any, int]], int]


def event_loop_runner() -> Runner:
    """uvloop's runner when it is installed, else asyncio's. Chosen here and run by the
    caller: a loop run inside the `except ImportError` block would chain that ImportError onto
    every exception the daemon ever logs ("During handling of the above exception...")."""
    try:
        import uvloop
    except ImportError:
        logs.get("gateway.daemon").info("event_loop", loop="asyncio",
                                        note="uvloop not installed")
        return asyncio.run
    return uvloop.run


def run(args: argparse.Namespace) -> int:
    logs.configure(
        json=None if args.log_format is None else args.log_format == "json",
        level=args.log_level,
    )
    log = logs.get("gateway.daemon")
    config = load_for_command(args.config)
    if config is None:
        return EXIT_USAGE
    log_warnings(config)
    try:
        prepare_state_dir(config.node)
    except StateDirError as exc:
        log.error("state_dir_unusable", directory=str(exc.directory), error=exc.reason,
                  note=exc.advice)
        return EXIT_FAILED
    runner = event_loop_runner()
    return runner(_serve(config, args.config))


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
    node = Node(config, config_path=path)
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
        if not node.reload_file(path):
            log_warnings(node.config)

    loop.add_signal_handler(signal.SIGTERM, stop, "SIGTERM")
    loop.add_signal_handler(signal.SIGINT, stop, "SIGINT")
    loop.add_signal_handler(signal.SIGHUP, reload)
    try:
        await node.start()
    except StateDirError as exc:
        log.error("state_dir_unusable", directory=str(exc.directory), error=exc.reason,
                  note=exc.advice)
        await node.close()
        return EXIT_FAILED
    except OSError as exc:
        log.error("listen_failed", **_listener(config, node), error=bind_error(exc))
        await node.close()
        return EXIT_FAILED
    api = await api_server.start(node, path)
    avatars = await avatar_server.start(config.avatar.address, config.avatar.port,
                                        lambda: node.presence.avatars)
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
    if avatars is not None:
        await avatars.cleanup()
    return EXIT_OK


def _listener(config: Config, node: Node) -> dict[str, Any]:
    """The listener that failed: the first configured one not yet listening (they open in
    this order); the loop's own error names no transport, and uvloop's no address either."""
    bound = {transport.lower() for transport, _, _ in node.transport.listening}
    for transport, port in (("udp", config.listen.udp), ("tcp", config.listen.tcp),
                            ("tls", config.listen.tls)):
        if port and transport not in bound:
            return {"transport": transport, "address": config.node.address, "port": port}
    return {}


def bind_error(exc: OSError) -> str:
    """The errno in words, the same for every transport: asyncio says "address already in use"
    for TCP but uvloop only "could not bind to local_addr" for UDP, its errno in the cause."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno is not None:
            words = os.strerror(cause.errno).lower()
            name = errno.errorcode.get(cause.errno, str(cause.errno))
            return f"{words} ({name})"
        cause = cause.__cause__ or cause.__context__
    return str(exc)
