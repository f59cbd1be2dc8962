"""Calls between nodes, against two daemons sharing a real PostgreSQL: a device registered
at node 1 over TCP from behind NAT (a Contact nobody can reach: only node 1's connection
reaches it) is called through node 2; node 2 places the call over mutual TLS to node 1,
which delivers it over the device's connection with Record-Route, and the caller's BYE
follows the same way. Node 1 killed: node 2 answers the device's calls 480."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import threading
from pathlib import Path

import asyncpg
import pytest

from tests.daemon.harness import Daemon
from tests.kit.cluster import ROOM, TcpDevice, cluster_ca, cluster_nodes
from tests.peers import free_port, sipp

pytestmark = pytest.mark.peer


def call(daemon: Daemon, tmp: Path, scenario: str) -> subprocess.CompletedProcess[str]:
    """One call from a SIPp UAC over UDP to `daemon`, held 300 ms, then its BYE."""
    return sipp(f"{daemon.host}:{daemon.udp}", scenario, "-s", "room1", "-t", "u1", "-m", "1",
                "-p", str(free_port()), "-d", "300", timeout=15,
                workdir=str(tmp))


def ready(database: str) -> bool:
    """Both nodes publish their node-to-node port and node 1 shares the binding."""
    async def ask() -> bool:
        conn = await asyncpg.connect(database)
        try:
            ports = await conn.fetchval("SELECT count(*) FROM nodes WHERE port > 0")
            held = await conn.fetchval("SELECT count(*) FROM bindings WHERE node = 'n1'")
            return bool(ports == 2 and held == 1)
        finally:
            await conn.close()
    return asyncio.run(ask())


def test_a_call_via_node_2_reaches_the_device_over_node_1s_flow(tmp_path: Path,
                                                                database: str) -> None:
    links = cluster_ca(tmp_path / "ca", 2)
    with cluster_nodes(tmp_path, database, 2, links=links, extra=ROOM) as (one, two):
        for daemon in (one, two):
            daemon.wait_event("cluster_connected")
        device = TcpDevice(one.host, one.tcp, "room1", "s3cret!")
        try:
            device.register()
            for _ in range(100):
                if ready(database):
                    break
                threading.Event().wait(0.1)
            threading.Event().wait(2.2)  # two heartbeats: node 2's view has node 1's port
            answered: list[str] = []
            worker = threading.Thread(target=lambda: answered.extend(
                [device.answer_call(), device.expect("ACK"), device.expect("BYE")]))
            worker.start()
            done = call(two, tmp_path, "uac_call.xml")
            worker.join(10)
            assert done.returncode == 0, done.stdout + done.stderr
            invite, ack, bye = answered
            assert invite.startswith(f"INVITE {device.contact} SIP/2.0")
            assert "lgr=n1" in invite and "lg-from=n2" in invite
            for request in (ack, bye):  # in-dialog, routed by node 1's own entries
                assert request.split(" ", 2)[1] == device.contact
            [relayed] = one.wait_event("cluster_call_relayed")
            assert relayed["node"] == "n2" and relayed["flow"].startswith("tcp:127.0.0.1:")
            [placed] = two.events("call_placed")
            assert placed["target"] == f"tls:{one.host}:{one.tls}"
            assert not two.events("call_placed")[1:]

            one.signal(signal.SIGKILL)
            two.wait_event("cluster_node_lost", timeout=10)
            refused = sipp(f"{two.host}:{two.udp}", "invite_refused_uac.xml", "-s", "room1",
                           "-t", "u1", "-m", "1", "-p", str(free_port()), status=480,
                           timeout=10, workdir=str(tmp_path))
            assert refused.returncode == 0, refused.stdout + refused.stderr
        finally:
            device.close()
