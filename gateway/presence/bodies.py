"""Reading a SUBSCRIBE's body: the resources and categories of Lync's batched subscription
([MS-PRES] 2.2.2.4.1 `application/msrtc-adrl-categorylist+xml`, [MS-SIP] 3.3.4.1
`application/adrl+xml`). Each problem is a `SipRequestError` naming it, which the handler
sends as the answer: the subscriber learns what was wrong, and nothing else is affected.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from gateway.sip.errors import SipRequestError

CATEGORY_LIST = "application/msrtc-adrl-categorylist+xml"
ADRL = "application/adrl+xml"
BATCH_TYPES = frozenset({CATEGORY_LIST, ADRL})

# Lync Server's own contact list limit is 1,000 contacts (its MaxContacts ceiling); the
# category names [MS-PRES] defines number about twenty. Above these a list is not a
# contact list: refused before it costs a subscription's worth of memory per entry.
MAX_RESOURCES = 1000
MAX_CATEGORIES = 64
MAX_URI = 512


@dataclass(frozen=True, slots=True)
class Batch:
    resources: tuple[str, ...]
    categories: tuple[str, ...]  # empty for an adrl+xml body, which names none


def read_batch(body: bytes) -> Batch:
    """The resources and categories a batched SUBSCRIBE's body lists."""
    # A DTD can declare entities that expand a 64 KiB message into gigabytes (the
    # "billion laughs"); no presence body has one, so none is parsed.
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        raise SipRequestError(400, "Bad Request (XML body with a DTD)")
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise SipRequestError(400, f"Bad Request (malformed XML body: {exc})") from exc
    resources: list[str] = []
    categories: list[str] = []
    for element in root.iter():
        name = _local(element.tag)
        if name == "resource":
            uri = element.get("uri", "").strip()
            if not uri or len(uri) > MAX_URI:
                raise SipRequestError(400, "Bad Request (resource without a usable uri)")
            resources.append(uri)
            if len(resources) > MAX_RESOURCES:
                raise SipRequestError(
                    400, f"Bad Request (more than {MAX_RESOURCES} resources in one batch)")
        elif name == "category":
            categories.append(element.get("name", ""))
            if len(categories) > MAX_CATEGORIES:
                raise SipRequestError(
                    400, f"Bad Request (more than {MAX_CATEGORIES} categories in the list)")
    if _local(root.tag) not in ("batchSub", "adhoclist"):
        raise SipRequestError(400, f"Bad Request (unexpected XML root {_local(root.tag)!r})")
    if not resources:
        raise SipRequestError(400, "Bad Request (batch subscription lists no resource)")
    # A contact listed twice is one subscription to it, once in the notification.
    return Batch(tuple(dict.fromkeys(resources)), tuple(categories))


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]
