"""What call control tells the relay about one translated video stream (X-H264UC on the
Lync side, RFC 6184 H264 on the SIP side): the call layer fills it from the negotiated SDP,
the media layer builds the translating relay from it. Plain data, so the two layers meet
here and nowhere else."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SipVideoLimits:
    """The most the SIP endpoint said it can take (its H264 fmtp profile-level-id and
    max-fs/max-mbps, a=imageattr, b=AS): what the Video Source Request asks Lync for."""

    width: int
    height: int
    fps: float
    bitrate_bps: int


@dataclass(frozen=True, slots=True)
class VideoPlan:
    """One video stream translated between the two sides."""

    lync_payload_type: int  # X-H264UC as the Lync side numbers it
    sip_payload_type: int  # H264 (packetization-mode=1) as the SIP side numbers it
    limits: SipVideoLimits
    # Lync's a=x-ssrc-range (first, last): the SSRCs its video may come from; None when the
    # description had none.
    lync_ssrc_range: tuple[int, int] | None = None
    # Lync's a=rtcp-fb / x-caps said it takes VSRs (x-message app send:src,x-pli ...).
    lync_takes_vsr: bool = True
    # The SSRC the gateway sends Lync video with: the SDP toward Lync names it in our
    # a=x-ssrc-range. None: the relay draws one (then the SDP must not name a range).
    lync_send_ssrc: int | None = None
    # The SIP side's a=rtcp-fb has `ccm tmmbr` (RFC 5104 7.1): Lync's bandwidth requests
    # reach it as TMMBR; without it, its rate stays what its SDP allowed.
    sip_takes_tmmbr: bool = False
