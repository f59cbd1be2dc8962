"""The OpenAPI 3.1 description of the status API, served at /openapi.json."""

from __future__ import annotations

_JSON = {"application/json": {"schema": {"type": "object"}}}


def _get(summary: str, params: list[dict[str, object]] | None = None) -> dict[str, object]:
    return {"get": {"summary": summary, "parameters": params or [],
                    "responses": {"200": {"description": "OK", "content": _JSON}}}}


def _query(name: str, required: bool = False, kind: str = "string") -> dict[str, object]:
    return {"name": name, "in": "query", "required": required, "schema": {"type": kind}}


SPEC: dict[str, object] = {
    "openapi": "3.1.0",
    "info": {"title": "lyncgate status API", "version": "1"},
    "components": {"securitySchemes": {"token": {"type": "http", "scheme": "bearer"}}},
    "paths": {
        "/health": _get("Liveness, version and config generation"),
        "/status": _get("Listeners, connections, transactions, calls in progress, counters, "
                        "config warnings (a certificate close to expiry), whether the video "
                        "translator runs compiled"),
        "/calls": _get("Calls in progress with both legs and their routing decision"),
        "/cdrs": _get("Recent call detail records", [_query("limit", kind="integer")]),
        "/dialplan": _get("The routing decision for an alias (the dialplan --json contract)", [
            _query("alias", True), _query("protocol"), _query("location"),
            _query("registered", kind="boolean"), _query("outgoing", kind="boolean")]),
        "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {
            "description": "text exposition format",
            "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        "/reload": {"post": {
            "summary": "Validate the config file in full and swap it in; nothing changes on "
                       "any problem",
            "security": [{"token": []}],
            "responses": {
                "200": {"description": "reloaded", "content": _JSON},
                "401": {"description": "missing or wrong token", "content": _JSON},
                "403": {"description": "reload over the API is off (no api.token)",
                        "content": _JSON},
                "422": {"description": "the new config was refused: problems by field path",
                        "content": _JSON},
            },
        }},
    },
}
