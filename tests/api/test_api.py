"""The status API with a real HTTP client against a running daemon: health and status, the
dial-plan explainer's JSON, reload refused without the token and good and bad with it, an
active call visible during a SIPp call, and its metrics moving, read with Prometheus' own
text parser."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.media import native
from tests.daemon.harness import Daemon
from tests.kit.nodes import loopback_node, metric
from tests.peers import SCENARIOS, free_port, need

pytestmark = pytest.mark.peer

TOKEN = "s3cret-reload-token-42"
CONFIG = loopback_node(name="api-node", tls=False) + """
[api]
port = @API@
token = "@TOKEN@"

[[routing_rules]]
name = "to the lab endpoint"
priority = 10
protocols = ["sip"]
match = 'call-(\\d+)'
replace = 'uas-\\1@127.0.0.1:@UAS@'
"""


class Api:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.base + path, timeout=5) as response:
            body = response.read().decode()
            return json.loads(body) if "json" in response.headers["Content-Type"] else body

    def post(self, path: str, token: str | None) -> tuple[int, Any]:
        request = urllib.request.Request(self.base + path, method="POST", data=b"")
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[Daemon, Api, int]]:
    api_port, uas_port = free_port(), free_port()
    text = (CONFIG.replace("@API@", str(api_port)).replace("@TOKEN@", TOKEN)
            .replace("@UAS@", str(uas_port)))
    daemon = Daemon(tmp_path, text)
    api = Api(api_port)
    for _ in range(50):
        try:
            api.get("/health")
            break
        except OSError:
            time.sleep(0.1)
    yield daemon, api, uas_port
    daemon.stop()


def test_health_status_openapi_and_dialplan(node: tuple[Daemon, Api, int]) -> None:
    daemon, api, _ = node
    assert api.get("/health") == {"status": "ok", "version": "0.1.0", "generation": 1}
    status = api.get("/status")
    assert {"transport": "UDP", "address": "127.0.0.1", "port": daemon.udp} in (
        status["listeners"])
    assert status["calls"] == [] and status["registrations"] == []
    # The daemon runs the translator this tree's install built, and says which.
    assert status["video_translator"] == native.read_build().as_dict()
    decision = api.get("/dialplan?alias=sip:call-7@127.0.0.1&protocol=sip")
    assert decision["outcome"] == "rule" and decision["destination"].startswith("uas-7@")
    assert api.get("/dialplan?alias=nobody&protocol=mssip")["outcome"] == "reject"
    assert "/reload" in api.get("/openapi.json")["paths"]


def test_reload_needs_the_token_and_refuses_a_bad_file(node: tuple[Daemon, Api, int]) -> None:
    daemon, api, _ = node
    assert api.post("/reload", None)[0] == 401
    assert api.post("/reload", "wrong-token-but-long-enough")[0] == 401
    good = daemon.config.read_text().replace("call-(\\d+)", "(?:call|ring)-(\\d+)")
    daemon.config.write_text(good)
    assert api.post("/reload", TOKEN) == (200, {"reloaded": True, "generation": 2})
    assert api.get("/dialplan?alias=ring-1")["outcome"] == "rule"
    daemon.config.write_text(good.replace("priority = 10", "priority = 999"))
    code, body = api.post("/reload", TOKEN)
    assert code == 422 and body["reloaded"] is False
    assert body["problems"] == ["routing_rules[0].priority: 999 is out of range 1..200"]
    assert api.get("/health")["generation"] == 2  # nothing changed


def test_a_call_in_progress_is_visible_and_metrics_move(
    node: tuple[Daemon, Api, int], tmp_path: Path
) -> None:
    daemon, api, uas_port = node
    before = api.get("/metrics")
    uas = subprocess.Popen(
        [need("sipp"), "-sf", str(SCENARIOS / "uas_rr.xml"), "-i", "127.0.0.1", "-p",
         str(uas_port), "-m", "1", "-nostdin", "-timeout", "20s"], cwd=tmp_path,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    uac = subprocess.Popen(
        [need("sipp"), f"127.0.0.1:{daemon.udp}", "-sf", str(SCENARIOS / "uac_hold.xml"),
         "-s", "call-9", "-i", "127.0.0.1", "-p", str(free_port()), "-m", "1", "-nostdin",
         "-timeout", "20s", "-timeout_error"], cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        active: list[dict[str, Any]] = []
        for _ in range(40):
            active = [c for c in api.get("/calls") if c["state"] == "connected"]
            if active:
                break
            time.sleep(0.05)
        assert len(active) == 1
        assert active[0]["alias"].startswith("sip:call-9@")
        assert active[0]["decision"]["rule"] == "to the lab endpoint"
        during = api.get("/metrics")
        assert metric(during, "lyncgate_calls_active") == 1
        assert metric(during, "lyncgate_sip_requests_received_total", method="INVITE") == (
            metric(before, "lyncgate_sip_requests_received_total", method="INVITE") + 1)
        out, _ = uac.communicate(timeout=20)
        assert uac.returncode == 0, out
        uas.wait(20)
    finally:
        for proc in (uac, uas):
            if proc.poll() is None:
                proc.kill()
    after = api.get("/metrics")
    assert metric(after, "lyncgate_calls_active") == 0
    assert metric(after, "lyncgate_calls_total", outcome="answered", decision="rule") == 1
    assert metric(after, "process_cpu_seconds_total") > 0
    # the callee answered the INVITE and our BYE
    assert metric(after, "lyncgate_sip_responses_received_total", status="200") >= 2
    [cdr] = api.get("/cdrs?limit=5")
    assert cdr["ended_by"] == "caller" and cdr["rule"] == "to the lab endpoint"


def test_reload_under_load_loses_no_call_and_a_bad_file_changes_nothing(
    node: tuple[Daemon, Api, int], tmp_path: Path
) -> None:
    daemon, api, uas_port = node
    calls = 10
    uas = subprocess.Popen(
        [need("sipp"), "-sf", str(SCENARIOS / "uas_rr.xml"), "-i", "127.0.0.1", "-p",
         str(uas_port), "-m", str(calls), "-nostdin", "-timeout", "30s"], cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    uac = subprocess.Popen(
        [need("sipp"), f"127.0.0.1:{daemon.udp}", "-sf", str(SCENARIOS / "uac_hold.xml"),
         "-s", "call-5", "-i", "127.0.0.1", "-p", str(free_port()), "-m", str(calls),
         "-r", "5", "-nostdin", "-timeout", "30s", "-timeout_error"], cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for _ in range(40):  # wait until calls are in progress
            if api.get("/calls"):
                break
            time.sleep(0.05)
        assert api.get("/calls")
        good = daemon.config.read_text().replace("priority = 10", "priority = 20")
        daemon.config.write_text(good)
        assert api.post("/reload", TOKEN)[0] == 200
        daemon.config.write_text(good.replace("match = ", "match = '(' # "))
        code, body = api.post("/reload", TOKEN)
        assert code == 422 and body["problems"][0].startswith("routing_rules[0].match")
        out, _ = uac.communicate(timeout=40)
        uas_out, _ = uas.communicate(timeout=40)
    finally:
        for proc in (uac, uas):
            if proc.poll() is None:
                proc.kill()
    assert uac.returncode == 0, out  # every call completed across both reloads
    assert uas.returncode == 0, uas_out
    assert api.get("/health")["generation"] == 2
    assert len([r for r in api.get(f"/cdrs?limit={calls * 2}") if r["answered"]]) == calls
