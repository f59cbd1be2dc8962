"""The media side of a call the Virtual Reception answers: one audio stream toward the
caller, on a codec the prompts are recorded in (G.711 either law, G.722), prompts played on
it (`gateway.media.player`), and the caller's keypad read from it as RFC 4733
telephone-events (`gateway.media.dtmf`). What the caller sends is counted like relayed
media, so the media timeout ends a reception call nobody is on any more. Plain RTP only, as
the test call (a Lync caller's ICE and SRTP end in `lync_reception`)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.calls.anchoring import media_for
from gateway.calls.media_side import Body, MediaSide
from gateway.calls.prompter import Prompted, Prompter
from gateway.calls.settings import CallSettings
from gateway.media.call import CallMedia
from gateway.media.endpoints import SipMedia
from gateway.media.prompts import CODECS
from gateway.media.relay import Side, StreamRelay
from gateway.sip.message import Request
from ice.ports import PortAllocator
from routing.engine import Decision
from sdp.anchor import stream_remote
from sdp.errors import NotAcceptable
from sdp.model import Line, Media, Section, SessionDescription

SDP = "application/sdp"
# RFC 3551's static payload types for the codecs prompts come in.
STATIC = {0: "PCMU", 8: "PCMA", 9: "G722"}


def plain_reception(offer: SessionDescription, ports: PortAllocator, address: str,
                    media_timeout: float, seen_by_caller: str, theme: Path | None
                    ) -> ReceptionSide:
    """The reception's media for a plain SIP caller; raises NotAcceptable for SRTP."""
    if any("SAVP" in m.proto for m in offer.media):
        raise NotAcceptable("the reception takes SIP callers over plain RTP only (no SRTP)")
    return ReceptionSide(offer, ports, address, media_timeout, seen_by_caller, theme)


class ReceptionSide(Prompted):
    gathers = False
    connects = False
    answers_offers_here = True
    video = ""  # nothing translated

    def __init__(self, offer: SessionDescription, ports: PortAllocator, address: str,
                 media_timeout: float, seen_by_caller: str, theme: Path | None) -> None:
        self.caller_offer = offer
        self.ports = ports
        self.address = address
        self.media_timeout = media_timeout
        self.seen_by_caller = seen_by_caller
        self.index, self.payload_type, self.codec, self.events = chosen(offer)
        self.prompter = Prompter(theme)
        self.endpoint: SipMedia | None = None
        self.media: CallMedia | None = None
        self._relay: StreamRelay | None = None

    @property
    def relayed(self) -> CallMedia | None:
        return self.media

    def reserve(self) -> None:
        stream = self.caller_offer.media[self.index]
        unknown = ("0.0.0.0", 9)
        self.endpoint = SipMedia.open(self.ports, self.address, unknown,
                                      None if stream.has("rtcp-mux") else unknown,
                                      self._received)

    async def prepare(self) -> None:
        return None

    def offer(self, caller: Body, toward: str) -> Body:
        return caller  # nothing is placed: the node is the callee

    def answer(self, callee: Body, *, final: bool) -> Body:
        """Our answer: the chosen codec (and telephone-event) on our port; the other streams
        rejected. Media starts with it: the player and the keypad."""
        assert self.endpoint is not None
        family = "IP6" if ":" in self.seen_by_caller else "IP4"
        session = Section([Line("v", "0"), Line("o", f"lyncgate 1 1 IN {family} "
                                                     f"{self.seen_by_caller}"),
                           Line("s", "lyncgate reception"),
                           Line("c", f"IN {family} {self.seen_by_caller}"), Line("t", "0 0")])
        streams = []
        for index, media in enumerate(self.caller_offer.media):
            if index != self.index:
                streams.append(Media([Line("m", f"{media.media} 0 {media.proto} "
                                                f"{media.formats[0]}")]))
                continue
            formats = [str(self.payload_type), *(str(pt) for pt in self.events)]
            stream = Media([Line("m", f"audio {self.endpoint.rtp.port} RTP/AVP "
                                      + " ".join(formats))])
            rate = 8000
            stream.add_attribute("rtpmap", f"{self.payload_type} {self.codec}/{rate}")
            for pt in self.events:
                stream.add_attribute("rtpmap", f"{pt} telephone-event/8000")
                stream.add_attribute("fmtp", f"{pt} 0-15")
            if media.has("rtcp-mux"):
                stream.add_attribute("rtcp-mux")
            stream.add_attribute("sendrecv")
            streams.append(stream)
        if self.media is None:
            self._start()
        return SessionDescription(session, streams).to_bytes(), SDP

    def _start(self) -> None:
        assert self.endpoint is not None
        remote = stream_remote(self.caller_offer, self.caller_offer.media[self.index])
        if remote is not None:
            self.endpoint.rtp.point_at(remote.rtp)
            if self.endpoint.rtcp_endpoint is not None:
                self.endpoint.rtcp_endpoint.point_at(remote.rtcp)
        loop = asyncio.get_running_loop()
        self._relay = StreamRelay("audio", Side("caller", self.endpoint.send),
                                  Side("reception", self.prompter.keypad), clock=loop.time)
        self.media = CallMedia([self._relay], timeout=self.media_timeout)
        self.prompter.start(self.endpoint.send, self.payload_type, self.codec, self.events)

    def onward(self, request: Request, decision: Decision, settings: CallSettings,
               ports: PortAllocator, seen_by_caller: str) -> MediaSide:
        """The media of a leg of ours for this caller: anchored as for a dialled alias (the
        caller is re-INVITEd onto it)."""
        return media_for(request, decision, settings, ports, self.address, seen_by_caller)

    def _received(self, data: bytes, rtcp: bool | None) -> None:
        if self._relay is not None:
            self._relay.from_a(data, rtcp)

    async def connect(self, timeout: float) -> None:
        return None

    def updated_offer(self) -> bytes | None:
        return None

    def relay_offer(self, *, from_caller: bool, body: bytes) -> bytes:
        raise NotAcceptable("the reception answers its offers itself")

    def relay_answer(self, *, from_caller: bool, body: bytes) -> bytes:
        return body

    def close(self) -> None:
        self.prompter.stop()
        if self.endpoint is not None:
            self.endpoint.close(self.ports)
            self.endpoint = None


def chosen(offer: SessionDescription) -> tuple[int, int, str, list[int]]:
    """(stream index, payload type, codec, telephone-event payload types): the first audio
    stream's first format in a codec the prompts are recorded in."""
    for index, media in enumerate(offer.media):
        if media.media != "audio" or media.rejected:
            continue
        maps = media.rtpmaps()
        events = [pt for pt, m in maps.items() if m.encoding.lower() == "telephone-event"
                  and str(pt) in media.formats]
        for text in media.formats:
            if not text.isdigit():
                continue
            pt = int(text)
            name = maps[pt].encoding.upper() if pt in maps else STATIC.get(pt)
            if name is not None and name in CODECS:
                return index, pt, name, events
    raise NotAcceptable("the reception plays its prompts in G.711 or G.722: none offered")
