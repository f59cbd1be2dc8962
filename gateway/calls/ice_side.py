"""What both Lync media sides share: an ICE session per relayed stream, gathered side by
side, the relay's ports toward the SIP leg, ICE checks, then the relay joined to the
selected pairs; and a `close` that may come at any point (a CANCEL during gathering), after
which whatever was still being reserved is released too and the waits raise IceError.

`LyncCaller` (the gateway answers a Lync offer: controlled) and `LyncCallee` (the gateway
offers to Lync: controlling) add the SDP each direction needs. Which streams of the offer
are relayed is settled when the side is made: audio and video within the rule's call
capability (and, for `LyncCallee`, whose SIP keys the policy accepts); the others are
rejected toward both legs, and an offer left with none is refused (488).

Video is translated between Lync's X-H264UC and a SIP endpoint's H264 (sdp.video): each
side fills a `VideoPlan` per translated stream for the relay, names the SSRCs it sends Lync
video with in the SDP toward Lync, and says for the CDR whether video came up and at what
size (`video`), or why it was refused.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from gateway import logs
from gateway.calls.video_word import flowed
from gateway.media.backend import BuiltinRelay, StreamPlan
from gateway.media.call import CallMedia
from gateway.media.video_plan import SipVideoLimits, VideoPlan
from ice.errors import IceError
from ice.ports import PortAllocator
from ice.session import IceSession, TurnSettings
from sdp import video as translated
from sdp.attributes import Crypto, SsrcRange
from sdp.capability import UNLIMITED, Capability, beyond, presentation, require_some
from sdp.model import Line, Media, SessionDescription
from sdp.offer_answer import MediaPlan, cap_bandwidth
from sdp.sdes import Encryption, StreamRefused, offered_crypto
from sdp.video import SSRC_RANGE_SIZE, Limits, takes_source_requests, takes_tmmbr

log = logs.get(__name__)
RELAYED = ("audio", "video")  # what the relay carries; other streams are rejected
DIRECTION = ("sendrecv", "sendonly", "recvonly", "inactive")
LYNC_VIDEO_PT = 122  # the number Lync 2013 and SfB give X-H264UC in their own offers
# `sip_media_encryption` is the SIP leg's: the Lync leg follows Lync, which requires SRTP
# unless its own policy says otherwise and refuses an unencrypted offer with 488. So Lync
# always gets our keys, and its offer is answered with SRTP whenever it carries keys.
LYNC_ENCRYPTION: Encryption = "best_effort"
T = TypeVar("T")


class IceSide:
    gathers = True
    connects = True
    answers_offers_here = True
    controlling: bool  # the ICE role: the offerer controls (RFC 8445 6.1.1)
    lync_is_caller: bool  # which leg is Lync's

    def __init__(self, streams: SessionDescription, ports: PortAllocator, address: str, *,
                 static_nat: str, encryption: Encryption,
                 turn: TurnSettings | None, stun: tuple[str, int] | None,
                 bandwidth_kbps: int, media_timeout: float, call_id: str,
                 capability: Capability = UNLIMITED, seen_by_caller: str = "") -> None:
        self.streams = streams  # the offer whose audio and video get ICE toward Lync
        self.ports = ports
        self.address = address  # where ICE and the relay bind
        # The node's address in SDP toward a SIP caller (static NAT: as the caller reaches it).
        self.seen_by_caller = seen_by_caller or address
        self.static_nat = static_nat
        self.encryption = encryption  # the SIP leg's SRTP policy
        self.turn = turn  # the rule's or location's TURN server (Lync Edge)
        self.stun = stun
        self.bandwidth_kbps = bandwidth_kbps  # the rule's cap (sdp.offer_answer.rule_cap)
        self.capability = capability
        self.media_timeout = media_timeout
        self.call_id = call_id
        self.sessions: list[IceSession | None] = []  # one per m= line, None: not relayed
        self.relay: BuiltinRelay | None = None
        self.sip_ports: list[int] = []  # the relay's ports toward the SIP leg
        self.media: CallMedia | None = None
        self.closed = False
        # Per m= line of `streams`, why it is not relayed ('': it is, unless the offer
        # rejected it).
        self.refused = [reason or self._refusal(media) for media, reason
                        in zip(streams.media, beyond(streams, capability), strict=True)]
        require_some(streams, self.refused)
        self.relays = [not r and not m.rejected for m, r in zip(streams.media, self.refused,
                                                                 strict=True)]
        # Per m= line, the SSRCs we send Lync with (video: the range named toward Lync).
        self.ssrc_ranges = [_ssrc_range() for _ in streams.media]
        self.videos: dict[int, VideoPlan] = {}  # per m= line, the video translated there
        # Per translated stream the relay joined, in its order (that of `video_stats`): its
        # plan, and (by place in that list) why it was stopped mid-call.
        self.joined: list[VideoPlan] = []
        self.stops: dict[int, str] = {}
        # Per relayed m= line, its place among the relay's streams and `sip_ports` (a line
        # offered again after its stream was removed gets a new one, after the others).
        self.slots: dict[int, int] = {}
        self.adding: list[int] = []  # m= lines a leg's re-offer adds, being taken up
        # Per leg (the caller's: True), the m= lines its last description rejected (port
        # 0): video it offers there again is a rejected line reused (RFC 3264 8.1), not a
        # refresh or a hold restating what it offered before.
        self.dark: dict[bool, set[int]] = {
            True: {i for i, media in enumerate(streams.media) if media.rejected},
            False: set()}
        self.video_refused = next((r for m, r in zip(streams.media, self.refused, strict=True)
                                   if m.media == "video" and r and not presentation(m)), "")
        if self.video_refused:
            log.info("video_refused", call_id=call_id, reason=self.video_refused)

    @property
    def video(self) -> str:
        """The CDR's word on video: what flowed each way (`video_word.flowed`: sizes from
        the SPS, frames, key frames, VSRs), "not up: ..." (negotiated, but ICE never
        completed), "refused: <why>", or "none". One account per translated stream the
        relay joined, joined by " | " (Lync sends one main video stream; one removed and
        offered again mid-call is a second), each ending with why it was stopped, if it
        was."""
        if self.media is None and self.videos:
            return " | ".join(f"not up: {_size(plan)} negotiated, ICE never completed"
                              for _, plan in sorted(self.videos.items()))
        if self.media is None or not self.joined:
            return f"refused: {self.video_refused}" if self.video_refused else "none"
        return " | ".join(flowed(stats, _size(plan)) + (
            f"; {self.stops[place]}" if place in self.stops else "") for place, (stats, plan)
            in enumerate(zip(self.media.video_stats(), self.joined, strict=False)))

    def stop_streams(self, kinds: frozenset[str], why: str) -> Coroutine[Any, Any, None]:
        """Stop the streams of `kinds` mid-call (a re-offer removed video): their ICE
        sessions close, so nothing more goes to or comes from Lync on them, and their
        relays stop (timers cancelled, SIP-side ports freed); the relay's counters stay for
        the CDR, which ends with `why`."""
        stopping = [i for i, (media, session) in enumerate(zip(
            self.streams.media, self.sessions, strict=True))
            if media.media in kinds and session is not None]
        log.info("streams_stopped", call_id=self.call_id, media=sorted(kinds), why=why)
        sessions = [self.sessions[i] for i in stopping]
        for i in stopping:
            self.sessions[i] = None
            self.dark[True].add(i)  # (the one leg offered it rejected, the other answered so)
            self.dark[False].add(i)
            plan = self.videos.pop(i, None)  # (its line may be offered again)
            self.stops.update({place: why for place, joined in enumerate(self.joined)
                               if joined is plan})
            if self.relay is not None:
                self.relay.stop_stream(self.slots[i])
        return _close_all(sessions)

    def _refuse_video(self, reason: str) -> None:
        """A video stream the answer could not take: said once, in the log and the CDR."""
        if not self.video_refused:
            self.video_refused = reason
            log.info("video_refused", call_id=self.call_id, reason=reason)

    def _video_plan(self, index: int, lync: Media, lync_pt: int, sip: Media, sip_pt: int,
                    limits: Limits) -> None:
        """The translated video of m= line `index`: Lync's `lync` stream and numbering, the
        SIP side's `sip` stream (its description: the phone's answer or offer) and
        numbering, what the SIP side takes."""
        ours = self.ssrc_ranges[index]
        theirs = lync.ssrc_range()
        self.videos[index] = VideoPlan(
            lync_pt, sip_pt, SipVideoLimits(limits.width, limits.height, limits.fps,
                                            limits.bitrate_bps),
            lync_ssrc_range=None if theirs is None else (theirs.first, theirs.last),
            lync_takes_vsr=takes_source_requests(lync), lync_send_ssrc=ours.first,
            sip_takes_tmmbr=takes_tmmbr(sip, sip_pt))

    @property
    def relayed(self) -> CallMedia | None:
        return self.media

    def reserve(self) -> None:
        return None  # the relay's ports come with gathering, in prepare()

    def _refusal(self, media: Media) -> str:
        """Why this side does not relay `media` ('': it does); raises NotAcceptable when the
        whole offer must be refused for it."""
        return "" if media.media in RELAYED else "not relayed by the gateway"

    def _session(self, media: Media) -> IceSession:
        # No MS-ICE2 hint: a peer that speaks RFC 5389 must not get MS-ICE2 signatures; an
        # MS-ICE2 one is recognised by its own first check, and answered in its form.
        return IceSession(
            controlling=self.controlling, components=self._components(media),
            address=self.address, ports=self.ports, static_nat_address=self.static_nat,
            stun_server=self.stun, turn=self.turn)

    async def prepare(self) -> None:
        self.relay = BuiltinRelay(self.ports)
        self.slots = {index: place for place, index in enumerate(
            i for i, relays in enumerate(self.relays) if relays)}
        self.sessions = [self._session(media) if relays else None
                         for media, relays in zip(self.streams.media, self.relays, strict=True)]
        try:
            # Side by side: a STUN or TURN server that does not answer costs its timeout
            # once, not once per stream, before the other leg gets its INVITE.
            await asyncio.gather(*(_gather(media.media, session) for media, session
                                   in zip(self.streams.media, self.sessions, strict=True)
                                   if session is not None))
            self.sip_ports = await self.relay.reserve(self.address, self._sip_streams(),
                                                      rtcp_mux=False)
            if self.closed:
                raise IceError("the call ended while its media was being prepared")
        except BaseException:
            await self.close()  # again if the call closed it: frees what came after
            raise

    def _take_added(self, offer: SessionDescription, *, from_caller: bool,
                    refusal: Callable[[Media], str] | None = None,
                    lines: list[int] | None = None) -> bool:
        """Whether `offer` (a leg's re-offer, from the caller's leg or the callee's)
        brings video this side relays on m= lines that are not up: lines after the first
        `lines` (by default as many as ours), added, and one of those that the leg's last
        description rejected, offered again (RFC 3264 8.1: a rejected or removed line
        reused); the leg's rejected lines are kept up to date with every offer of its.
        `lines`: the m= line of ours each of the offer's first lines is, one for
        one unless given; `refusal`: why this side would not relay one of them (by default
        `_refusal`). If so, `adding` names them: added lines join the per-stream lists
        after ours (the others rejected, as for the call's own), lines offered again take
        a new SSRC range there, and the caller makes `streams` hold them. Where the offer's
        lines are not ours one for one (the SIP side of a Lync caller's call sees only the
        relayed streams, `LyncCaller.sip_lines`), all it adds must be taken up, so that
        each of its lines stays one of ours."""
        ours = len(self.streams.media)
        lines = list(range(ours)) if lines is None else lines
        known = len(lines)
        dark, other = self.dark[from_caller], self.dark[not from_caller]
        offered = list(zip(range(len(offer.media)), lines, strict=False))
        again = [(p, index) for p, index in offered
                 if index in dark and self._offered_again(index, offer.media[p])]
        dark.difference_update(index for p, index in offered if not offer.media[p].rejected)
        dark.update(index for p, index in offered if offer.media[p].rejected)
        if self.adding or self.media is None:
            return False
        new = again + [(known + k, ours + k) for k in range(len(offer.media) - known)]
        if not new:
            return False
        capability = beyond(offer, self.capability)
        refused: dict[int, str] = {}
        for p, index in new:
            media = offer.media[p]
            refused[index] = capability[p] or (refusal or self._refusal)(media)
            if media.media == "video" and refused[index] and not presentation(media):
                if index < ours:
                    log.info("video_offered_again_declined", call_id=self.call_id,
                             line=index, reason=refused[index])
                self._refuse_video(refused[index])
        relays = {index: offer.media[p].media == "video" and not refused[index]
                  and not offer.media[p].rejected for p, index in new}
        if not any(relays.values()) or (known != ours and not all(
                relays[index] for index in range(ours, ours + len(offer.media) - known))):
            return False
        for index in range(ours, ours + len(offer.media) - known):
            self.refused.append(refused[index])
            self.relays.append(relays[index])
            self.ssrc_ranges.append(_ssrc_range())
            self.sessions.append(None)
        for _, index in again:
            if relays[index]:
                self.refused[index], self.relays[index] = "", True
                self.ssrc_ranges[index] = _ssrc_range()
        self.adding = sorted(index for index, relayed in relays.items() if relayed)
        other.update(self.adding)  # until it takes them up
        return True

    def _offered_again(self, index: int, media: Media) -> bool:
        """Whether `media` offers video again on our m= line `index` (one the offering
        leg last rejected), whose video stream is not up (removed mid-call, or rejected by
        either leg)."""
        return (media.media == "video" and not media.rejected and not presentation(media)
                and self.streams.media[index].media == "video" and index not in self.videos)

    def _refusal_of_lync(self, media: Media) -> str:
        """Why a stream Lync adds mid-call is not relayed ('': it is)."""
        return self._added_refusal(media, lync=True)

    def _refusal_of_sip(self, media: Media) -> str:
        """Why a stream the SIP side adds mid-call is not relayed ('': it is)."""
        return self._added_refusal(media, lync=False)

    def _added_refusal(self, media: Media, *, lync: bool) -> str:
        reason = IceSide._refusal(self, media)
        if reason or media.rejected or media.media != "video":
            return reason
        try:
            offered_crypto(media, LYNC_ENCRYPTION if lync else self.encryption)
        except StreamRefused as exc:
            return exc.rule
        return translated.refusal(media, lync=lync)

    def _sip_video(self, lync: SessionDescription, media: Media, port: int,
                   proto: str) -> Media:
        """Lync's X-H264UC `media` (of its description `lync`) as the SIP side is offered
        it: H264 under Lync's number, at the level Lync receives, b=AS at what Lync takes
        (or Lync's usual) within the cap."""
        pt = translated.x_h264uc(media)
        assert pt is not None  # a stream without it is refused when it is taken up
        level = translated.level_for(*translated.lync_receives(lync, media))
        stream = Media([Line("m", f"video {port} {proto} {pt}"),
                        *translated.sip_lines(pt, level, tmmbr=True),
                        *(ln for ln in media.lines[1:]
                          if ln.kind == "a" and ln.attribute[0] in DIRECTION)])
        stream.set_bandwidth("AS", translated.video_kbps(
            translated.lync_kbps(lync, media), self.bandwidth_kbps))
        return stream

    def _lync_video(self, index: int, sip: SessionDescription, media: Media, lync_pt: int,
                    key: Crypto | None, *, remote_candidates: bool) -> Media:
        """The SIP side's H264 `media` (of its description `sip`) as Lync gets it on m= line
        `index`: X-H264UC under `lync_pt` at our candidates with our `key`, Lync's
        attributes, x-caps and x-mediabw for what the SIP side says it takes (within the
        cap)."""
        session = self.sessions[index]
        assert session is not None
        pt = translated.h264_pm1(media)
        assert pt is not None  # a stream without it is refused when it is taken up
        taken = translated.limits(sip, media, pt, self.bandwidth_kbps)
        kbps = translated.video_kbps(taken.bitrate_bps // 1000, self.bandwidth_kbps)
        body = lync_head("video", [str(lync_pt)], session, key,
                         remote_candidates=remote_candidates)
        body.lines += translated.lync_lines(lync_pt, taken, self.ssrc_ranges[index], kbps)
        body.add_attribute("sendrecv")
        cap_bandwidth(body, self.bandwidth_kbps)
        return body

    def _sip_video_answer(self, index: int, port: int, key: Crypto | None,
                          sip: SessionDescription, sip_media: Media, sip_pt: int,
                          lync: SessionDescription, lync_media: Media, lync_pt: int) -> Media:
        """Our answer at the relay's `port` (with our `key`) to the SIP side's H264 offer
        (`sip_media`, in `sip`) given Lync's X-H264UC (`lync_media`, in `lync`): its own
        H264 number, constrained baseline at the lower of the level it offered and what
        Lync receives (no level asymmetry), TMMBR only if it offered it, b=AS at what Lync
        takes; and the relay's plan for m= line `index`."""
        receives = translated.lync_receives(lync, lync_media)
        level = translated.lower(translated.level_of(sip_media.fmtp(sip_pt) or ""),
                                 translated.level_for(*receives))
        taken = translated.limits(sip, sip_media, sip_pt, self.bandwidth_kbps)
        self._video_plan(index, lync_media, lync_pt, sip_media, sip_pt, taken)
        body = Media([Line("m", f"video {port} {sip_media.proto} {sip_pt}")])
        if key is not None:
            body.add_attribute("crypto", str(key))
        body.lines += translated.sip_lines(sip_pt, level,
                                           tmmbr=translated.takes_tmmbr(sip_media, sip_pt))
        body.set_bandwidth("AS", translated.video_kbps(translated.lync_kbps(lync, lync_media),
                                                       self.bandwidth_kbps))
        body.add_attribute("sendrecv")
        cap_bandwidth(body, self.bandwidth_kbps)
        return body

    def sip_video_kbps(self, *, from_caller: bool, offer: SessionDescription) -> int | None:
        """What Lync's re-offer says it receives for main video, within the rule's cap,
        as the SIP side's b=AS (the same bound its first description got)."""
        if from_caller is not self.lync_is_caller:
            return None
        video = next((m for m in offer.media if m.media == "video" and not m.rejected), None)
        kbps = None if video is None else translated.lync_kbps(offer, video)
        return None if kbps is None else translated.video_kbps(kbps, self.bandwidth_kbps)

    async def prepare_added(self) -> None:
        """ICE gathered and relay ports taken for the added streams, as `prepare` does for
        the call's; on failure they are let go again."""
        assert self.relay is not None
        retired = [self.sessions[index] for index in self.adding]
        for index in self.adding:
            if self.sessions[index] is not None and index in self.slots:
                # A line offered again whose stream was never joined (a leg rejected it):
                # its ICE session and relay port make way for new ones.
                self.relay.stop_stream(self.slots.pop(index))
            self.sessions[index] = self._session(self.streams.media[index])
        try:
            await _close_all(retired)
            await asyncio.gather(*(_gather(self.streams.media[i].media, session)
                                   for i in self.adding
                                   if (session := self.sessions[i]) is not None))
            first = len(self.sip_ports)
            self.sip_ports += await self.relay.reserve(self.address, len(self.adding),
                                                       rtcp_mux=False)
            self.slots.update({index: first + k for k, index in enumerate(self.adding)})
            if self.closed:
                raise IceError("the call ended while added streams were being prepared")
        except BaseException:
            await self._let_go(self.adding)
            raise

    async def _connect_added(self, plans: dict[int, StreamPlan], timeout: float) -> None:
        """ICE for the added streams with a plan (both legs took them), each joined to
        the running relay; the others, or all on failure, let go."""
        assert self.relay is not None
        adding, self.adding = self.adding, []
        try:
            await asyncio.gather(*(plan.ice.connect(timeout)
                                   for plan in plans.values()))
            if self.closed:
                raise IceError("the call ended while ICE ran for added streams")
        except BaseException:
            await self._let_go(adding)
            raise
        for index, plan in plans.items():
            self.relay.add_stream(self.slots[index], plan)
            self.dark[True].discard(index)
            self.dark[False].discard(index)
            if plan.video is not None:
                self.joined.append(plan.video)
        log.info("ice_connected", call_id=self.call_id, streams=len(plans), added=True,
                 pairs=_pairs(list(plans.values())))
        await self._let_go([i for i in adding if i not in plans])

    async def _let_go(self, indexes: list[int]) -> None:
        """Added streams not taken up after all: their ICE sessions closed, their relay
        ports freed, their video plans dropped."""
        sessions = [self.sessions[i] for i in indexes]
        for index in indexes:
            self.sessions[index] = None
            self.videos.pop(index, None)
            if self.relay is not None and index in self.slots:
                self.relay.stop_stream(self.slots[index])
        self.adding = [i for i in self.adding if i not in indexes]
        await _close_all(sessions)

    def _components(self, media: Media) -> int:
        return 1

    @staticmethod
    def _plan(session: IceSession) -> MediaPlan:
        """Where Lync sends a stream: our default candidates and ICE credentials."""
        default = session.default_candidate(1)
        rtcp = None if session.components == 1 else session.default_candidate(2).port
        return MediaPlan(default.address, default.port, rtcp, session.ufrag, session.pwd,
                         tuple(session.candidate_attributes()))

    def _sip_streams(self) -> int:
        """How many relay ports toward the SIP leg: one for each stream relayed."""
        return sum(self.relays)

    async def _run(self, plans: list[StreamPlan | None], timeout: float) -> None:
        """ICE checks on every planned stream, then the relay joins the selected pairs."""
        assert self.relay is not None
        live = [p for p in plans if p is not None]
        await asyncio.gather(*(p.ice.connect(timeout) for p in live))
        if self.closed:
            raise IceError("the call ended while ICE was running")
        self.media = self.relay.connect(plans, self.media_timeout)
        self.joined = [p.video for p in live if p.video is not None]
        log.info("ice_connected", call_id=self.call_id, streams=len(live),
                 role="controlling" if self.controlling else "controlled",
                 pairs=_pairs(live))

    def close(self) -> Coroutine[Any, Any, None]:
        self.closed = True
        if self.relay is not None:
            self.relay.close()
        return self._close_sessions()

    async def _close_sessions(self) -> None:
        await _close_all(self.sessions)


def _size(plan: VideoPlan) -> str:
    return f"{plan.limits.width}x{plan.limits.height}"


def put(items: list[T], index: int, item: T) -> None:
    """`item` at `index` of `items`: in place of what is there (a line offered again), or
    after the last (a line added)."""
    if index < len(items):
        items[index] = item
    else:
        items.append(item)


def _pairs(plans: list[StreamPlan]) -> list[str]:
    return [f"{s.local.address}:{s.local.port}->{s.remote.address}:{s.remote.port}"
            for p in plans for s in p.ice.selected]


def lync_head(kind: str, formats: list[str], ice: IceSession, key: Crypto | None, *,
              remote_candidates: bool) -> Media:
    """The start of a stream of ours toward Lync: its m= line at our default candidate,
    our credentials and candidates (the selected pair too, in an offer of the controlling
    agent once checks are done), our key, rtcp-mux."""
    proto = "RTP/AVP" if key is None else "RTP/SAVP"
    body = Media([Line("m", f"{kind} {ice.default_candidate(1).port} {proto} "
                            + " ".join(formats))])
    body.add_attribute("ice-ufrag", ice.ufrag)
    body.add_attribute("ice-pwd", ice.pwd)
    for attribute in ice.candidate_attributes():
        name, _, value = attribute.partition(":")
        body.add_attribute(name, value)
    if remote_candidates and ice.selected:
        body.add_attribute(*ice.remote_candidates_attribute().split(":", 1))
    if key is not None:
        body.add_attribute("crypto", str(key))
    body.add_attribute("rtcp-mux")
    return body


def lync_pt_of(answered: Media) -> int | None:
    """Lync's X-H264UC in its answer: as its rtpmap names it, or our own number answered
    with no rtpmap (which can only mean what we offered under it)."""
    named = translated.x_h264uc(answered)
    if named is None and str(LYNC_VIDEO_PT) in answered.formats and (
            LYNC_VIDEO_PT not in answered.rtpmaps()):
        return LYNC_VIDEO_PT
    return named


def standalone(description: SessionDescription, media: Media) -> Media:
    """`media` with what it inherits from `description` (c=, ICE credentials) stated on
    it, so that it still says where the stream goes once kept apart from that
    description."""
    kept = Media(list(media.lines))
    if kept.connection_address is None:
        for value in description.session.values("c"):
            kept.insert(Line("c", value))
    for name in ("ice-ufrag", "ice-pwd"):
        inherited = description.session.attribute(name)
        if inherited is not None and not kept.has(name):
            kept.add_attribute(name, inherited)
    return kept


async def _close_all(sessions: list[IceSession | None]) -> None:
    await asyncio.gather(*(s.close() for s in sessions if s is not None))


def _ssrc_range() -> SsrcRange:
    first = secrets.randbelow(2**32 - SSRC_RANGE_SIZE)
    return SsrcRange(first, first + SSRC_RANGE_SIZE - 1)


async def set_remote(session: IceSession, sdp: SessionDescription, media: Media) -> None:
    """Give `session` the peer's credentials and candidates from its SDP for `media` (the
    media section's, else the session's: Lync writes them either way)."""
    ufrag = media.attribute("ice-ufrag") or sdp.session.attribute("ice-ufrag") or ""
    pwd = media.attribute("ice-pwd") or sdp.session.attribute("ice-pwd") or ""
    await session.set_remote(ufrag, pwd, [f"candidate:{c}" for c in media.attributes("candidate")]
                             + [f"x-candidate-ipv6:{c}"
                                for c in media.attributes("x-candidate-ipv6")])


async def _gather(media: str, session: IceSession) -> None:
    await session.gather()
    for problem in session.stats.problems:
        log.warning("ice_gathering_problem", media=media, problem=problem)
    log.info("ice_gathered", media=media,
             candidates=[f"{c.type} {c.address}:{c.port}" for c in session.local_candidates()])
