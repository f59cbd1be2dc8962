"""The status API: what the node is doing, the dial-plan explainer, reload, and metrics.

aiohttp serves it: a maintained asyncio HTTP server that runs on the daemon's own event loop
(uvloop included), so handlers read the live node without locks or threads. Read-only
endpoints are open (the API listens on loopback by default); `POST /reload` needs
`Authorization: Bearer <api.token>` and is refused while no token is configured.
"""

from __future__ import annotations

import hmac
import json
import os
import time

from aiohttp import web
from prometheus_client import CollectorRegistry

from gateway import __version__, logs
from gateway.api.metrics import registry_for, render
from gateway.api.openapi import SPEC
from gateway.config.load import EMBEDDED_DEFAULT, log_warnings
from gateway.daemon.node import Node
from gateway.media import TRANSLATOR_BUILD
from gateway.presence.answer import answer
from routing.engine import CallContext
from routing.model import PROTOCOLS

log = logs.get(__name__)
NODE = web.AppKey("node", Node)
CONFIG_PATH = web.AppKey("config_path", str)  # "" for the embedded default
REGISTRY = web.AppKey("registry", CollectorRegistry)


def _node(request: web.Request) -> Node:
    return request.app[NODE]


def _json(data: object, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, default=str))


async def health(request: web.Request) -> web.Response:
    node = _node(request)
    return _json({"status": "draining" if node.endpoint.draining else "ok",
                  "version": __version__, "generation": node.generation})


async def status(request: web.Request) -> web.Response:
    node = _node(request)
    return _json({
        "version": __version__, "node": node.config.node.name,
        # Absolute: a relative --config says nothing to someone who does not know the
        # daemon's working directory.
        "config": node.config.source if node.config.source == EMBEDDED_DEFAULT
        else os.path.abspath(node.config.source),
        "generation": node.generation,
        "warnings": list(node.config.warnings),
        "video_translator": TRANSLATOR_BUILD.as_dict(),
        "listeners": [{"transport": t, "address": a, "port": p}
                      for t, a, p in node.transport.listening],
        "connections": node.transport.connection_count,
        "transactions": len(node.endpoint.transactions),
        "registrations": [
            {"aor": b.aor, "contact": b.contact, "expires_at": b.expires_at,
             "source": f"{b.transport.lower()}:{b.host}:{b.port}"}
            for b in node.registrar.store.all(time.time())],
        "calls": node.calls.active(),
        "counters": node.endpoint.counters,
        "overload": {"admitted_share": node.endpoint.overload.share,
                     "reason": node.endpoint.overload.reason,
                     "shed": node.endpoint.overload.shed},
        # The cluster's nodes as of this node's last heartbeat; null for a lone node.
        "cluster": node.cluster.status() if node.cluster is not None else None,
    })


async def calls(request: web.Request) -> web.Response:
    return _json(_node(request).calls.active())


async def cdrs(request: web.Request) -> web.Response:
    node = _node(request)
    try:
        limit = min(500, max(1, int(request.query.get("limit", "50"))))
    except ValueError:
        return _json({"error": "limit must be a number"}, 400)
    if node.cdrs is None:
        return _json({"error": "call detail records are not available on this node"}, 503)
    return _json(node.cdrs.recent(limit))


async def dialplan(request: web.Request) -> web.Response:
    node = _node(request)
    query = request.query
    alias = query.get("alias", "")
    protocol = query.get("protocol", "sip")
    if not alias or protocol not in PROTOCOLS:
        return _json({"error": f"need ?alias=...; protocol one of {', '.join(PROTOCOLS)}"},
                     400)
    context = CallContext(
        protocol=protocol,
        location=query.get("location", node.config.node.location),
        registered=query.get("registered", "") in ("1", "true", "yes"),
        outgoing=query.get("outgoing", "") in ("1", "true", "yes"),
    )
    decision = node.router.explain(alias, context).to_json()
    presence = answer(node.router, alias).to_json(node.config.avatar_base())
    return _json({**decision, "presence": presence})


async def reload(request: web.Request) -> web.Response:
    node = _node(request)
    token = node.config.api.token
    if not token:
        return _json({"error": "reload over the API is off: set api.token"}, 403)
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(given.encode(), token.encode()):
        return _json({"error": "missing or wrong bearer token"}, 401)
    problems = node.reload_file(request.app[CONFIG_PATH] or None)
    if problems:
        return _json({"reloaded": False, "problems": problems}, 422)
    log_warnings(node.config)
    return _json({"reloaded": True, "generation": node.generation})


async def metrics(request: web.Request) -> web.Response:
    body = render(request.app[REGISTRY])
    return web.Response(body=body, content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})


async def openapi(request: web.Request) -> web.Response:
    return _json(SPEC)


def make_app(node: Node, config_path: str | None) -> web.Application:
    app = web.Application()
    app[NODE] = node
    app[CONFIG_PATH] = config_path or ""
    app[REGISTRY] = registry_for(node)
    app.add_routes([
        web.get("/health", health), web.get("/status", status), web.get("/calls", calls),
        web.get("/cdrs", cdrs), web.get("/dialplan", dialplan), web.post("/reload", reload),
        web.get("/metrics", metrics), web.get("/openapi.json", openapi),
    ])
    return app


async def start(node: Node, config_path: str | None) -> web.AppRunner | None:
    """Serve the API if `api.port` is set; a failure to listen is logged, not fatal: SIP
    matters more than the API."""
    api = node.config.api
    if not api.port:
        return None
    runner = web.AppRunner(make_app(node, config_path), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, api.address, api.port).start()
    except OSError as exc:
        log.error("api_listen_failed", address=api.address, port=api.port, error=str(exc))
        await runner.cleanup()
        return None
    log.info("api_listening", address=api.address, port=api.port,
             reload="token" if api.token else "off")
    return runner
