"""Which media side a new call gets, from its INVITE, its routing decision and the node's
settings: ICE toward a Lync caller, ICE toward a Lync callee, SIP media anchored at the
relay, or SDP passed through (signalling only). Each anchored side gets the rule's bandwidth
cap and call capability; a signalling-only call, whose SDP is not read, enforces neither."""

from __future__ import annotations

from gateway.calls.bodies import offered_sdp
from gateway.calls.lync_callee import LyncCallee
from gateway.calls.lync_caller import LyncCaller, wants_ice
from gateway.calls.media_side import MediaSide, PassThrough
from gateway.calls.settings import CallSettings
from gateway.calls.sip_side import SipSide
from gateway.sip.errors import SipRequestError
from gateway.sip.message import Request
from ice.ports import PortAllocator
from routing.engine import Decision
from sdp.capability import UNLIMITED
from sdp.offer_answer import rule_cap


def media_for(request: Request, decision: Decision, settings: CallSettings,
              ports: PortAllocator | None, address: str, seen_by_caller: str) -> MediaSide:
    """The call's media side; raises SdpError for an offer the node must read and cannot
    (488). Without media ports (`ports` None) nothing is anchored. `address`: where media
    sockets are bound; `seen_by_caller`: the node's address as the caller reaches it."""
    rule = decision.rule
    toward_lync = rule is not None and rule.outgoing_protocol == "mssip"
    # A signalling-only node leaves SDP unread, as a proxy would, unless a leg is Lync's:
    # one toward Lync, or a caller's offer that may be Lync's ICE (every SDP of which names
    # its ice-ufrag).
    if ports is None or not (settings.anchor_sip_media or toward_lync
                             or b"ice-ufrag" in request.body):
        return PassThrough()
    offer = offered_sdp(request)
    if offer is None and request.body:
        # A body the node must anchor and cannot read: refused before anything is placed,
        # not relayed unread with no media anchored (RFC 3261 20.15, 21.4.13).
        content_type = request.content_type
        if content_type is None:
            raise SipRequestError(400, "Bad Request (a body without Content-Type)")
        raise SipRequestError(415, f"Unsupported Media Type ({content_type.type[:40]})",
                              (("Accept", "application/sdp, multipart/alternative"),))
    if offer is None:
        return PassThrough()  # no offer in the INVITE: the callee's comes back unread
    cap, timeout, call_id = rule_cap(rule), settings.media_timeout, request.call_id
    capability = rule.call_capability if rule is not None else UNLIMITED
    if wants_ice(offer):
        return LyncCaller(
            offer, ports, address, static_nat=settings.static_nat,
            encryption=settings.encryption,
            turn=settings.turn_for(rule.turn_server if rule else "",
                                   decision.outgoing_location),
            stun=settings.stun_for(rule.stun_server if rule else "",
                                   decision.outgoing_location),
            bandwidth_kbps=cap, media_timeout=timeout, call_id=call_id,
            capability=capability, seen_by_caller=seen_by_caller)
    multipart = request.content_type is not None and (
        request.content_type.type.startswith("multipart/"))
    if multipart:
        return PassThrough()  # only Lync's ICE offers are read out of a multipart body
    if toward_lync:
        assert rule is not None
        return LyncCallee(
            offer, ports, address, static_nat=settings.static_nat,
            encryption=settings.encryption,
            turn=settings.turn_for(rule.turn_server, decision.outgoing_location),
            stun=settings.stun_for(rule.stun_server, decision.outgoing_location),
            bandwidth_kbps=cap, media_timeout=timeout, call_id=call_id,
            capability=capability, seen_by_caller=seen_by_caller)
    if not settings.anchor_sip_media:
        return PassThrough()
    return SipSide(offer, ports, address, bandwidth_kbps=cap, media_timeout=timeout,
                   call_id=call_id, capability=capability, seen_by_caller=seen_by_caller)

