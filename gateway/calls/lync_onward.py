"""The media of the leg the Virtual Reception places for a Lync caller that takes no REFER
(`reception_leg`): Lync's ICE session and SRTP stay as the reception set them up, and only
the far side of its audio stream changes, from the prompter to a SIP port toward the callee.

The callee is offered the codecs the reception's answer gave Lync (its numbers, plain RTP,
or SRTP with our key when `sip_media_encryption` is "required"), so whatever the callee
takes Lync may already send. When the callee's answer keeps the codec Lync is sending (the
first of that answer), nothing toward Lync changes: `answer` returns the very description
Lync has, and the relay is simply re-pointed. Otherwise Lync gets that description narrowed
to what the callee took, as the next offer of the same session (same ICE credentials,
candidates and key, so neither ICE nor SRTP starts over), and a new key in Lync's answer
replaces the old one.

Lync's ICE ends here as on any Lync call: its offers are answered here, and only a change
of direction crosses to the callee (`session`)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from gateway.calls.media_side import Body
from gateway.media.call import CallMedia
from gateway.media.endpoints import IceMedia, SipMedia
from gateway.media.relay import Side, StreamRelay
from gateway.media.srtp import SrtpContext
from ice.ports import PortAllocator
from sdp.anchor import stream_remote
from sdp.attributes import Crypto
from sdp.errors import NotAcceptable
from sdp.model import Line, Media, Section, SessionDescription
from sdp.offer_answer import Answer, payload_remap
from sdp.parse import parse_sdp
from sdp.sdes import Encryption, answered_crypto, offer_crypto
from sdp.standard import keep_formats

if TYPE_CHECKING:
    from gateway.calls.lync_reception import LyncReception

SDP = "application/sdp"
UNKNOWN = ("0.0.0.0", 9)  # the callee's address is known from its answer


class LyncOnward:
    gathers = False  # ICE toward Lync is up already
    connects = False  # ... and the relay is re-pointed when the callee answers
    answers_offers_here = True  # Lync's ICE ends here

    def __init__(self, reception: LyncReception, ports: PortAllocator, address: str, *,
                 encryption: Encryption, media_timeout: float) -> None:
        self.reception = reception
        self.ports = ports
        self.address = address
        self.key: Crypto | None = offer_crypto() if encryption == "required" else None
        self.media_timeout = media_timeout
        self.endpoint: SipMedia | None = None
        self.media: CallMedia | None = None
        self._relay: StreamRelay | None = None
        self._sip_offer: Media | None = None
        self._taken: IceMedia | None = None

    @property
    def relayed(self) -> CallMedia | None:
        return self.media

    @property
    def video(self) -> str:
        return self.reception.video  # what the reception's answer said of Lync's video

    def _negotiated(self) -> Answer:
        """What the reception answered Lync: the description Lync has from us, and the keys
        of its audio stream."""
        negotiated = self.reception.negotiated
        if negotiated is None:
            raise NotAcceptable("the reception never answered Lync")
        return negotiated

    def reserve(self) -> None:
        self.endpoint = SipMedia.open(self.ports, self.address, UNKNOWN, UNKNOWN,
                                      self._received)

    async def prepare(self) -> None:
        return None

    def offer(self, caller: Body, toward: str) -> Body:
        """The callee's offer: Lync's audio as the reception answered it, on our SIP port."""
        assert self.endpoint is not None
        audio = self._negotiated().sdp.media[self.reception.index]
        family = "IP6" if ":" in toward else "IP4"
        session = Section([Line("v", "0"), Line("o", f"- 1 1 IN {family} {toward}"),
                           Line("s", "lyncgate"), Line("c", f"IN {family} {toward}"),
                           Line("t", "0 0")])
        proto = "RTP/AVP" if self.key is None else "RTP/SAVP"
        stream = Media([Line("m", f"audio {self.endpoint.rtp.port} {proto} "
                                  f"{' '.join(audio.formats)}"),
                        *keep_formats([ln for ln in audio.lines[1:] if ln.kind == "a"
                                       and ln.attribute[0] in ("rtpmap", "fmtp")],
                                      audio.formats)])
        if self.key is not None:
            stream.add_attribute("crypto", str(self.key))
        stream.add_attribute("sendrecv")
        self._sip_offer = stream
        return SessionDescription(session, [stream]).to_bytes(), SDP

    def answer(self, callee: Body, *, final: bool) -> Body:
        """With the callee's 2xx: Lync's stream re-pointed at the callee, and what Lync is to
        have from us (unchanged when the callee kept the codec Lync sends); raises SdpError
        when the callee's answer cannot be used."""
        if not final:
            return b"", None
        assert self.endpoint is not None and self._sip_offer is not None
        sip = parse_sdp(callee[0])
        media = next((m for m in sip.media if m.media == "audio" and not m.rejected), None)
        remote = None if media is None else stream_remote(sip, media)
        if media is None or remote is None:
            raise NotAcceptable("the callee accepted no audio")
        theirs = None if self.key is None else answered_crypto(media, self.key)
        if self.key is not None and theirs is None:
            raise NotAcceptable("the callee accepted SRTP without an a=crypto answering ours")
        toward_lync = parse_sdp(self._negotiated().sdp.to_bytes())
        lync_audio = toward_lync.media[self.reception.index]
        lync_pt_map = payload_remap(self.reception.offered_audio, self._sip_offer, media)
        kept = [pt for pt in lync_audio.formats if pt in _accepted(lync_audio, media)]
        if not kept:
            raise NotAcceptable("the callee took none of the codecs Lync sends")
        if kept[0] != lync_audio.formats[0]:
            _narrow(lync_audio, kept)
        session, lync = self.reception.hand_over()
        self.endpoint.rtp.point_at(remote.rtp)
        if self.endpoint.rtcp_endpoint is not None:
            self.endpoint.rtcp_endpoint.point_at(remote.rtcp)
        relay = StreamRelay("audio", replace(lync, pt_map=lync_pt_map), Side(
            "sip", self.endpoint.send, None if theirs is None else SrtpContext(
                theirs, inbound=True),
            None if self.key is None else SrtpContext(self.key, inbound=False),
            pt_map=payload_remap(media, lync_audio, self.reception.offered_audio)),
            clock=asyncio.get_running_loop().time)
        self._relay = relay
        self._taken = IceMedia(session, relay.from_a)
        self.media = CallMedia([relay], timeout=self.media_timeout)
        return toward_lync.to_bytes(), SDP

    def _received(self, data: bytes, rtcp: bool | None) -> None:
        if self._relay is not None:
            self._relay.from_b(data, rtcp)

    async def connect(self, timeout: float) -> None:
        return None

    def updated_offer(self) -> bytes | None:
        return None

    def relay_offer(self, *, from_caller: bool, body: bytes) -> bytes:
        raise NotAcceptable("offers are answered where ICE ends")

    def relay_answer(self, *, from_caller: bool, body: bytes) -> bytes:
        """Lync's answer to the narrowed description: a key of its own replaces the one it
        sent with until now (RFC 4568 allows a new one in every answer)."""
        stream = self._negotiated().streams[self.reception.index]
        if not from_caller or self._relay is None or stream.local_crypto is None:
            return body
        streams = parse_sdp(body).media
        if len(streams) <= self.reception.index:
            raise NotAcceptable("Lync's answer has no audio stream where ours had it")
        theirs = answered_crypto(streams[self.reception.index], stream.local_crypto)
        if theirs is None:
            raise NotAcceptable("Lync's answer has no a=crypto answering ours")
        if stream.remote_crypto is None or theirs.key_params != stream.remote_crypto.key_params:
            self._relay.a.srtp_in = SrtpContext(theirs, inbound=True)
        return body

    def close(self) -> Coroutine[Any, Any, None] | None:
        if self.endpoint is not None:
            self.endpoint.close(self.ports)
            self.endpoint = None
        if self._taken is not None:
            return self._taken.session.close()
        return None


def _accepted(ours: Media, theirs: Media) -> set[str]:
    """Our payload types (as `ours` numbers them) whose codec `theirs` accepted."""
    def codecs(media: Media) -> dict[str, tuple[str, int]]:
        maps = media.rtpmaps()
        return {f: (maps[int(f)].encoding.lower(), maps[int(f)].clock_rate)
                for f in media.formats if f.isdigit() and int(f) in maps}

    taken = set(codecs(theirs).values())
    return {pt for pt, codec in codecs(ours).items() if codec in taken}


def _narrow(media: Media, formats: list[str]) -> None:
    """`media` (in place) with only `formats`, in its order."""
    words = media.lines[0].value.split()
    media.lines[:] = [Line("m", " ".join([*words[:3], *formats]), media.lines[0].number),
                      *keep_formats(media.lines[1:], formats)]
