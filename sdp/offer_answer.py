"""RFC 3264 offer/answer: the answer to an offer given what the other side of the gateway can
take (no transcoding), the node's SRTP policy and a rule's bandwidth cap.

Every offered stream gets an m= line in the answer, in order; a stream with no common codec,
no media plan, or an SRTP requirement that cannot be met is rejected with port 0. An answer
that would reject everything is refused with 488 and the reason instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from sdp.attributes import Crypto, MediaBandwidth, RtpMap, parse_mediabw
from sdp.errors import NotAcceptable
from sdp.model import Line, Media, Section, SessionDescription
from sdp.sdes import Encryption, StreamRefused, answer_crypto, offered_crypto
from sdp.sdes import new_key as fresh_key

# Codecs that only make sense next to a real one.
AUXILIARY = frozenset({"telephone-event", "cn", "red", "x-ulpfecuc"})
ANSWER_DIRECTION = {"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly",
                    "inactive": "inactive"}


@dataclass(frozen=True, slots=True)
class Codec:
    """A codec the answer may contain: name and clock rate (and channels) must match; for
    H.264 flavours the packetization mode must too."""

    name: str
    clock_rate: int
    channels: int = 1
    fmtp: str = ""

    def accepts(self, offered: RtpMap, fmtp: str | None) -> bool:
        if offered.encoding.lower() != self.name.lower() or offered.clock_rate != (
            self.clock_rate
        ):
            return False
        if (offered.channels or 1) != self.channels:
            return False
        if self.name.lower() in ("h264", "x-h264uc"):
            return _param(fmtp or "", "packetization-mode", "0") == _param(
                self.fmtp, "packetization-mode", "0")
        return True


def _param(fmtp: str, name: str, default: str) -> str:
    for item in fmtp.split(";"):
        key, _, value = item.strip().partition("=")
        if key.lower() == name:
            return value.strip()
    return default


AUDIO = (
    Codec("SILK", 16000), Codec("SILK", 8000), Codec("G722", 8000), Codec("G722", 8000, 2),
    Codec("SIREN", 16000), Codec("G7221", 16000), Codec("G7221", 32000), Codec("PCMU", 8000),
    Codec("PCMA", 8000), Codec("RED", 8000), Codec("CN", 8000),
    Codec("telephone-event", 8000),
)
VIDEO = (
    Codec("X-H264UC", 90000, fmtp="packetization-mode=1"), Codec("H264", 90000,
                                                                 fmtp="packetization-mode=1"),
    Codec("H264", 90000), Codec("x-rtvc1", 90000),
)


@dataclass(frozen=True, slots=True)
class MediaPlan:
    """Where this side receives one stream, and its ICE credentials and candidates."""

    address: str
    port: int
    rtcp_port: int | None = None  # None with rtcp-mux
    ice_ufrag: str = ""
    ice_pwd: str = ""
    candidates: tuple[str, ...] = ()  # a= values: 'candidate:...', 'x-candidate-ipv6:...'


@dataclass(frozen=True, slots=True)
class Negotiated:
    """What one stream of the answer settled on (the media relay's input)."""

    index: int
    media: str
    accepted: bool
    reason: str = ""
    # offered payload type -> codec; the answer reuses the offerer's numbers
    codecs: tuple[RtpMap, ...] = ()
    remote_crypto: Crypto | None = None
    local_crypto: Crypto | None = None
    rtcp_mux: bool = False
    bandwidth_kbps: int = 0


@dataclass
class Answer:
    sdp: SessionDescription
    streams: list[Negotiated] = field(default_factory=list)


def answer(
    offer: SessionDescription,
    supported: Mapping[str, Sequence[Codec]],
    plans: Sequence[MediaPlan | None],
    *,
    encryption: Encryption = "best_effort",
    bandwidth_kbps: int = 0,
    origin_address: str,
    session_id: int = 0,
    new_key: Callable[[], str] | None = None,
) -> Answer:
    """Answer `offer`. `supported` maps a media type to the codecs the far side can take;
    `plans[i]` is where stream i is received (None: reject it)."""
    make_key = new_key or fresh_key
    session = Section([
        Line("v", "0"),
        Line("o", f"- {session_id} {session_id} IN {_ip(origin_address)} {origin_address}"),
        Line("s", "lyncgate"),
        Line("c", f"IN {_ip(origin_address)} {origin_address}"),
        Line("t", "0 0"),
    ])
    result = Answer(SessionDescription(session, []))
    for index, media in enumerate(offer.media):
        plan = plans[index] if index < len(plans) else None
        stream, lines = _answer_media(index, media, supported.get(media.media, ()), plan,
                                      encryption, bandwidth_kbps, make_key)
        result.streams.append(stream)
        result.sdp.media.append(Media(lines))
    if not any(s.accepted for s in result.streams):
        reasons = "; ".join(f"{s.media}: {s.reason}" for s in result.streams) or "no streams"
        raise NotAcceptable(f"no stream can be accepted ({reasons})")
    return result


def _answer_media(
    index: int, media: Media, codecs: Sequence[Codec], plan: MediaPlan | None,
    encryption: Encryption, cap: int, make_key: Callable[[], str],
) -> tuple[Negotiated, list[Line]]:
    def reject(reason: str) -> tuple[Negotiated, list[Line]]:
        first = media.formats[0]
        return (Negotiated(index, media.media, False, reason),
                [Line("m", f"{media.media} 0 {media.proto} {first}")])

    if media.rejected:
        return reject("rejected in the offer")
    if plan is None:
        return reject(f"no {media.media} on the other side")
    chosen = _common_codecs(media, codecs)
    if not any(c.encoding.lower() not in AUXILIARY for c in chosen):
        return reject("no codec in common")
    try:
        remote_crypto = offered_crypto(media, encryption)
    except StreamRefused as exc:
        return reject(exc.rule)
    lines = [Line("m", f"{media.media} {plan.port} {media.proto} "
                       + " ".join(str(c.payload_type) for c in chosen))]
    body = Media(lines)
    local_crypto = None
    if remote_crypto is not None:
        local_crypto = answer_crypto(remote_crypto, make_key)
        body.add_attribute("crypto", str(local_crypto))
    if plan.ice_ufrag:
        body.add_attribute("ice-ufrag", plan.ice_ufrag)
        body.add_attribute("ice-pwd", plan.ice_pwd)
        for candidate in plan.candidates:
            name, _, value = candidate.partition(":")
            body.add_attribute(name, value)
    mux = media.has("rtcp-mux") and plan.rtcp_port is None
    if mux:
        body.add_attribute("rtcp-mux")
    elif plan.rtcp_port is not None:
        body.add_attribute("rtcp", f"{plan.rtcp_port}")
    for bw in media.media_bandwidths():
        body.add_attribute("x-mediabw", str(MediaBandwidth(bw.media, bw.recv, bw.send)))
    for name in ("label", "x-source", "mid"):
        kept = media.attribute(name)
        if kept is not None:
            body.add_attribute(name, kept)
    for codec in chosen:
        body.add_attribute("rtpmap", str(codec))
        fmtp = media.fmtp(codec.payload_type)
        if fmtp is not None:
            body.add_attribute("fmtp", f"{codec.payload_type} {fmtp}")
    body.add_attribute(ANSWER_DIRECTION[media.direction or "sendrecv"])
    cap_bandwidth(body, cap)
    stream = Negotiated(index, media.media, True, "", tuple(chosen),
                        remote_crypto, local_crypto, mux, cap)
    return stream, body.lines


class BandwidthLimits(Protocol):
    """A routing rule's limits (routing.model.Rule), in kbps, 0 for none."""

    @property
    def max_inbound_bandwidth_kbps(self) -> int: ...

    @property
    def max_outbound_bandwidth_kbps(self) -> int: ...


def rule_cap(rule: BandwidthLimits | None) -> int:
    """The kbps each stream of a rule's call is held to (0: no limit). Without transcoding
    the gateway limits a stream only by asking its sender, and every packet it relays is
    received from one participant and sent to the other, so both of the rule's limits bind
    both directions: the lower one is the cap."""
    if rule is None:
        return 0
    limits = [k for k in (rule.max_inbound_bandwidth_kbps, rule.max_outbound_bandwidth_kbps)
              if k]
    return min(limits, default=0)


def cap_bandwidth(media: Media, kbps: int) -> None:
    """Hold a stream we describe to `kbps` (0: leave it as it is): b=AS (kbps, RFC 4566) and
    b=TIAS (bps, RFC 3890) ask the far side to send no more, Lync's x-mediabw states both
    directions. Lower values already there stay."""
    if not kbps:
        return
    media.set_bandwidth("AS", min(media.bandwidth("AS") or kbps, kbps))
    media.set_bandwidth("TIAS", min(media.bandwidth("TIAS") or kbps * 1000, kbps * 1000))
    for i, line in enumerate(media.lines):
        name, value = line.attribute
        if line.kind == "a" and name == "x-mediabw":
            bw = parse_mediabw(value or "")
            capped = MediaBandwidth(bw.media, min(bw.send, kbps), min(bw.recv, kbps))
            media.lines[i] = Line("a", f"x-mediabw:{capped}", line.number)


def payload_remap(receiver: Media, declared: Media, own: Media) -> dict[int, int]:
    """Payload types to renumber in packets relayed toward `receiver`, whose description
    numbers each codec the way it wants to receive it (RFC 3264 5.1). Their sender numbers
    them as `declared` says, the description the gateway gave it; some senders use the
    numbers of their `own` description anyway, so those are renumbered too, unless
    `declared` gives that number to another codec."""
    wanted: dict[tuple[str, int, int, str], int] = {}
    for pt, codec in _codecs(receiver).items():
        wanted.setdefault(codec, pt)
    proper = _codecs(declared)
    sent = {pt: codec for pt, codec in _codecs(own).items() if pt not in proper} | proper
    return {pt: wanted[codec] for pt, codec in sent.items()
            if codec in wanted and wanted[codec] != pt}


def _codecs(media: Media) -> dict[int, tuple[str, int, int, str]]:
    """Payload type -> what makes two numbers the same codec: name, clock rate, channels,
    and for H.264 flavours the packetization mode (as Codec.accepts compares them)."""
    maps = media.rtpmaps()
    out = {}
    for fmt in media.formats:
        if fmt.isdigit() and int(fmt) in maps:
            m = maps[int(fmt)]
            name = m.encoding.lower()
            mode = (_param(media.fmtp(m.payload_type) or "", "packetization-mode", "0")
                    if name in ("h264", "x-h264uc") else "")
            out[m.payload_type] = (name, m.clock_rate, m.channels or 1, mode)
    return out


def _common_codecs(media: Media, codecs: Sequence[Codec]) -> list[RtpMap]:
    """The offered codecs the far side takes, in the offer's order (RFC 3264 6.1)."""
    maps = media.rtpmaps()
    out = []
    for fmt in media.formats:
        if not fmt.isdigit() or int(fmt) not in maps:
            continue
        offered = maps[int(fmt)]
        if any(c.accepts(offered, media.fmtp(offered.payload_type)) for c in codecs):
            out.append(offered)
    return out


def _ip(address: str) -> str:
    return "IP6" if ":" in address else "IP4"
