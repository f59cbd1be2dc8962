"""Joining a Lync meeting by Conference ID through `lyncgate run`: a SIPp caller dials
`88<ID>`, the daemon looks the ID up and joins over mutual TLS (stunnel in server mode,
requiring the node's client certificate, in front of the simulated pool of
tests/kit/focus.py), and the MCU's media side, libnice in Microsoft's ICE mode (OC2007R2,
tests/kit/nice.py: an ICE implementation independent of ours) with the test's SRTP on top,
exchanges audio with the caller: SIPp echoes (-rtp_echo) what the MCU sends, so what comes
back to the MCU crossed libnice's selected pair and the relay both ways."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from sdp.model import Media
from tests.daemon.harness import Daemon, committed_cdrs
from tests.kit.focus import FOCUS, MCU, Focus
from tests.kit.lync import LyncStream, audio_answer, connect_to_offer
from tests.kit.media import rtp
from tests.kit.nice import NiceAgent
from tests.kit.nodes import mutual_tls_node
from tests.peers import free_port, sipp, stunnel

pytestmark = pytest.mark.peer


@pytest.fixture
def lab() -> Iterator[contextlib.ExitStack]:
    with contextlib.ExitStack() as stack:
        yield stack


@pytest.fixture
async def libnice() -> AsyncIterator[NiceAgent]:
    """The MCU's ICE agent, controlled: the gateway offers, so it controls."""
    agent = await NiceAgent.start("oc2007r2")
    yield agent
    await agent.close()


class Pool:
    """The simulated pool on a plain TCP port (stunnel terminates TLS in front of it):
    SIP framed by Content-Length in, the focus's answers out; the MCU's INVITEs answered
    with `answer`, and ICE run against the first."""

    def __init__(self, focus: Focus, agent: NiceAgent, answer: bytes) -> None:
        self.focus, self.agent, self.answer = focus, agent, answer
        self.offer: bytes = b""
        self.offered: Media | None = None  # the stream ICE ran on, in the gateway's offer
        self.connected = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        answered = 0
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).lstrip(b"\r\n")
                if not head:
                    continue  # a keep-alive
                length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                body = await reader.readexactly(int(length.group(1)) if length else 0)
                for reply in self.focus.receive(head + body):
                    writer.write(reply)
                invites = [m for m in self.focus.got if m.method == "INVITE" and m.uri == MCU]
                if len(invites) > answered:
                    answered = len(invites)
                    writer.write(self.focus.answer_mcu(200, self.answer))
                    if answered == 1:
                        self.offer = invites[0].body
                        self.tasks.append(asyncio.ensure_future(self._ice()))
                await writer.drain()

    async def _ice(self) -> None:
        self.offered = await connect_to_offer(self.agent, self.offer)
        self.connected.set()


def node_config(tmp_path: Path, pool_port: int) -> str:
    return mutual_tls_node(tmp_path) + f"""
[global]
mssip_domain = "vc.example.com"

[[lync_servers]]
name = "fepool"
address = "127.0.0.1"
port = {pool_port}
transport = "tls"

[[routing_rules]]
name = "Lync meeting direct"
priority = 10
protocols = ["sip"]
match = '88(\\d+)'
replace = '\\1'
target = "lync_meeting_direct"
outgoing_protocol = "mssip"
call_via = "fepool"
"""


async def test_sipp_caller_joins_a_meeting_over_mutual_tls_with_audio_both_ways(
        lab: contextlib.ExitStack, tmp_path: Path, libnice: NiceAgent) -> None:
    stunnel_port, pool_port = free_port(), free_port()
    focus = Focus(via=f"SIP/2.0/TLS 127.0.0.1:{stunnel_port}")
    key = os.urandom(30)
    pool = Pool(focus, libnice, audio_answer(libnice, key))
    server = await asyncio.start_server(pool.serve, "127.0.0.1", pool_port)
    daemon = Daemon(tmp_path, node_config(tmp_path, stunnel_port))
    lab.callback(daemon.stop, 1.0)
    lab.enter_context(stunnel(tmp_path, accept=stunnel_port, connect=pool_port,
                              cert=tmp_path / "lync.pem", client=False))
    caller = asyncio.ensure_future(asyncio.to_thread(
        sipp, f"127.0.0.1:{daemon.udp}", "uac_call.xml", "-s", "884711", "-t", "u1", "-m",
        "1", "-p", str(free_port()), "-d", "4000", "-rtp_echo", "-trace_msg",
        "-message_file", str(tmp_path / "uac-messages.log"), timeout=20,
        workdir=str(tmp_path)))
    await asyncio.wait_for(pool.connected.wait(), 15)
    assert pool.offered is not None
    stream = LyncStream(libnice, key, pool.offered)
    sent = [rtp(seq, pt=9, ssrc=77) for seq in range(1, 21)]
    for packet in sent:  # a packet every 20 ms, as an MCU's audio would come
        await stream.send(packet)
        await asyncio.sleep(0.02)
    for _ in range(100):
        if len(stream.rtp) >= len(sent) // 2:
            break
        await asyncio.sleep(0.02)
    echoed = [p for p in stream.rtp if p[8:12] == sent[0][8:12]]
    assert len(echoed) >= len(sent) // 2, f"{len(stream.rtp)} packets came back"
    assert all(p in sent for p in echoed)
    done = await caller
    assert done.returncode == 0, done.stdout + done.stderr
    for _ in range(100):
        if focus.methods().count("BYE") == 2:
            break
        await asyncio.sleep(0.05)
    assert [m.uri for m in focus.got if m.method == "BYE"] == [MCU, FOCUS]
    assert [m.get("Expires") for m in focus.got if m.method == "SUBSCRIBE"] == ["3600", "0"]
    assert focus.notifies and focus.notifies[0][1] == 200
    [row] = committed_cdrs(tmp_path)
    assert json.loads(row["meeting"]) == {"conference_id": "4711", "focus": FOCUS,
                                          "lobby_seconds": 0.0, "outcome": "joined"}
    assert row["ended_by"] == "caller" and row["answered"]
    assert daemon.events("meeting_join") and daemon.events("meeting_mcu")
    # both ends agree on the pair: the gateway's (local->remote) is libnice's, reversed
    [connected] = daemon.events("ice_connected")
    assert connected["pairs"] == ["->".join(reversed(libnice.pair))], connected
    assert not [e for e in daemon.events() if e.get("level") in ("error", "critical")]
    await stream.close()
    server.close()
    for task in pool.tasks:
        await task

