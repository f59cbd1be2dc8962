"""A Lync caller at the Virtual Reception: the node terminates its ICE and SRTP (an aioice
agent plays the Lync client on loopback, libsrtp is each far end's crypto), plays the prompt
over SRTP in a codec Lync offered, reads Lync's keypad (RFC 4733 events under SRTP) and hands
the call on by REFER; Lync's application sharing is refused in the answer."""

from __future__ import annotations

import asyncio
import base64
import os
from pathlib import Path

import aioice
import pytest

from gateway.config.load import parse_text
from gateway.sip.message import Request, Response
from ice.candidate import parse_candidate
from ice.ports import PortAllocator
from routing.engine import Router
from sdp.parse import parse_sdp
from tests.kit.calls import Harness
from tests.kit.lync import LYNC, invite, lync_offer
from tests.kit.media import far_end
from tests.kit.reception import event, services, short_theme
from tests.peers import free_port


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6:
                        ["127.0.0.1"])


async def test_a_lync_caller_hears_the_prompt_keys_a_room_and_is_handed_on(
        tmp_path: Path) -> None:
    # 40 ms prompts: the flow, not the speech, is under test
    theme = short_theme(tmp_path, b"\x55" * 320)
    config = parse_text(services(theme), "t.toml", base_dir=None)
    base = free_port()
    ports = PortAllocator(base, base + 40)
    h = Harness(None, ports=ports, address="127.0.0.1")
    h.configure(router=Router(config.services, config.routing_rules))
    lync = aioice.Connection(ice_controlling=True, components=1, use_ipv6=False)
    await lync.gather_candidates()
    lync_key = os.urandom(30)
    h.feed(invite(lync_offer(lync, lync_key)).replace(b"alice@gw.example.com",
                                                      b"reception@127.0.0.1"), LYNC)
    for _ in range(30):
        await h.settle()
    ok = next(m for m, _ in h.take() if isinstance(m, Response) and m.status == 200)
    audio, sharing = parse_sdp(ok.body).media
    assert sharing.rejected and audio.proto == "RTP/SAVP" and "9" in audio.formats
    our_key = base64.b64decode(audio.cryptos()[0].key)
    lync.remote_username = audio.attribute("ice-ufrag")
    lync.remote_password = audio.attribute("ice-pwd")
    for value in audio.attributes("candidate"):
        await lync.add_remote_candidate(parse_candidate(value).to_aioice())
    await lync.add_remote_candidate(None)
    await asyncio.wait_for(lync.connect(), 10)

    rx, tx = far_end(our_key, False), far_end(lync_key, True)
    prompt = rx.unprotect(await asyncio.wait_for(lync.recv(), 5))
    assert prompt[1] & 0x7F == 9 and prompt[12:] == b"\x55" * 160  # G.722, as Lync offered
    seq = 0
    for n, key in enumerate((1, 2, 3, 4, 11)):  # 11: '#'
        for end in (False, True, True, True):  # the end sent three times, as RFC 4733 says
            seq += 1
            await lync.send(tx.protect(event(key, seq, 8000 * (n + 1), end)))
    refer = None
    for _ in range(100):
        await asyncio.sleep(0.02)
        refer = next((m for m, _ in h.take() if isinstance(m, Request)
                      and m.method == "REFER"), None)
        if refer is not None:
            break
    assert refer is not None and refer.headers.get("Refer-To") == "<sip:1234@127.0.0.1>"
    [call] = h.b2bua.calls.values()
    assert h.b2bua.statistics().ice == {"connected": 1, "failed": 0}
    await lync.close()
    close = call.media.close()
    if close is not None:
        await close
