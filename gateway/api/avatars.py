"""The presence avatars over HTTP: the guide's "HTTP conference avatar" listener (TCP 80
from every Lync/SfB client), `[avatar]` in the config.

A listener and an aiohttp application of its own, apart from the status API: Lync clients
anywhere reach this one, so it serves the images and nothing else (no API route, no token,
no status). Each image is a dictionary look-up in the table presence keeps for the current
config (`gateway.presence.avatars`), with a strong ETag and a day's caching: a contact list
asks for the same few images at every sign-in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from aiohttp import web

from gateway import logs
from gateway.presence.answer import avatar_path
from gateway.presence.avatars import Image

log = logs.get(__name__)
IMAGES: web.AppKey[Callable[[], Mapping[str, Image]]] = web.AppKey("images")
CACHE_CONTROL = "public, max-age=86400"


def make_app(images: Callable[[], Mapping[str, Image]]) -> web.Application:
    app = web.Application()
    app[IMAGES] = images
    app.router.add_get("/avatars/{kind}/{name}", _avatar)  # HEAD too
    return app


async def _avatar(request: web.Request) -> web.StreamResponse:
    info = request.match_info
    found = request.app[IMAGES]().get(avatar_path(info["kind"], info["name"]))
    if found is None:
        raise web.HTTPNotFound(text="no such avatar\n")
    headers = {"ETag": found.etag, "Cache-Control": CACHE_CONTROL}
    if found.etag in _etags(request.headers.get("If-None-Match", "")):
        return web.Response(status=304, headers=headers)
    return web.Response(body=found.data, content_type=found.content_type, headers=headers)


def _etags(header: str) -> set[str]:
    tags = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    return tags - {""}


async def start(address: str, port: int,
                images: Callable[[], Mapping[str, Image]]) -> web.AppRunner | None:
    """Serve avatars on address:port (port 0: not at all). A failure to listen (port 80
    without the privilege to bind it) is a warning, not fatal: presence still works, the
    contact lists show no image."""
    if not port:
        return None
    runner = web.AppRunner(make_app(images), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, address, port).start()
    except OSError as exc:
        log.warning("avatar_listen_failed", address=address, port=port, error=str(exc),
                  note="presence documents still name the avatars; set [avatar] port to one "
                  "this user may bind, or grant CAP_NET_BIND_SERVICE")
        await runner.cleanup()
        return None
    log.info("avatar_listening", address=address, port=port)
    return runner
