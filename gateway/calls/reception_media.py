"""Which media side a reception call gets: ICE and SRTP toward a Lync caller
(`lync_reception`), plain RTP toward a SIP caller (`reception_side`)."""

from __future__ import annotations

from pathlib import Path

from gateway.calls.bodies import offered_sdp
from gateway.calls.lync_caller import wants_ice
from gateway.calls.lync_reception import LyncReception
from gateway.calls.reception_side import ReceptionSide, plain_reception
from gateway.calls.settings import CallSettings
from gateway.sip.message import Request
from ice.ports import PortAllocator
from sdp.errors import NotAcceptable


def reception_for(request: Request, settings: CallSettings, ports: PortAllocator | None,
                  address: str, seen_by_caller: str, theme: str
                  ) -> ReceptionSide | LyncReception:
    """The reception's media for `request`; raises SdpError for what it cannot serve."""
    if ports is None:
        raise NotAcceptable("the reception needs anchored media (listen.media_ports)")
    offer = offered_sdp(request)
    if offer is None:
        raise NotAcceptable("the reception answers an SDP offer in the INVITE")
    folder = Path(theme) if theme else None
    if wants_ice(offer):
        return LyncReception(offer, ports, address, static_nat=settings.static_nat,
                             media_timeout=settings.media_timeout, call_id=request.call_id,
                             theme=folder)
    return plain_reception(offer, ports, address, settings.media_timeout, seen_by_caller,
                           folder)
