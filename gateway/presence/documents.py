"""The presence documents, one per format a subscriber can ask for in Accept:

- `application/pidf+xml`: RFC 3863 PIDF, what RFC 3856 subscribers get (and the default
  when Accept is absent, RFC 3856 6.7);
- `application/msrtc-event-categories+xml`: [MS-PRES] categories, what Lync/SfB asks for:
  a `state` category (aggregate availability 3500 'Available', 18500 'Offline') and a
  `contactCard` with the service's or rule's name, description and avatar URL;
- `text/xml+msrtc.pidf`: the legacy MSRTC form [MS-PRES] 3.7.5.5 (federated and older
  clients: availability 300 online / 0 offline).

A batch of several resources (Lync's batched SUBSCRIBE) is a `multipart/related` body with an
RFC 4662 RLMI list first and one document per resource, as [MS-SIP] 3.3.5.1 shows.

Documents are text built from escaped parts, not an XML tree: they are small and fixed in
shape, and a SUBSCRIBE answered with one must cost microseconds (bench/presence.py).
"""

from __future__ import annotations

import re
from xml.sax import saxutils

from gateway.presence.answer import Answer

PIDF = "application/pidf+xml"
CATEGORIES = "application/msrtc-event-categories+xml"
MSRTC_PIDF = "text/xml+msrtc.pidf"
RLMI = "application/rlmi+xml"
MULTIPART = "multipart/related"
FORMATS = (CATEGORIES, PIDF, MSRTC_PIDF)

# What XML 1.0 cannot carry even escaped (C0 controls but tab, CR, LF; surrogates; U+FFFE and
# U+FFFF): a config's TOML strings can hold them, and one would make the whole document
# unreadable to every subscriber.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def escape(text: str) -> str:
    return saxutils.escape(_NOT_XML.sub("", text))


def quoteattr(text: str) -> str:
    return saxutils.quoteattr(_NOT_XML.sub("", text))


_XML = '<?xml version="1.0" encoding="UTF-8"?>\n'
_BOUNDARY = "lyncgate-presence-8f3a1c"


def choose_format(accept: list[str], categories_asked: bool) -> str | None:
    """The format for a subscriber that accepts `accept` (media types, lower case); None
    when it accepts none of ours (406). Lync lists several: the richest it takes wins."""
    if categories_asked or not accept:
        return CATEGORIES if categories_asked else PIDF
    for media in FORMATS:
        if media in accept:
            return media
    if "*/*" in accept or "application/*" in accept:
        return PIDF
    return None


def document(fmt: str, answer: Answer, uri: str, avatar_url: str, version: int,
             published: str) -> str:
    """The document for one resource. `uri` is the presentity as the subscriber named it,
    `avatar_url` the absolute URL of its image ("" for none), `version` the config
    generation (a client sees that the document changed), `published` its xs:dateTime."""
    if fmt == CATEGORIES:
        return categories(answer, uri, avatar_url, version, published)
    if fmt == MSRTC_PIDF:
        return msrtc_pidf(answer, uri)
    return pidf(answer, uri, published)


def pidf(answer: Answer, uri: str, published: str) -> str:
    basic = "open" if answer.available else "closed"
    note = _note(answer)
    return (f'{_XML}<presence xmlns="urn:ietf:params:xml:ns:pidf" entity={quoteattr(uri)}>'
            f'<tuple id="lyncgate"><status><basic>{basic}</basic></status>'
            f"<note>{escape(note)}</note><timestamp>{published}</timestamp></tuple>"
            "</presence>")


def categories(answer: Answer, uri: str, avatar_url: str, version: int,
               published: str) -> str:
    # Container 2 is the one [MS-PRES] publishes to everyone in the company and federated
    # contacts; 'static' because the gateway's answer changes only with its config.
    common = (f'instance="0" publishTime="{published}" container="2" version="{version}" '
              'expireType="static"')
    state = (f'<category name="state" {common}>'
             '<state xmlns="http://schemas.microsoft.com/2006/09/sip/state" '
             'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" manual="false" '
             f'xsi:type="aggregateState"><availability>{answer.availability}</availability>'
             "</state></category>")
    card = ""
    if answer.available:
        photo = (f'<photo type="other"><uri>{escape(avatar_url)}</uri></photo>'
                 if avatar_url else "")
        description = (f"<description>{escape(answer.description)}</description>"
                       if answer.description else "")
        card = (f'<category name="contactCard" {common}>'
                '<contactCard xmlns="http://schemas.microsoft.com/2006/09/sip/contactcard">'
                f"<identity><name><displayName>{escape(answer.name)}</displayName></name>"
                f"</identity>{description}{photo}</contactCard></category>")
    return (f'{_XML}<categories xmlns="http://schemas.microsoft.com/2006/09/sip/categories" '
            f"uri={quoteattr(uri)}>{state}{card}</categories>")


def msrtc_pidf(answer: Answer, uri: str) -> str:
    availability, activity = (300, 400) if answer.available else (0, 0)
    name = answer.name or uri
    return (f'{_XML}<presence xmlns="http://schemas.microsoft.com/2002/09/sip/presence" '
            f"uri={quoteattr(uri)}>"
            f'<availability aggregate="{availability}" description=""/>'
            f'<activity aggregate="{activity}" description=""/>'
            f"<displayName displayName={quoteattr(name)}/></presence>")


def batch(fmt: str, list_uri: str, parts: list[tuple[str, str]], version: int) -> tuple[
        str, str]:
    """(content type, body) of the RFC 4662 notification for a batch: `parts` are
    (resource URI, document) in the order the subscriber listed them."""
    resources = "".join(
        f'<resource uri={quoteattr(uri)}><instance id="{i}" state="active" '
        f'cid="r{i}@lyncgate"/></resource>' for i, (uri, _) in enumerate(parts))
    rlmi = (f'{_XML}<list xmlns="urn:ietf:params:xml:ns:rlmi" uri={quoteattr(list_uri)} '
            f'version="{version}" fullState="true">{resources}</list>')
    out = [f"--{_BOUNDARY}\r\nContent-Transfer-Encoding: binary\r\n"
           f"Content-ID: <resourceList@lyncgate>\r\nContent-Type: {RLMI}\r\n\r\n{rlmi}\r\n"]
    for i, (_, body) in enumerate(parts):
        out.append(f"--{_BOUNDARY}\r\nContent-Transfer-Encoding: binary\r\n"
                   f"Content-ID: <r{i}@lyncgate>\r\nContent-Type: {fmt}\r\n\r\n{body}\r\n")
    out.append(f"--{_BOUNDARY}--\r\n")
    content_type = (f'{MULTIPART};type="{RLMI}";start="<resourceList@lyncgate>";'
                    f"boundary={_BOUNDARY}")
    return content_type, "".join(out)


def _note(answer: Answer) -> str:
    if not answer.available:
        return "Offline: unknown contact"
    return f"{answer.name}: {answer.description}" if answer.description else answer.name
