"""Video between Lync/SfB and standard SIP endpoints, as SDP: Lync's `X-H264UC`
([MS-H264PF]) on one side, RFC 6184 `H264` with packetization-mode 1 on the other. The
relay translates one into the other (its base layer is constrained-baseline AVC), so the
two are different codecs in SDP and each side is described in its own terms:

- toward a SIP endpoint, `H264` with a constrained-baseline profile-level-id (what Lync
  decodes), packetization-mode 1, PLI/FIR feedback, TMMBR (RFC 5104) when offering or
  when the endpoint offered it (`takes_tmmbr`), and a `b=AS`;
- toward Lync, `X-H264UC` with what [MS-SDPEXT] asks of a main video stream: Lync's own
  rtcp-fb (source requests and PLI both ways), rtcp-rsize, the label, our SSRC range, the
  resolutions the SIP side can take (`x-caps`) and the bandwidth (`x-mediabw`);
- `limits()`: what a SIP endpoint's description says it can take (H.264 Table A-1 from its
  level, RFC 6184 max-fs/max-mbps, RFC 6236 imageattr, b=AS/b=TIAS, the rule's cap), which
  the relay's Video Source Requests ask Lync for.

RTVideo (`x-rtvc1`) would need transcoding: a Lync stream without X-H264UC is refused.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass

from sdp.attributes import (
    MediaBandwidth,
    RtcpFeedback,
    SsrcRange,
    parse_mediabw,
    parse_rtcp_fb,
    parse_x_caps,
)
from sdp.model import Line, Media, SessionDescription

H264, X_H264UC = "h264", "x-h264uc"
CLOCK = 90000
# Constrained baseline: profile_idc 66 (0x42) with constraint_set0..2 (0xe0), which is what
# Lync's base layer is and what any H.264 endpoint decodes.
CONSTRAINED_BASELINE = "42e0"
LYNC_FMTP = "packetization-mode=1;mst-mode=NI-TC"  # as Lync 2013 and SfB write it
# [MS-SDPEXT] rtcp-fb for main video: Video Source Requests (src) and PLI, sent and taken.
LYNC_FEEDBACK = "x-message app send:src,x-pli recv:src,x-pli"
LABEL = "main-video"
SSRC_RANGE_SIZE = 100  # as Lync declares for its own video
# Lync 2013 and SfB clients list 1920x1080 at 30 fps as the most they receive (x-caps).
LYNC_RECEIVES = (1920, 1080, 30.0)
# What Lync 2013 states for its main video when a description gives nothing to go by
# (a=x-mediabw:main-video send=4000;recv=4000).
LYNC_VIDEO_KBPS = 4000
MAX_FPS = 30.0
MIN_FPS = 15.0  # a larger picture is chosen only if the level still allows this rate
# Sizes the SIP side is asked for, largest first: Lync's own x-caps list and the 16:9 steps
# between (its VSR asks for any of them).
SIZES = ((1920, 1080), (1280, 720), (960, 540), (640, 480), (640, 360), (424, 240),
         (352, 288), (320, 180), (176, 144))


@dataclass(frozen=True, slots=True)
class Level:
    """One row of H.264 Table A-1: macroblocks per second and per frame, and the bit rate
    (kbps, Baseline's VCL factor)."""

    name: str
    idc: int
    max_mbps: int
    max_fs: int
    max_br_kbps: int


LEVELS = (
    Level("1", 10, 1485, 99, 64), Level("1b", 11, 1485, 99, 128),
    Level("1.1", 11, 3000, 396, 192), Level("1.2", 12, 6000, 396, 384),
    Level("1.3", 13, 11880, 396, 768), Level("2", 20, 11880, 396, 2000),
    Level("2.1", 21, 19800, 792, 4000), Level("2.2", 22, 20250, 1620, 4000),
    Level("3", 30, 40500, 1620, 10000), Level("3.1", 31, 108000, 3600, 14000),
    Level("3.2", 32, 216000, 5120, 20000), Level("4", 40, 245760, 8192, 20000),
    Level("4.1", 41, 245760, 8192, 50000), Level("4.2", 42, 522240, 8704, 50000),
    Level("5", 50, 589824, 22080, 135000), Level("5.1", 51, 983040, 36864, 240000),
    Level("5.2", 52, 2073600, 36864, 240000),
)


@dataclass(frozen=True, slots=True)
class Limits:
    """The most a SIP endpoint takes: picture size, frame rate, bit rate."""

    width: int
    height: int
    fps: float
    bitrate_bps: int


def fmtp_param(fmtp: str, name: str) -> str | None:
    for item in fmtp.split(";"):
        key, _, value = item.strip().partition("=")
        if key.strip().lower() == name:
            return value.strip()
    return None


def h264_pm1(media: Media) -> int | None:
    """The first payload type of `media` that is RFC 6184 H264 with packetization-mode 1."""
    return _first(media, H264)


def x_h264uc(media: Media) -> int | None:
    """The first payload type of `media` that is Lync's X-H264UC with packetization-mode
    1 (the only mode [MS-H264PF] defines)."""
    return _first(media, X_H264UC)


def _first(media: Media, encoding: str) -> int | None:
    maps = media.rtpmaps()
    for fmt in media.formats:
        rtpmap = maps.get(int(fmt)) if fmt.isdigit() else None
        if (rtpmap is not None and rtpmap.encoding.lower() == encoding
                and rtpmap.clock_rate == CLOCK
                and fmtp_param(media.fmtp(rtpmap.payload_type) or "",
                               "packetization-mode") == "1"):
            return rtpmap.payload_type
    return None


def refusal(media: Media, *, lync: bool) -> str:
    """Why a video stream cannot be translated ('' when it can): a Lync offer needs
    X-H264UC, a SIP offer H264 packetization-mode 1."""
    if lync:
        if x_h264uc(media) is not None:
            return ""
        names = {m.encoding.lower() for m in media.rtpmaps().values()}
        if "x-rtvc1" in names:
            return "x-rtvc1 only (RTVideo needs transcoding)"
        return "no X-H264UC with packetization-mode=1"
    if h264_pm1(media) is not None:
        return ""
    return "no H264 with packetization-mode=1 (Lync takes no other video untranscoded)"


def level_of(fmtp: str) -> Level:
    """The level an H264 fmtp's profile-level-id names (RFC 6184 8.1: level 1 when it has
    none; 1b as level_idc 11 with constraint_set3 in Baseline, Main or Extended, or 9)."""
    text = fmtp_param(fmtp, "profile-level-id") or "42000a"
    try:
        value = int(text, 16)
    except ValueError:
        return LEVELS[0]
    profile, iop, idc = value >> 16, (value >> 8) & 0xFF, value & 0xFF
    if idc == 9 or (idc == 11 and iop & 0x10 and profile in (66, 77, 88)):
        return LEVELS[1]
    known = [level for level in LEVELS if level.idc == idc and level.name != "1b"]
    return known[0] if known else LEVELS[0]


def level_for(width: int, height: int, fps: float) -> Level:
    """The lowest level that carries `width`x`height` at `fps` (the highest if none)."""
    mbs = _macroblocks(width, height)
    side = max(math.ceil(width / 16), math.ceil(height / 16))
    for level in LEVELS:
        if (level.name != "1b" and mbs <= level.max_fs and mbs * fps <= level.max_mbps
                and side * side <= 8 * level.max_fs):
            return level
    return LEVELS[-1]


def _macroblocks(width: int, height: int) -> int:
    return math.ceil(width / 16) * math.ceil(height / 16)


def limits(description: SessionDescription, media: Media, payload_type: int,
           cap_kbps: int = 0) -> Limits:
    """What the SIP endpoint that wrote `media` takes for `payload_type` (its H264): the
    largest of SIZES its level (raised by max-fs/max-mbps, RFC 6184 8.1) and imageattr
    allow at MIN_FPS or more (else the smallest that fits at all), the frame rate its level
    allows at that size (up to MAX_FPS), and the lowest bit rate of b=AS, b=TIAS, the
    rule's cap and its level."""
    fmtp = media.fmtp(payload_type) or ""
    level = level_of(fmtp)
    max_fs = max(level.max_fs, _int(fmtp_param(fmtp, "max-fs")))
    max_mbps = max(level.max_mbps, _int(fmtp_param(fmtp, "max-mbps")))
    bounds = image_bounds(media, payload_type)
    fitting = []
    for width, height in SIZES:
        mbs = _macroblocks(width, height)
        side = max(math.ceil(width / 16), math.ceil(height / 16))
        if mbs > max_fs or side * side > 8 * max_fs:
            continue
        if bounds and not any(width <= w and height <= h for w, h in bounds):
            continue
        fitting.append((width, height, min(MAX_FPS, max_mbps / mbs)))
    good = [size for size in fitting if size[2] >= MIN_FPS]
    width, height, fps = (good or fitting[-1:] or [(176, 144, MIN_FPS)])[0]
    kbps = [level.max_br_kbps]
    kbps += [k for k in (media.bandwidth("AS"), description.session.bandwidth("AS"),
                         cap_kbps) if k]
    tias = media.bandwidth("TIAS")
    if tias:
        kbps.append(tias // 1000)
    return Limits(width, height, round(fps, 2), min(kbps) * 1000)


def _int(text: str | None) -> int:
    return int(text) if text and text.isdigit() else 0


def image_bounds(media: Media, payload_type: int) -> list[tuple[int, int]]:
    """RFC 6236 imageattr: for each set the endpoint receives, the largest width and
    height it names ([] when it states none, or any: `recv *`)."""
    out: list[tuple[int, int]] = []
    for value in media.attributes("imageattr"):
        pt, _, rest = value.strip().partition(" ")
        if pt not in ("*", str(payload_type)):
            continue
        for direction, sets in _directions(rest):
            if direction == "recv":
                out += [(max(xs), max(ys)) for xs, ys in sets]
    return out


def _directions(text: str) -> Iterator[tuple[str, list[tuple[list[int], list[int]]]]]:
    parts = re.split(r"\b(send|recv)\b", text)
    for i in range(1, len(parts) - 1, 2):
        sets = []
        for body in re.findall(r"\[\s*x=(\[[^\]]*\]|\d+)\s*,\s*y=(\[[^\]]*\]|\d+)", parts[i + 1]):
            xs, ys = _values(body[0]), _values(body[1])
            if xs and ys:
                sets.append((xs, ys))
        yield parts[i], sets


def _values(text: str) -> list[int]:
    """An imageattr x or y: a number, [a,b,...] or a range [a:b] / [a:step:b]."""
    return [int(n) for n in re.findall(r"\d+", text)]


def lync_receives(description: SessionDescription, media: Media) -> tuple[int, int, float]:
    """The largest picture Lync's description lists in any a=x-caps (LYNC_RECEIVES when it
    lists none)."""
    best: tuple[int, int, float] | None = None
    for value in media.attributes("x-caps"):
        try:
            caps = parse_x_caps(value)
        except ValueError:
            continue
        for _, width, height, fps, _ in caps.modes:
            if best is None or width * height > best[0] * best[1]:
                best = (width, height, fps)
    return best or LYNC_RECEIVES


def lync_kbps(description: SessionDescription, media: Media) -> int | None:
    """What Lync's a=x-mediabw:main-video says it receives (the stream's, else the
    session's: Lync 2013 writes it there)."""
    for section in (media, description.session):
        for value in section.attributes("x-mediabw"):
            try:
                bandwidth = parse_mediabw(value)
            except ValueError:
                continue
            if bandwidth.media == LABEL:
                return bandwidth.recv
    return None


def takes_source_requests(media: Media) -> bool:
    """Whether Lync's rtcp-fb says it receives Video Source Requests (`recv:src`)."""
    return any(feedback.kind == "x-message" and re.search(r"recv:(\S*,)?src\b", feedback.params)
               for feedback in _feedback(media))


def _feedback(media: Media) -> Iterator[RtcpFeedback]:
    """The a=rtcp-fb lines of `media` that parse (a malformed one says nothing)."""
    for value in media.attributes("rtcp-fb"):
        try:
            yield parse_rtcp_fb(value)
        except ValueError:
            continue


def takes_tmmbr(media: Media, payload_type: int) -> bool:
    """Whether a SIP endpoint's description says its H264 `payload_type` takes TMMBR:
    `a=rtcp-fb:<pt or *> ccm tmmbr` (RFC 5104 7.1, with or without smaxpr)."""
    return any(feedback.payload_type in ("*", str(payload_type))
               and feedback.kind.lower() == "ccm"
               and feedback.params.lower().split()[:1] == ["tmmbr"]
               for feedback in _feedback(media))


def h264_fmtp(level: Level) -> str:
    return f"profile-level-id={CONSTRAINED_BASELINE}{level.idc:02x};packetization-mode=1"


def lower(a: Level, b: Level) -> Level:
    return a if LEVELS.index(a) <= LEVELS.index(b) else b


def sip_lines(payload_type: int, level: Level, *, tmmbr: bool) -> list[Line]:
    """The a= lines of an H264 stream toward a SIP endpoint: the codec at `level`
    (constrained baseline, packetization-mode 1), the key-frame requests the relay
    turns into Lync's (PLI, FIR) and, with `tmmbr` (always in an offer; in an answer only
    if the endpoint offered it, RFC 4585 4.2), the TMMBR that carries Lync's bandwidth
    requests to it."""
    lines = [Line("a", f"rtpmap:{payload_type} H264/{CLOCK}"),
             Line("a", f"fmtp:{payload_type} {h264_fmtp(level)}"),
             Line("a", f"rtcp-fb:{payload_type} nack pli"),
             Line("a", f"rtcp-fb:{payload_type} ccm fir")]
    if tmmbr:
        lines.append(Line("a", f"rtcp-fb:{payload_type} ccm tmmbr"))
    return lines


def lync_lines(payload_type: int, sip: Limits, ours: SsrcRange, kbps: int) -> list[Line]:
    """The a= lines of an X-H264UC main video stream toward Lync ([MS-SDPEXT]): its
    feedback, rtcp-rsize, label, the SSRCs we send with, the sizes the SIP side takes
    (x-caps: QCIF, CIF and VGA must be listed when its level allows them) and the
    bandwidth both ways."""
    return [Line("a", f"x-ssrc-range:{ours}"),
            Line("a", f"rtcp-fb:* {LYNC_FEEDBACK}"),
            Line("a", "rtcp-rsize"),
            Line("a", f"label:{LABEL}"),
            Line("a", f"x-source:{LABEL}"),
            Line("a", f"x-mediabw:{MediaBandwidth(LABEL, kbps, kbps)}"),
            Line("a", f"x-caps:{payload_type} {x_caps(sip)}"),
            Line("a", f"rtpmap:{payload_type} X-H264UC/{CLOCK}"),
            Line("a", f"fmtp:{payload_type} {LYNC_FMTP}")]


def x_caps(sip: Limits) -> str:
    """The modes of SIZES within `sip`, each at the frame rate the SIP side takes there:
    `<id>:<width>:<height>:<fps>:<bps>:1`, numbered as Lync numbers its own (index << 12 |
    0x107: 263, 4359, 8455 ...)."""
    rate = sip.fps * _macroblocks(sip.width, sip.height)
    modes: list[str] = []
    for width, height in SIZES:
        if width > sip.width or height > sip.height:
            continue
        fps = min(MAX_FPS, rate / _macroblocks(width, height))
        modes.append(f"{len(modes) << 12 | 0x107}:{width}:{height}:{fps:.1f}:"
                     f"{sip.bitrate_bps}:1")
    return ";".join(modes)


def video_kbps(*bounds: int | None) -> int:
    """The lowest of the bounds given (0 and None: no bound), LYNC_VIDEO_KBPS if none."""
    known = [k for k in bounds if k]
    return min(known) if known else LYNC_VIDEO_KBPS
