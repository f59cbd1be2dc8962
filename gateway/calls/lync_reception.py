"""The Virtual Reception for a Lync caller: the node terminates its ICE (controlled: Lync
offered) and SRTP as for any Lync call (`ice_side`), but the other end of the audio stream
is the reception itself, prompts out and keypad in (`prompter`), through the relay's core
so that SRTP, checks and counters are the relay's own. Audio only: Lync's video and
application sharing are refused in the answer.

A caller that takes no REFER is handed on by a leg of ours (`reception_leg`): its ICE
session and SRTP are handed over to that leg's media (`lync_onward`), which relays them to
the callee once it answers."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from gateway.calls.ice_side import LYNC_ENCRYPTION, IceSide, set_remote
from gateway.calls.lync_onward import LyncOnward
from gateway.calls.media_side import Body, MediaSide
from gateway.calls.prompter import Prompted, Prompter
from gateway.calls.reception_side import chosen
from gateway.calls.settings import CallSettings
from gateway.media.call import CallMedia
from gateway.media.endpoints import IceMedia
from gateway.media.relay import Side, StreamRelay
from gateway.media.srtp import SrtpContext
from gateway.sip.message import Request
from ice.errors import IceError
from ice.ports import PortAllocator
from ice.session import IceSession
from routing.engine import Decision
from sdp.errors import NotAcceptable
from sdp.model import Media, SessionDescription
from sdp.offer_answer import Answer, Codec, MediaPlan, answer

SDP = "application/sdp"
# What the prompts are recorded in, and the keypad's events, for the answer to Lync.
SPOKEN = [Codec("G722", 8000), Codec("PCMU", 8000), Codec("PCMA", 8000),
          Codec("telephone-event", 8000, 1, "0-15")]


class LyncReception(Prompted, IceSide):
    controlling = False  # Lync offered
    negotiated: Answer | None = None
    index = 0  # Lync's audio stream, among its offer's m= lines
    lync: Side | None = None  # where the relay sends Lync's audio, with Lync's SRTP

    def __init__(self, offer: SessionDescription, ports: PortAllocator, address: str, *,
                 static_nat: str, media_timeout: float, call_id: str,
                 theme: Path | None) -> None:
        super().__init__(offer, ports, address, static_nat=static_nat,
                         encryption=LYNC_ENCRYPTION, turn=None, stun=None, bandwidth_kbps=0,
                         media_timeout=media_timeout, call_id=call_id)
        self.prompter = Prompter(theme)

    def _refusal(self, media: Media) -> str:
        return "" if media.media == "audio" else "the reception answers audio only"

    def _components(self, media: Media) -> int:
        return 1 if media.has("rtcp-mux") else 2

    def _sip_streams(self) -> int:
        return 0  # no SIP leg: the reception is the other end

    def offer(self, caller: Body, toward: str) -> Body:
        return caller  # nothing is placed: the node is the callee

    def answer(self, callee: Body, *, final: bool) -> Body:
        """Our answer to Lync: a prompt codec and telephone-event, our candidates, SRTP."""
        plans: list[MediaPlan | None] = []
        for session in self.sessions:
            if session is None:
                plans.append(None)
                continue
            plans.append(self._plan(session))
        self.negotiated = answer(self.streams, {"audio": SPOKEN}, plans,
                                 encryption=LYNC_ENCRYPTION,
                                 origin_address=self.static_nat or self.address)
        return self.negotiated.sdp.to_bytes(), SDP

    async def connect(self, timeout: float) -> None:
        """ICE toward Lync; then the relay's core between Lync's stream and the prompter."""
        if self.negotiated is None:
            raise IceError("no answer was negotiated")
        index, session = next((i, s) for i, s in enumerate(self.sessions) if s is not None)
        stream = self.negotiated.streams[index]
        if not stream.accepted:
            raise NotAcceptable("Lync's audio was not accepted")
        await set_remote(session, self.streams, self.streams.media[index])
        await session.connect(timeout)
        if self.closed:
            raise IceError("the call ended while ICE was running")
        _, payload_type, codec, events = chosen(self.negotiated.sdp)
        loop = asyncio.get_running_loop()
        relay: StreamRelay | None = None

        def received(data: bytes, rtcp: bool | None) -> None:
            if relay is not None:
                relay.from_a(data, rtcp)

        lync = IceMedia(session, received)
        self.index, self.lync = index, Side(
            "lync", lync.send,
            None if stream.remote_crypto is None else SrtpContext(stream.remote_crypto,
                                                                  inbound=True),
            None if stream.local_crypto is None else SrtpContext(stream.local_crypto,
                                                                 inbound=False))
        relay = StreamRelay("audio", self.lync, Side("reception", self.prompter.keypad),
                            clock=loop.time)
        self.media = CallMedia([relay], timeout=self.media_timeout)
        self.prompter.start(relay.from_b, payload_type, codec, events)

    @property
    def offered_audio(self) -> Media:
        """Lync's audio stream as it offered it (its own numbering)."""
        return self.streams.media[self.index]

    def onward(self, request: Request, decision: Decision, settings: CallSettings,
               ports: PortAllocator, seen_by_caller: str) -> MediaSide:
        """The media of a leg of ours for this caller: Lync's stream, relayed to it."""
        return LyncOnward(self, ports, self.address, encryption=settings.encryption,
                          media_timeout=self.media_timeout)

    def hand_over(self) -> tuple[IceSession, Side]:
        """Lync's stream for the relay toward the callee: the prompts stop, and its ICE
        session (with the Side that holds Lync's SRTP) is no longer the reception's to
        close."""
        session = self.sessions[self.index]
        if session is None or self.lync is None:
            raise NotAcceptable("Lync's audio is not up")
        self.prompter.stop()
        self.sessions[self.index] = None
        return session, self.lync

    def updated_offer(self) -> bytes | None:
        return None

    def relay_offer(self, *, from_caller: bool, body: bytes) -> bytes:
        raise NotAcceptable("the reception answers its offers itself")

    def relay_answer(self, *, from_caller: bool, body: bytes) -> bytes:
        return body

    def close(self) -> Coroutine[Any, Any, None]:
        self.prompter.stop()
        return super().close()
