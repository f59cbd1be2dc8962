"""XML from a focus or MCU, read without what makes XML dangerous from a hostile peer.

A document type declaration can define entities that expand a few kilobytes into gigabytes
("billion laughs") or pull in files and URLs (external entities). No C3P or conference-info
document has one, so any DTD is refused at its first byte, before a declaration is read,
and the tree is built by expat with namespace processing and nothing else: the guard
defusedxml puts on the standard library, written here for the one parser we use."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from xml.parsers import expat

from gateway.conferencing.errors import MalformedDocument

# A meeting's conference-info NOTIFY lists every participant; a few hundred users with
# their endpoints and media is ~200 KiB. SIP caps a message at 64 KiB over UDP, but TLS
# streams carry more; beyond this a body is not a meeting's, it is a flood.
MAX_BODY = 512 * 1024


class _Refused(Exception):
    """Raised from inside expat's callbacks; caught and reported as a MalformedDocument."""


def parse(body: bytes, what: str) -> ET.Element:
    """The document's root element, namespaces written `{uri}local` as ElementTree does.
    `what` names the document in the error ("C3P response", "conference-info")."""
    if len(body) > MAX_BODY:
        raise MalformedDocument(f"{what}: {len(body)} bytes, more than {MAX_BODY}")
    builder = ET.TreeBuilder()
    parser = expat.ParserCreate(namespace_separator="}")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)

    def refuse_doctype(*_: object) -> None:
        raise _Refused("a document type declaration (DTD)")

    def refuse_entity(*_: object) -> int:
        raise _Refused("an external entity")

    def start(name: str, attributes: dict[str, str]) -> None:
        builder.start(_qualified(name), {_qualified(k): v for k, v in attributes.items()})

    def end(name: str) -> None:
        builder.end(_qualified(name))

    parser.StartDoctypeDeclHandler = refuse_doctype
    parser.ExternalEntityRefHandler = refuse_entity
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = builder.data
    try:
        parser.Parse(body, True)
    except _Refused as exc:
        raise MalformedDocument(f"{what}: it has {exc}") from None
    except expat.ExpatError as exc:
        raise MalformedDocument(f"{what}: {expat.errors.messages[exc.code]} at line "
                                f"{exc.lineno}") from None
    return builder.close()


def _qualified(name: str) -> str:
    """expat's `uri}local` as ElementTree's `{uri}local`; a name in no namespace as is."""
    return "{" + name if "}" in name else name


def local(tag: str) -> str:
    """An element's name without its namespace."""
    return tag.rpartition("}")[2]
