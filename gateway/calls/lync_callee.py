"""The media of a call placed toward Lync (a rule whose outgoing protocol is MS-SIP): the
gateway is the ICE offerer and controlling agent toward the Lync client.

1. `prepare()`: ICE gathered per audio/video stream of the SIP caller's offer, and the
   relay's ports toward the caller; `offer()` then gives what Lync gets: the caller's codecs
   and payload types, SRTP (a fresh key: see ice_side.LYNC_ENCRYPTION), our candidates,
   rtcp-mux, the rule's bandwidth cap.
2. `answer()`: with Lync's answer, the answer the SIP caller gets (Lync's codecs, the
   relay's ports): SRTP with a key of ours (SDES) where the caller offered a key the
   policy takes, plain RTP otherwise. A stream the policy cannot answer (RTP/SAVP with
   encryption off, or without a suite we speak) is rejected toward both legs, and an
   offer without keys when encryption is required refused (488), when the side is made.
3. `connect()`: ICE checks; when pairs are selected the relay joins each stream, and
   `updated_offer()` gives the second offer (a=remote-candidates) the controlling agent
   sends (RFC 5245 9.1.2.2), which Lync expects before it considers the call set up.

Video is translated (sdp.video): the caller's H264 (packetization-mode 1) reaches Lync as
X-H264UC with Lync's attributes (our SSRC range, x-caps for what the caller takes), and
Lync's X-H264UC answer reaches the caller as constrained-baseline H264 no higher than the
level it offered. A caller's video without H264 mode 1 is refused toward both legs.

Video either leg adds mid-call (`AddsStreams`) is taken up the same way, the other leg
re-offered it in its own terms; we control ICE for it and name its pair to Lync after. So
is video offered again on the m= line where it was removed or rejected (RFC 3264 8.1), on
that line of both legs, with a new ICE session and relay port.
"""

from __future__ import annotations

from gateway.calls.ice_side import (
    LYNC_ENCRYPTION,
    LYNC_VIDEO_PT,
    IceSide,
    lync_head,
    lync_pt_of,
    put,
    set_remote,
    standalone,
)
from gateway.calls.media_side import Body
from gateway.media.backend import StreamPlan
from ice.errors import IceError
from sdp import video as translated
from sdp.anchor import stream_remote
from sdp.attributes import Crypto, MediaBandwidth
from sdp.errors import NotAcceptable
from sdp.hold import restated
from sdp.model import Line, Media, Section, SessionDescription
from sdp.offer_answer import cap_bandwidth, payload_remap
from sdp.parse import parse_sdp
from sdp.sdes import (
    StreamRefused,
    answer_crypto,
    answered_crypto,
    offer_crypto,
    offered_crypto,
)

KEPT = ("rtpmap", "fmtp", "ptime")
SDP = "application/sdp"


