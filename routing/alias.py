"""The alias a rule matches against.

By default the reference guide matches "a parsed version of the destination alias": no URI
scheme, no parameters, no host IP address (`sip:alice@example.com;transport=tls` ->
`alice@example.com`, `sip:1234@10.1.2.3` -> `1234`). "Match against full alias URI" uses the
alias exactly as received. Services are looked up by the parsed form too.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import lru_cache

_SCHEMES = ("sips:", "sip:", "h323:", "tel:")


@lru_cache(maxsize=65536)
def parse_alias(raw: str) -> str:
    """The parsed alias: display name, angle brackets, scheme, URI headers and parameters,
    port, and an IP-address host removed. Case is kept (matching ignores it; a replace string
    may copy it into the destination)."""
    text = raw.strip()
    if "<" in text and text.endswith(">"):
        text = text[text.index("<") + 1 : -1].strip()
    lowered = text.lower()
    for scheme in _SCHEMES:
        if lowered.startswith(scheme):
            text = text[len(scheme) :]
            break
    text = text.split("?", 1)[0]
    user, at, host = text.rpartition("@")
    if not at:
        # No user part: the whole thing is the host (or a bare alias/number).
        user, host = "", text
    host = host.split(";", 1)[0]
    host = _strip_port(host)
    if _is_ip(host):
        return user if user else host
    return f"{user}@{host}" if at else host


def _strip_port(host: str) -> str:
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end >= 0 else host
    name, colon, port = host.rpartition(":")
    if colon and port.isdigit() and ":" not in name:
        return name
    return host


@lru_cache(maxsize=1024)  # the same few hosts on every call
def _is_ip(host: str) -> bool:
    bare = host[1:-1] if host.startswith("[") else host
    # ip_address costs microseconds to refuse a name (it raises), and most hosts are names:
    # only an IPv6 literal has a ':', only an IPv4 one is four runs of ASCII digits.
    if ":" not in bare and (bare.count(".") != 3 or bare.strip("0123456789.")):
        return False
    try:
        ipaddress.ip_address(bare)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class ServiceAddress:
    """A dialled service alias split into the alias proper and what was appended to it:
    `<alias>*<pin>@<domain>` carries a PIN, `<reception>**<conference id>@<domain>` a Lync
    Conference ID for a Virtual Reception."""

    alias: str
    pin: str | None = None
    conference_id: str | None = None


def split_service_address(parsed: str) -> ServiceAddress:
    local, at, domain = parsed.partition("@")
    suffix = f"@{domain}" if at else ""
    base, stars, extra = local.partition("**")
    if stars and base and extra.isdigit():
        return ServiceAddress(base + suffix, conference_id=extra)
    base, star, extra = local.rpartition("*")
    if star and base and extra.isdigit():
        return ServiceAddress(base + suffix, pin=extra)
    return ServiceAddress(parsed)
