"""The media of a call whose caller speaks ICE (a Lync/SfB client, its offer usually the
RFC 5245 part of a multipart body): the gateway terminates ICE itself (controlled: Lync
offered) and anchors the media.

1. `prepare()`: ICE gathered per audio/video stream, ports for the SIP side, and the
   offer the SIP side gets (Lync's codecs and payload types, no ICE, no Microsoft
   attributes, the rule's bandwidth cap): plain RTP, or SRTP with our key (SDES) when
   `sip_media_encryption` is "required".
2. `answer()`: with the SIP side's answer, the one application/sdp Lync gets back
   (sdp.offer_answer: common codecs, SRTP per policy, our candidates).
3. `connect()`: ICE checks; when pairs are selected the relay joins each stream, renumbering
   payload types the SIP side numbered differently. Lync's second INVITE (with
   a=remote-candidates) is answered like any refresh.

Streams Lync offers that the SIP side cannot carry (application sharing over TCP), or that
go beyond the rule's call capability, are left out of the SIP side's offer and rejected in
the answer to Lync with port 0.

Video is translated (sdp.video): Lync's X-H264UC reaches the SIP side as constrained-baseline
H264 (packetization-mode 1) at the level Lync receives; a SIP answer with that H264 makes
the answer to Lync accept X-H264UC with Lync's attributes (our SSRC range, x-caps for what
the SIP side takes). An x-rtvc1-only offer has its video refused.

Video Lync adds mid-call (its re-INVITE with a new m=video X-H264UC: `AddsStreams`): ICE
gathered for it and a relay port taken, the SIP side re-offered H264 there, Lync answered
with X-H264UC and our candidates and key for it once the SIP side took it, then ICE (Lync
controls) and the stream joined to the running relay. Video the SIP side adds (its H264):
Lync re-offered X-H264UC with our candidates and key, the SIP side answered with its H264
once Lync took it, then ICE (Lync still controls) and the stream joined. Video either leg
offers again on the m= line where it was removed or rejected (RFC 3264 8.1) is taken up
the same way on that line of both legs, with a new ICE session and relay port; not where
the SIP side has no line for it (Lync's video refused when the call was set up).
"""

from __future__ import annotations

from gateway.calls.ice_side import (
    DIRECTION,
    LYNC_ENCRYPTION,
    LYNC_VIDEO_PT,
    IceSide,
    lync_pt_of,
    put,
    set_remote,
    standalone,
)
from gateway.calls.media_side import Body
from gateway.media.backend import StreamPlan
from ice.errors import IceError
from ice.session import IceSession
from sdp import video as translated
from sdp.anchor import Remote, stream_remote
from sdp.attributes import Crypto
from sdp.capability import rejected
from sdp.errors import NotAcceptable
from sdp.hold import restated
from sdp.model import Line, Media, Section, SessionDescription
from sdp.offer_answer import (
    Answer,
    Codec,
    MediaPlan,
    Negotiated,
    answer,
    cap_bandwidth,
    payload_remap,
)
from sdp.parse import parse_sdp
from sdp.sdes import (
    answer_crypto,
    answered_crypto,
    offer_crypto,
    offered_crypto,
)
from sdp.standard import keep_formats, standard_audio

# Lync's offer lines the SIP side gets unchanged (codecs and direction).
KEPT = ("rtpmap", "fmtp", *DIRECTION, "ptime")
# What the answer to Lync states of a translated video stream in Lync's terms.
LYNC_VIDEO = ("rtpmap", "fmtp", "label", "x-source", "x-mediabw", "x-ssrc-range", "rtcp-fb",
              "rtcp-rsize", "x-caps")
SDP = "application/sdp"


def wants_ice(offer: SessionDescription) -> bool:
    return any(m.has("ice-ufrag") for m in offer.media) or offer.session.has("ice-ufrag")