class LyncCallee(IceSide):
    """`streams` is the SIP caller's offer."""

    controlling = True  # we offer to Lync
    lync_is_caller = False
    keys: list[Crypto | None]  # ours toward Lync, per stream (from prepare())
    # Per stream, the SIP caller's key and ours answering it (None: plain RTP).
    sip_keys: list[tuple[Crypto, Crypto] | None]
    lync_offer: SessionDescription | None = None  # what offer() gave Lync
    lync_answer: SessionDescription | None = None
    caller_answer: SessionDescription | None = None  # what answer() gave the caller
    version = 1  # of our offer's o= line: the second offer is the next
    # Per m= line Lync added mid-call, its X-H264UC number, and our key in the caller's
    # offer of it (its answer's key makes the pair in `sip_keys`).
    lync_pts: dict[int, int]
    offered_keys: dict[int, Crypto]
    added_by_lync = False  # who added the streams being taken up
    lines: list[int]  # the m= lines a re-offer adds or offers again, being answered
    caller_offered: dict[int, Media]  # per m= line Lync added, our offer of it to the caller

    def _refusal(self, media: Media) -> str:
        reason = super()._refusal(media)
        if reason or media.rejected:
            return reason
        try:
            offered_crypto(media, self.encryption)
        except StreamRefused as exc:
            return exc.rule
        return translated.refusal(media, lync=False) if media.media == "video" else ""

    async def prepare(self) -> None:
        await super().prepare()
        self.keys, self.sip_keys = [], []
        self._keys_for(list(range(len(self.streams.media))))
        self.lync_pts, self.offered_keys = {}, {}

    def _keys_for(self, indexes: list[int]) -> None:
        """Our key toward Lync and the caller's key with ours answering it, for each m=
        line of `indexes` that is relayed (None: not relayed, or plain RTP)."""
        for index in indexes:
            media, relayed = self.streams.media[index], self.relays[index]
            put(self.keys, index, offer_crypto() if relayed else None)
            theirs = offered_crypto(media, self.encryption) if relayed else None
            put(self.sip_keys, index, None if theirs is None else (theirs,
                                                                  answer_crypto(theirs)))

    def offer(self, caller: Body, toward: str) -> Body:
        self.lync_offer = self._lync_offer(remote_candidates=False)
        return self.lync_offer.to_bytes(), SDP

    def _lync_offer(self, *, remote_candidates: bool) -> SessionDescription:
        origin = self.static_nat or self.address
        family = "IP6" if ":" in origin else "IP4"
        session = Section([Line("v", "0"),
                           Line("o", f"- 1 {self.version} IN {family} {origin}"),
                           Line("s", "session"), Line("c", f"IN {family} {origin}"),
                           Line("t", "0 0")])
        streams = [self._lync_stream(index, remote_candidates=remote_candidates)
                   for index in range(len(self.streams.media))]
        return SessionDescription(session, streams)

    def _lync_stream(self, index: int, *, remote_candidates: bool) -> Media:
        """The caller's m= line `index` as Lync gets it: its codecs (video: X-H264UC under
        our number, or Lync's where Lync added the stream), our candidates and key."""
        media, ice, key = self.streams.media[index], self.sessions[index], self.keys[index]
        if ice is None:
            return _rejected(media)
        if media.media == "video":
            return self._lync_video(index, self.streams, media,
                                    self.lync_pts.get(index, LYNC_VIDEO_PT), key,
                                    remote_candidates=remote_candidates)
        body = lync_head(media.media, media.formats, ice, key,
                         remote_candidates=remote_candidates)
        body.add_attribute("label", f"main-{media.media}")
        for line in media.lines[1:]:
            if line.kind == "a" and line.attribute[0] in KEPT:
                body.lines.append(Line("a", line.value))
        body.add_attribute("sendrecv")
        if self.bandwidth_kbps:  # Lync reads its own attribute, not b=
            body.add_attribute("x-mediabw", str(MediaBandwidth(
                f"main-{media.media}", self.bandwidth_kbps, self.bandwidth_kbps)))
        cap_bandwidth(body, self.bandwidth_kbps)
        return body

    def answer(self, callee: Body, *, final: bool) -> Body:
        """The SIP caller's answer, from Lync's: Lync's codecs, the relay's ports, the
        offer's transport with our key where it gave one. A provisional's SDP (Lync's ICE
        and SRTP) is nothing the caller could use."""
        if not final:
            return b"", None
        answer = parse_sdp(callee[0])
        if len(answer.media) != len(self.streams.media):
            raise NotAcceptable(f"Lync answered {len(answer.media)} streams to "
                                f"{len(self.streams.media)} offered")
        self.lync_answer = answer
        self.dark[False].update(i for i, media in enumerate(answer.media) if media.rejected)
        seen = self.seen_by_caller
        family = "IP6" if ":" in seen else "IP4"
        session = Section([Line("v", "0"), Line("o", f"- 1 1 IN {family} {seen}"),
                           Line("s", "lyncgate"), Line("c", f"IN {family} {seen}"),
                           Line("t", "0 0")])
        streams = [self._caller_stream(index) for index in range(len(self.streams.media))]
        self.caller_answer = SessionDescription(session, streams)
        return self.caller_answer.to_bytes(), SDP

    def _caller_stream(self, index: int) -> Media:
        """Our answer to the caller's m= line `index`, from Lync's answer to it: Lync's
        codecs (translated video: the caller's own H264) at the relay's port."""
        assert self.lync_answer is not None
        offered, answered = self.streams.media[index], self.lync_answer.media[index]
        if self.sessions[index] is None:
            return _rejected(offered)
        video = offered.media == "video"
        if video and not answered.rejected and lync_pt_of(answered) is None:
            self._refuse_video("Lync answered no X-H264UC")
            return _rejected(offered)
        if answered.rejected:
            if video:
                self._refuse_video("Lync declined video")
            return _rejected(offered)
        port, keys = self.sip_ports[self.slots[index]], self.sip_keys[index]
        ours = None if keys is None else keys[1]
        if video:
            sip_pt, lync_pt = translated.h264_pm1(offered), lync_pt_of(answered)
            assert sip_pt is not None and lync_pt is not None
            return self._sip_video_answer(index, port, ours, self.streams, offered, sip_pt,
                                          self.lync_answer, answered, lync_pt)
        body = Media([Line("m", f"{offered.media} {port} {offered.proto} "
                                + " ".join(answered.formats))])
        if ours is not None:
            body.add_attribute("crypto", str(ours))
        for line in answered.lines[1:]:
            if line.kind == "a" and line.attribute[0] in KEPT:
                body.lines.append(Line("a", line.value))
        body.add_attribute("sendrecv")
        cap_bandwidth(body, self.bandwidth_kbps)
        return body

    async def connect(self, timeout: float) -> None:
        if self.lync_offer is None or self.lync_answer is None or self.caller_answer is None:
            raise IceError("no answer was negotiated")
        plans = [await self._stream_plan(index) for index, ice in enumerate(self.sessions)
                 if ice is not None]
        await self._run(plans, timeout)

    async def _stream_plan(self, index: int) -> StreamPlan | None:
        """How m= line `index` is relayed (None: one leg did not take it), Lync's ICE
        credentials and candidates given to its session."""
        assert self.lync_offer is not None and self.lync_answer is not None
        assert self.caller_answer is not None
        ice, offered = self.sessions[index], self.streams.media[index]
        answered, to_caller = self.lync_answer.media[index], self.caller_answer.media[index]
        remote = stream_remote(self.streams, offered)
        if ice is None or answered.rejected or to_caller.rejected or remote is None:
            return None
        await set_remote(ice, self.lync_answer, answered)
        key, sip_keys = self.keys[index], self.sip_keys[index]
        # Lync's key: its answer's to ours, or (a stream Lync added) its offer's that ours
        # answers; either way the one with our tag and suite (RFC 4568 5.1.3).
        cryptos = answered.cryptos()
        lync_key = None if key is None else answered_crypto(answered, key) or next(
            iter(cryptos), None)
        if key is not None and lync_key is None:
            raise IceError("Lync answered without a=crypto to our SRTP offer")
        video = self.videos.get(index)
        return StreamPlan(
            offered.media, ice, remote.rtp, remote.rtcp,
            lync_key_in=lync_key, lync_key_out=key,
            sip_key_in=sip_keys[0] if sip_keys else None,
            sip_key_out=sip_keys[1] if sip_keys else None,
            # Translated video has its payload types written by the translator.
            lync_pt_map={} if video else payload_remap(answered, to_caller, offered),
            sip_pt_map={} if video else payload_remap(
                offered, self.lync_offer.media[index], answered),
            video=video)

    # -- video added mid-call (AddsStreams) ---------------------------------------------
    # By the caller (its H264): Lync is re-offered X-H264UC, as in `offer`. By Lync (its
    # X-H264UC): the caller is re-offered H264, as a Lync caller's call offers the phone,
    # and its answer becomes the stream's line in `streams` (the caller's side of it), as
    # Lync's offer does in `lync_answer` (Lync's side). Either way we control ICE for it.
    def begin_adding(self, *, from_caller: bool, offer: SessionDescription) -> bool:
        """Whether the re-offer of the caller (`from_caller`) or of Lync adds video this
        side takes up, or offers it again on a line where it was removed or rejected."""
        if self.caller_answer is None or self.lync_answer is None:
            return False
        known = len(self.streams.media)
        if not self._take_added(offer, from_caller=from_caller,
                                refusal=None if from_caller else self._refusal_of_lync):
            return False
        # The lines to answer: those taken up, and any other the offer added (rejected).
        lines = sorted({*self.adding, *range(known, len(offer.media))})
        for index in self.adding:
            if index < known:  # a line offered again: not up until both legs answer it anew
                self.caller_answer.media[index] = _rejected(self.caller_answer.media[index])
        if from_caller:
            self.streams = offer
            self._keys_for(lines)
        else:
            streams = list(self.streams.media)
            for index in lines:
                put(streams, index, offer.media[index])
            self.streams = SessionDescription(self.streams.session, streams)
            self.lync_answer = offer
            for index in lines:
                theirs = (offered_crypto(offer.media[index], LYNC_ENCRYPTION)
                          if self.relays[index] else None)
                put(self.keys, index, None if theirs is None else answer_crypto(theirs))
                put(self.sip_keys, index, None)  # until the caller answers our offer of it
        self.lines = lines
        self.added_by_lync = not from_caller
        return True

    def added_offer(self, last: bytes) -> bytes:
        """The other leg's re-offer. Lync's: what it last had from us (the selected pairs
        as a=remote-candidates), next o= version, with X-H264UC for each added stream (our
        candidates and key, Lync's attributes for what the caller takes). The caller's:
        `last` (what it last had from us), next o= version, with H264 for each stream Lync
        added at its relay port."""
        if not self.added_by_lync:
            self.version += 1
            self.lync_offer = self._lync_offer(remote_candidates=True)
            return self.lync_offer.to_bytes()
        assert self.caller_answer is not None and self.lync_answer is not None
        description = restated(parse_sdp(last), {})
        self.caller_offered = {}  # ours to it, once it answers
        for index in self.lines:
            lync = self.lync_answer.media[index]
            stream = _rejected(lync)
            if index in self.adding:
                key = offer_crypto() if self.encryption == "required" else None
                stream = self._sip_video(self.lync_answer, lync,
                                         self.sip_ports[self.slots[index]],
                                         "RTP/AVP" if key is None else "RTP/SAVP")
                if key is not None:
                    stream.add_attribute("crypto", str(key))
                    self.offered_keys[index] = key
            put(description.media, index, stream)
            self.caller_offered[index] = stream
        return description.to_bytes()

    def added_answer(self, reply: bytes, last: bytes) -> tuple[bytes, bool]:
        """Ours to the leg that added the streams, from the other's answer (`reply`): what
        it last had from us (`last`), next o= version, each added stream accepted where the
        other leg took it, rejected otherwise."""
        assert self.caller_answer is not None and self.lync_offer is not None
        answer = parse_sdp(reply)
        if len(answer.media) != len(self.streams.media):
            raise NotAcceptable(f"{len(answer.media)} streams answered to "
                                f"{len(self.streams.media)} offered")
        ours = restated(parse_sdp(last), {})
        if self.added_by_lync:
            for index, offered in self.caller_offered.items():
                put(self.caller_answer.media, index, offered)
            added = [self._caller_took(answer, index) for index in self.lines]
            for index, media in zip(self.lines, added, strict=True):
                put(self.lync_offer.media, index, media)
            for media in ours.media:  # (named in our offers only, RFC 5245 9.1.2.2)
                media.remove_attribute("remote-candidates")
        else:
            self.lync_answer = answer
            added = [self._caller_stream(index) if index in self.adding
                     else _rejected(self.streams.media[index]) for index in self.lines]
            for index, media in zip(self.lines, added, strict=True):
                put(self.caller_answer.media, index, media)
        for index, media in zip(self.lines, added, strict=True):
            put(ours.media, index, media)
        return ours.to_bytes(), any(not media.rejected for media in added)

    def _caller_took(self, answer: SessionDescription, index: int) -> Media:
        """Our answer to Lync's added m= line `index`, from the caller's `answer` to our
        offer of it: X-H264UC (our candidates and key, Lync's attributes for what the caller
        takes) where the caller took H264 mode 1, rejected otherwise."""
        assert self.caller_answer is not None and self.lync_answer is not None
        lync, media = self.lync_answer.media[index], answer.media[index]
        sip_pt = translated.h264_pm1(media)
        ours = self.offered_keys.get(index)
        theirs = None if ours is None else answered_crypto(media, ours)
        why = ("" if index not in self.adding else
               "the SIP side declined video" if stream_remote(answer, media) is None else
               "the SIP side answered no H264 with packetization-mode=1" if sip_pt is None
               else "the SIP side answered our SRTP offer without a key"
               if ours is not None and theirs is None else "")
        if index not in self.adding or why:
            if why:
                self._refuse_video(why)
            self.caller_answer.media[index] = _rejected(media)
            return _rejected(lync)
        assert sip_pt is not None
        lync_pt = translated.x_h264uc(lync)
        assert lync_pt is not None  # else it was refused when taken up
        self.lync_pts[index] = lync_pt
        self.sip_keys[index] = None if ours is None or theirs is None else (theirs, ours)
        self.streams.media[index] = standalone(answer, media)
        self._video_plan(index, lync, lync_pt, media, sip_pt, translated.limits(
            answer, media, sip_pt, self.bandwidth_kbps))
        return self._lync_stream(index, remote_candidates=False)

    async def connect_added(self, timeout: float) -> None:
        """ICE for the added streams both legs took (we control and nominate), each joined
        to the relay with its plan; the others let go. `updated_offer` then names the new
        pairs to Lync."""
        plans: dict[int, StreamPlan] = {}
        answered = len(self.caller_answer.media) if self.caller_answer is not None else 0
        for index in self.adding:
            plan = await self._stream_plan(index) if index < answered else None
            if plan is not None:
                plans[index] = plan
        await self._connect_added(plans, timeout)

    def updated_offer(self) -> bytes | None:
        """The controlling agent's second offer: the same session with a=remote-candidates
        naming the selected pairs (RFC 5245 9.1.2.2)."""
        self.version += 1
        return self._lync_offer(remote_candidates=True).to_bytes()

    def relay_offer(self, *, from_caller: bool, body: bytes) -> bytes:
        raise NotAcceptable("offers are answered where ICE ends")

    def relay_answer(self, *, from_caller: bool, body: bytes) -> bytes:
        return body


def _rejected(media: Media) -> Media:
    return Media([Line("m", f"{media.media} 0 {media.proto} {media.formats[0]}")])

