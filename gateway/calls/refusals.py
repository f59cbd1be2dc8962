"""The one place an error met while setting up or changing a call becomes the SIP answer
the caller gets. Every package's error root carries its `status_hint` (the SIP core's,
SDP's, ICE's and port allocation's, the resolver's, the transport's); anything else is a
bug: logged with its traceback, answered 500."""

from __future__ import annotations

from gateway import logs
from gateway.resolver.rfc3263 import ResolveError
from gateway.sip.errors import SipError
from gateway.transport.errors import TransportError
from ice.errors import IceError, PortsExhausted
from sdp.errors import SdpError

log = logs.get(__name__)


def refusal(exc: BaseException, call_id: str) -> tuple[int, str]:
    """(status, reason) for a call whose set-up raised `exc`."""
    if isinstance(exc, SipError | TransportError):
        return exc.status_hint, exc.reason
    if isinstance(exc, PortsExhausted):
        return exc.status_hint, str(exc)
    if isinstance(exc, IceError):
        return exc.status_hint, f"media toward Lync: {exc}"
    if isinstance(exc, SdpError | ResolveError):
        return exc.status_hint, str(exc)
    log.error("call_setup_crashed", call_id=call_id, exc_info=exc)
    return 500, f"call set-up failed: {type(exc).__name__}"
