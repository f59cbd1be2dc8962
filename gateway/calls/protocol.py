"""Which protocol a call arrives with, as routing rules match it (MS-SIP or SIP)."""

from __future__ import annotations

import re

from gateway.sip.message import Request
from routing.model import Protocol

# Lync/SfB clients and servers identify themselves by these products (one search in C
# rather than a generator over them: this runs on every call).
_MS_AGENTS = ("uccapi", "rtc/", "rtcc/", "ocs/", "lync", "skype for business", "mediation")
# Whole words only: "lyncgate" (this gateway, one hop upstream) is no Lync.
_MS_AGENT = re.compile("|".join(re.escape(product) + (r"\b" if product[-1].isalpha() else "")
                                for product in _MS_AGENTS))


def arriving_protocol(request: Request) -> Protocol:
    """MS-SIP when the request carries Lync's own headers or product names, else SIP.

    Lync/SfB always sends Ms-Conversation-ID or ms-* Supported options on a call; a standard
    endpoint never does. The transport alone does not tell: SIP endpoints use TLS too."""
    headers = request.headers
    if "ms-conversation-id" in headers or "ms-keep-alive" in headers:
        return "mssip"
    agent = (headers.get("user-agent") or headers.get("server") or "").lower()
    if _MS_AGENT.search(agent):
        return "mssip"
    if any(tag.startswith("ms-") for tag in request.tokens("supported")):
        return "mssip"
    return "sip"
