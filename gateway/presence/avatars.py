"""The avatar images presence documents point at: each service's and rule's own file (the
`avatar` field), else the image shipped with the node, keyed by the URL path
`gateway.presence.answer.avatar_path` gives. Built when a config is taken in, so serving one
is a dictionary look-up; `gateway.api.avatars` serves them over HTTP."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from gateway import logs
from gateway.presence.answer import avatar_path
from routing.engine import Router

log = logs.get(__name__)


@dataclass(frozen=True, slots=True)
class Image:
    data: bytes
    content_type: str
    etag: str  # quoted, as the ETag header carries it


def image(data: bytes) -> Image:
    kind = "image/png" if data.startswith(b"\x89PNG") else "image/jpeg"
    return Image(data, kind, f'"{hashlib.sha256(data).hexdigest()[:32]}"')


DEFAULT = image(resources.files("gateway.presence").joinpath("default_avatar.png").read_bytes())


def table(router: Router) -> dict[str, Image]:
    """URL path -> image for every service and rule of `router`."""
    out: dict[str, Image] = {}
    read: dict[str, Image] = {}  # one file named by several services is read once
    for kind, items in (("service", router.services), ("rule", router.rules)):
        for item in items:
            out[avatar_path(kind, item.name)] = _load(item.avatar, read) if item.avatar else (
                DEFAULT)
    return out


def _load(path: str, read: dict[str, Image]) -> Image:
    found = read.get(path)
    if found is None:
        try:
            found = image(Path(path).read_bytes())
        except OSError as exc:
            # The config check read it; it has gone since. A contact list is better served
            # the default image than a broken one.
            log.warning("avatar_unreadable", path=path, error=str(exc.strerror or exc))
            found = DEFAULT
        read[path] = found
    return found
