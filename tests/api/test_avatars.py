"""The avatar listener with a real HTTP client: each service's and rule's image with its
caching headers, 304 on a matching ETag, 404 for unknown names, nothing of the status API,
and the table following a reload."""

from __future__ import annotations

from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from gateway.api.avatars import CACHE_CONTROL, make_app
from gateway.config.load import parse_text
from gateway.presence.avatars import DEFAULT, table
from routing.engine import Router

JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 64


def config(tmp_path: Path, extra: str = "") -> Router:
    (tmp_path / "room.jpg").write_bytes(JPEG)
    text = f"""
[[services]]
type = "vmr"
name = "Board room"
aliases = ["board@vc.example.com"]
target = "sip:mcu@mcu.example.com"
avatar = "room.jpg"

[[routing_rules]]
name = "rooms & more"
priority = 10
protocols = ["sip"]
match = '.+@vc\\.example\\.com'
{extra}"""
    parsed = parse_text(text, str(tmp_path / "t.toml"), base_dir=tmp_path)
    return Router(parsed.services, parsed.routing_rules)


async def test_images_are_served_with_etag_and_cache_control(tmp_path: Path) -> None:
    images = table(config(tmp_path))
    async with TestClient(TestServer(make_app(lambda: images))) as client:
        own = await client.get("/avatars/service/Board%20room")
        assert own.status == 200 and own.content_type == "image/jpeg"
        assert await own.read() == JPEG
        assert own.headers["Cache-Control"] == CACHE_CONTROL
        etag = own.headers["ETag"]
        default = await client.get("/avatars/rule/rooms%20%26%20more")
        assert default.status == 200 and default.content_type == "image/png"
        assert await default.read() == DEFAULT.data
        again = await client.get("/avatars/service/Board%20room",
                                 headers={"If-None-Match": f'W/"x", {etag}'})
        assert again.status == 304 and again.headers["ETag"] == etag
        head = await client.head("/avatars/service/Board%20room")
        assert head.status == 200


async def test_unknown_names_and_anything_else_are_404(tmp_path: Path) -> None:
    images = table(config(tmp_path))
    async with TestClient(TestServer(make_app(lambda: images))) as client:
        for path in ("/avatars/service/Nobody", "/avatars/rule/Board%20room", "/status",
                     "/metrics", "/health", "/reload", "/"):
            assert (await client.get(path)).status == 404, path
        assert (await client.post("/avatars/service/Board%20room")).status == 405


async def test_the_table_follows_the_config(tmp_path: Path) -> None:
    current = {"images": table(config(tmp_path))}
    async with TestClient(TestServer(make_app(lambda: current["images"]))) as client:
        assert (await client.get("/avatars/rule/later")).status == 404
        current["images"] = table(config(tmp_path, """
[[routing_rules]]
name = "later"
priority = 20
protocols = ["sip"]
match = 'x'
"""))
        assert (await client.get("/avatars/rule/later")).status == 200