class LyncCaller(IceSide):
    """`streams` is Lync's offer (the RFC 5245 part)."""

    controlling = False  # Lync offered
    lync_is_caller = True
    sip_offer: SessionDescription | None = None
    added_by_sip = False  # who added the streams being taken up
    sip_added: SessionDescription  # the SIP side's re-offer adding them
    lync_offered: dict[int, Media]  # per m= line the SIP side added, our offer to Lync
    negotiated: Answer | None = None
    # Per m= line toward the SIP side, the m= line of ours (Lync's) it carries: the relayed
    # streams in their order, then those taken up mid-call in the order they came (a line
    # refused at set-up and offered again among them: RFC 3264 lets lines be added at the
    # end only, so it cannot go where it sits in Lync's description).
    sip_lines: list[int]
    # Per relayed stream, our SIP-side key (None: plain RTP), as the SIP offer gave it.
    sip_keys: list[Crypto | None]
    # Per relayed stream, the SIP side's answer to it, where its media goes, and its key.
    _sip_answers: list[tuple[Media, Remote, Crypto | None] | None]

    def _components(self, media: Media) -> int:
        return 1 if media.has("rtcp-mux") else 2

    def _refusal(self, media: Media) -> str:
        reason = super()._refusal(media)
        if reason or media.media != "video" or media.rejected:
            return reason
        return translated.refusal(media, lync=True)

    def offer(self, caller: Body, toward: str) -> Body:
        """The SIP side's offer (once prepared): Lync's codecs toward the relay's ports.

        SRTP only when the policy requires it: "best_effort" offers plain RTP, because one
        m= line cannot offer SRTP and RTP both. An a=crypto on RTP/AVP is not standard
        (RFC 4568 defines it for SAVP; endpoints that do not speak it ignore it or refuse
        the offer), and offering both properly needs RFC 5939 capability negotiation, which
        few SIP endpoints implement."""
        self.sip_lines = [i for i, relays in enumerate(self.relays) if relays]
        relayed = [self.streams.media[i] for i in self.sip_lines]
        secure = self.encryption == "required"
        self.sip_keys = [offer_crypto() if secure else None for _ in relayed]
        family = "IP6" if ":" in toward else "IP4"
        session = Section([Line("v", "0"),
                           Line("o", f"- 1 1 IN {family} {toward}"),
                           Line("s", "lyncgate"), Line("c", f"IN {family} {toward}"),
                           Line("t", "0 0")])
        streams = [self._sip_stream(media, port, key) for media, port, key
                   in zip(relayed, self.sip_ports, self.sip_keys, strict=True)]
        self.sip_offer = SessionDescription(session, streams)
        return self.sip_offer.to_bytes(), SDP

    def _sip_stream(self, media: Media, port: int, key: Crypto | None) -> Media:
        """One of Lync's streams as the SIP side is offered it, at the relay's `port`."""
        proto = "RTP/AVP" if key is None else "RTP/SAVP"
        if media.media == "video":
            stream = self._sip_video(self.streams, media, port, proto)
        else:
            formats = standard_audio(media) if media.media == "audio" else media.formats
            if not formats:
                raise NotAcceptable("Lync offered no audio codec a SIP endpoint takes "
                                    "(G.722, G.711)")
            lines = [Line("m", f"{media.media} {port} {proto} {' '.join(formats)}")]
            lines += keep_formats([ln for ln in media.lines[1:]
                                   if ln.kind == "a" and ln.attribute[0] in KEPT], formats)
            stream = Media(lines)
        if key is not None:
            stream.add_attribute("crypto", str(key))
        cap_bandwidth(stream, self.bandwidth_kbps)
        return stream

    def answer(self, callee: Body, *, final: bool) -> Body:
        """Our answer to Lync, given the SIP side's answer: Lync gets our own SDP with the
        2xx, never the SIP side's (nor a provisional's early media)."""
        if not final:
            return b"", None
        sip = parse_sdp(callee[0])
        relayed = self.sip_lines
        if len(sip.media) > len(relayed):
            raise NotAcceptable(f"the SIP side answered {len(sip.media)} streams to "
                                f"{len(relayed)} offered")
        # Some endpoints answer fewer m= lines than offered: the missing ones are rejected.
        supported: dict[str, list[Codec]] = {}
        self._sip_answers = [self._sip_answered(sip, position, self.streams.media[index],
                                                supported)
                             for position, index in enumerate(relayed)]
        plans = [None if session is None or self._sip_answers[self._position(index)] is None
                 else self._plan(session) for index, session in enumerate(self.sessions)]
        # The SIP side's answer rejected the lines it did not take.
        self.dark[False].update(index for position, index in enumerate(relayed)
                                if self._sip_answers[position] is None)
        self.negotiated = answer(self.streams, supported, plans,
                                 encryption=LYNC_ENCRYPTION,
                                 bandwidth_kbps=self.bandwidth_kbps,
                                 origin_address=self.static_nat or self.address)
        self._translate_video(sip, relayed)
        return self.negotiated.sdp.to_bytes(), SDP

    def _sip_answered(self, sip: SessionDescription, position: int, offered: Media,
                      supported: dict[str, list[Codec]]
                      ) -> tuple[Media, Remote, Crypto | None] | None:
        """The SIP side's answer to its stream at `position` (Lync's `offered`): where its
        media goes and its key (None: it declined it), its codecs added to what Lync's
        answer may use."""
        media = sip.media[position] if position < len(sip.media) else None
        remote = None if media is None else stream_remote(sip, media)
        if media is None or remote is None or media.media != offered.media:
            if offered.media == "video":
                self._refuse_video("the SIP side declined video")
            return None
        ours = self.sip_keys[position]
        theirs = None if ours is None else answered_crypto(media, ours)
        if ours is not None and theirs is None:
            # Accepting our SRTP offer without a key is no answer RFC 4568 allows.
            raise NotAcceptable(f"the SIP side accepted {media.media} over SRTP without "
                                f"an a=crypto answering ours (tag {ours.tag} {ours.suite})")
        if media.media == "video":
            # Translated: the SIP side's H264 (mode 1) is Lync's X-H264UC.
            if translated.h264_pm1(media) is None:
                self._refuse_video("the SIP side answered no H264 with packetization-mode=1")
            else:
                supported.setdefault("video", []).append(
                    Codec(translated.X_H264UC, 90000, fmtp="packetization-mode=1"))
            return media, remote, theirs
        maps = media.rtpmaps()
        supported.setdefault(media.media, []).extend(
            Codec(m.encoding, m.clock_rate, m.channels or 1, media.fmtp(m.payload_type) or "")
            for pt, m in maps.items() if str(pt) in media.formats)
        return media, remote, theirs

    def _translate_video(self, sip: SessionDescription, relayed: list[int]) -> None:
        """Each video stream the answer accepts: stated to Lync in its terms, and planned
        for the relay with what the SIP side's answer says it takes."""
        for position, index in enumerate(relayed):
            self._answer_lync_video(sip, position, index)

    def _answer_lync_video(self, sip: SessionDescription, position: int, index: int) -> None:
        assert self.negotiated is not None
        stream, sip_answer = self.negotiated.streams[index], self._sip_answers[position]
        if stream.media != "video" or not stream.accepted or sip_answer is None:
            return
        sip_media = sip_answer[0]
        sip_pt = translated.h264_pm1(sip_media)
        assert sip_pt is not None  # else X-H264UC was not supported, nor accepted
        lync_pt = stream.codecs[0].payload_type
        taken = translated.limits(sip, sip_media, sip_pt, self.bandwidth_kbps)
        body = self.negotiated.sdp.media[index]
        for name in LYNC_VIDEO:
            body.remove_attribute(name)
        kbps = translated.video_kbps(taken.bitrate_bps // 1000, self.bandwidth_kbps)
        body.lines[:] = [body.lines[0], *translated.lync_lines(
            lync_pt, taken, self.ssrc_ranges[index], kbps), *body.lines[1:]]
        self._video_plan(index, self.streams.media[index], lync_pt, sip_media, sip_pt, taken)

    async def connect(self, timeout: float) -> None:
        """Run ICE toward Lync, then join each stream at the relay."""
        if self.negotiated is None or self.sip_offer is None:
            raise IceError("no answer was negotiated")
        plans = [await self._stream_plan(index, session)
                 for index, session in enumerate(self.sessions) if session is not None]
        await self._run(plans, timeout)

    async def _stream_plan(self, index: int, session: IceSession) -> StreamPlan | None:
        """How m= line `index` is relayed (None: one leg did not take it), Lync's ICE
        credentials and candidates given to its session."""
        assert self.negotiated is not None and self.sip_offer is not None
        position = self._position(index)  # the SIP side's m= line
        sip_offered = self.sip_offer.media[position]
        sip_answer = self._sip_answers[position]
        stream = self.negotiated.streams[index]
        if sip_answer is None or not stream.accepted:
            return None
        sip_answered, remote, sip_key_in = sip_answer
        offered = self.streams.media[index]
        await set_remote(session, self.streams, offered)
        video = self.videos.get(index)
        return StreamPlan(
            offered.media, session, remote.rtp, remote.rtcp,
            lync_key_in=stream.remote_crypto, lync_key_out=stream.local_crypto,
            sip_key_in=sip_key_in, sip_key_out=self.sip_keys[position],
            # Translated video has its payload types written by the translator.
            lync_pt_map={} if video else payload_remap(offered, sip_offered, sip_answered),
            sip_pt_map={} if video else payload_remap(
                sip_answered, self.negotiated.sdp.media[index], offered),
            video=video)

    # -- video added mid-call (AddsStreams) ---------------------------------------------
    # By Lync (its X-H264UC): the SIP side is re-offered H264, as in `offer`. By the SIP
    # side (its H264): Lync is re-offered X-H264UC, as a call toward a Lync callee offers
    # it, and Lync's answer becomes the stream's line in `streams` (Lync's side of it).
    # Lync controls ICE either way.
    def begin_adding(self, *, from_caller: bool, offer: SessionDescription) -> bool:
        """Whether the re-offer of Lync (`from_caller`) or of the SIP side adds video this
        side takes up, or offers it again on a line where it was removed or rejected."""
        if self.negotiated is None or self.sip_offer is None:
            return False
        if from_caller:
            if not self._take_added(offer, from_caller=True):
                return False
            self.streams = offer
        else:
            if not self._take_added(offer, from_caller=False, refusal=self._refusal_of_sip,
                                    lines=self.sip_lines):
                return False
        # Lines new toward the SIP side go after its others, in our order: lines it adds
        # are after ours and its own alike.
        self.sip_lines += [index for index in self.adding if index not in self.sip_lines]
        if not from_caller:
            # Until Lync answers, the SIP side's line, multiplexed as we offer it to Lync.
            streams = list(self.streams.media)
            for index in self.adding:
                put(streams, index, _muxed(offer.media[self._position(index)]))
            self.streams = SessionDescription(self.streams.session, streams)
            self.sip_added, self.lync_offered = offer, {}
        for index in self.adding:
            if index < len(self.negotiated.streams):
                # A line offered again: not taken up until both legs answer it anew.
                self.negotiated.streams[index] = Negotiated(index, "video", False)
                put(self._sip_answers, self._position(index), None)
        self.added_by_sip = not from_caller
        return True

    def _position(self, index: int) -> int:
        """The SIP side's m= line for our m= line `index`."""
        return self.sip_lines.index(index)

    def added_offer(self, last: bytes) -> bytes:
        """The other leg's re-offer: `last` (what it last had from us), next o= version,
        with the added streams: toward the SIP side H264 at each one's relay port; toward
        Lync X-H264UC with our candidates and key and Lync's attributes for what the SIP
        side takes."""
        assert self.sip_offer is not None
        description = restated(parse_sdp(last), {})
        secure = self.encryption == "required"
        for index in self.adding:
            position = self._position(index)
            if self.added_by_sip:
                stream = self._lync_video(
                    index, self.sip_added, self.sip_added.media[position],
                    LYNC_VIDEO_PT, offer_crypto(), remote_candidates=False)
                self.lync_offered[index] = stream
                put(description.media, index, stream)
            else:
                key = offer_crypto() if secure else None
                put(self.sip_keys, position, key)
                stream = self._sip_stream(self.streams.media[index],
                                          self.sip_ports[self.slots[index]], key)
                put(self.sip_offer.media, position, stream)
                put(description.media, position, stream)
        return description.to_bytes()

    def added_answer(self, reply: bytes, last: bytes) -> tuple[bytes, bool]:
        """Ours to the leg that added the streams, from the other's answer (`reply`): what
        it last had from us (`last`), next o= version, each added stream accepted where the
        other leg took it, rejected otherwise."""
        if not self.added_by_sip:
            return self._lync_added_answer(reply, last)
        assert self.negotiated is not None and self.sip_offer is not None
        answer = parse_sdp(reply)
        if len(answer.media) != len(self.streams.media):
            raise NotAcceptable(f"Lync answered {len(answer.media)} streams to "
                                f"{len(self.streams.media)} offered")
        ours = restated(parse_sdp(last), {})
        taken = False
        for index in self.adding:
            took = self._lync_took(answer, index)
            put(ours.media, self._position(index), took)
            taken = taken or not took.rejected
        return ours.to_bytes(), taken

    def _lync_took(self, answer: SessionDescription, index: int) -> Media:
        """Our answer to the SIP side's added stream (Lync's m= line `index`), from Lync's
        `answer` to our offer of it: the SIP side's own H264 at its relay port where Lync
        took X-H264UC with a key answering ours, rejected otherwise."""
        assert self.negotiated is not None and self.sip_offer is not None
        position = self._position(index)
        sip, lync, offered = (self.sip_added.media[position], answer.media[index],
                              self.lync_offered[index])
        [ours] = offered.cryptos()
        lync_pt, theirs = lync_pt_of(lync), answered_crypto(lync, ours)
        why = ("Lync declined video" if lync.rejected else
               "Lync answered no X-H264UC" if lync_pt is None else
               "Lync answered our SRTP offer without a key" if theirs is None else "")
        put(self.negotiated.sdp.media, index, offered)
        put(self.sip_keys, position, None)
        put(self._sip_answers, position, None)
        if why:
            self._refuse_video(why)
            put(self.negotiated.streams, index, Negotiated(index, "video", False, why))
            put(self.sip_offer.media, position, rejected(sip))
            return rejected(sip)
        assert lync_pt is not None
        sip_pt = translated.h264_pm1(sip)
        assert sip_pt is not None  # else it was refused when taken up
        self.streams.media[index] = standalone(answer, lync)
        put(self.negotiated.streams, index, Negotiated(index, "video", True, local_crypto=ours,
                                                       remote_crypto=theirs, rtcp_mux=True))
        sip_key = offered_crypto(sip, self.encryption)
        our_sip_key = None if sip_key is None else answer_crypto(sip_key)
        remote = stream_remote(self.sip_added, sip)
        assert remote is not None  # an added stream is not rejected
        self.sip_keys[position], self._sip_answers[position] = our_sip_key, (sip, remote,
                                                                              sip_key)
        body = self._sip_video_answer(index, self.sip_ports[self.slots[index]], our_sip_key,
                                      self.sip_added, sip, sip_pt, answer, lync, lync_pt)
        put(self.sip_offer.media, position, body)
        return body

    def _lync_added_answer(self, reply: bytes, last: bytes) -> tuple[bytes, bool]:
        """Lync's answer: what it last had from us, next o= version, each added stream
        accepted as X-H264UC (our candidates, credentials and key for it) where the SIP
        side's answer took H264, rejected otherwise."""
        assert self.negotiated is not None
        sip = parse_sdp(reply)
        # The lines answered: those taken up, and any other the offer added (rejected).
        lines = sorted({*self.adding, *range(len(self.negotiated.streams),
                                             len(self.streams.media))})
        supported: dict[str, list[Codec]] = {}
        plans: list[MediaPlan | None] = [None] * len(self.streams.media)
        for index in self.adding:
            position = self._position(index)
            put(self._sip_answers, position, self._sip_answered(
                sip, position, self.streams.media[index], supported))
            session = self.sessions[index]
            if self._sip_answers[position] is not None and session is not None:
                plans[index] = self._plan(session)
        try:
            added = answer(self.streams, supported, plans, encryption=LYNC_ENCRYPTION,
                           bandwidth_kbps=self.bandwidth_kbps,
                           origin_address=self.static_nat or self.address)
            streams = [added.streams[i] for i in lines]
            bodies = [added.sdp.media[i] for i in lines]
        except NotAcceptable:  # no added stream could be accepted
            streams = [Negotiated(i, self.streams.media[i].media, False) for i in lines]
            bodies = [rejected(self.streams.media[i]) for i in lines]
        ours = restated(parse_sdp(last), {})
        for index, stream, body in zip(lines, streams, bodies, strict=True):
            put(self.negotiated.streams, index, stream)
            put(self.negotiated.sdp.media, index, body)
            put(ours.media, index, body)
        for index in self.adding:
            self._answer_lync_video(sip, self._position(index), index)
        return ours.to_bytes(), any(s.accepted for s in streams)

    async def connect_added(self, timeout: float) -> None:
        """ICE for the added streams both legs took (Lync, controlling, checks against our
        answer), each joined to the relay with its plan; the others let go."""
        assert self.negotiated is not None
        plans: dict[int, StreamPlan] = {}
        for index in self.adding:
            session = self.sessions[index]
            answered = index < len(self.negotiated.streams)  # else the SIP side refused
            plan = (await self._stream_plan(index, session)
                    if session is not None and answered else None)
            if plan is not None:
                plans[index] = plan
        await self._connect_added(plans, timeout)

    def updated_offer(self) -> bytes | None:
        return None  # Lync, the controlling agent, sends the second offer itself

    def relay_offer(self, *, from_caller: bool, body: bytes) -> bytes:
        raise NotAcceptable("offers are answered where ICE ends")

    def relay_answer(self, *, from_caller: bool, body: bytes) -> bytes:
        return body


def _muxed(media: Media) -> Media:
    """`media` stating rtcp-mux (one ICE component), as our offers to Lync do."""
    muxed = Media(list(media.lines))
    if not muxed.has("rtcp-mux"):
        muxed.add_attribute("rtcp-mux")
    return muxed
