"""Session timers through `lyncgate run` with SIPp on both legs and intervals shortened to
seconds: the gateway refreshes both legs it is the refresher of (re-INVITEs the peers
answer), and a callee that states a timer and then goes quiet gets both legs hung up."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from gateway.calls.cdr import CdrStore
from tests.daemon.harness import Daemon
from tests.kit.nodes import BASE, RULES
from tests.peers import SCENARIOS, free_port, need, sipp

pytestmark = pytest.mark.peer


def timers(session_expires: int) -> str:
    # Below RFC 4028's 90 s floor on purpose: a lab setting, so the test takes seconds.
    return (BASE.replace("[tls]", f"[global]\nsession_expires_seconds = {session_expires}\n"
                         "min_session_expires_seconds = 2\n\n[tls]"))


def call(tmp_path: Path, config: str, uac: str, uas: str, se: str) -> Daemon:
    """One call SIPp UAC -> lyncgate -> SIPp UAS; both SIPp runs must pass."""
    uas_port = free_port()
    rules = (RULES.replace("match = 'routed'", "match = 'call-(\\d+)'")
             + f"replace = 'uas-\\1@127.0.0.1:{uas_port};transport=udp'\n")
    daemon = Daemon(tmp_path, config + rules)
    callee = subprocess.Popen(
        [need("sipp"), "-sf", str(SCENARIOS / uas), "-i", "127.0.0.1", "-p", str(uas_port),
         "-m", "1", "-nostdin", "-timeout", "20s", "-timeout_error", "-key", "se", se],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(0.3)
        caller = sipp(f"127.0.0.1:{daemon.udp}", uac, "-s", "call-7", "-m", "1",
                      "-p", str(free_port()), timeout=20, workdir=str(tmp_path))
        assert caller.returncode == 0, caller.stdout + caller.stderr
        out, _ = callee.communicate(timeout=20)
        assert callee.returncode == 0, out
    finally:
        if callee.poll() is None:
            callee.kill()
        daemon.stop()
    return daemon


def test_the_gateway_refreshes_both_legs_and_the_call_goes_on(tmp_path: Path) -> None:
    """The caller cannot do timers (the gateway refreshes it, RFC 4028 9); the callee's 2xx
    says refresher=uac (the gateway again). Both get a re-INVITE at half the 4 s interval,
    answer it, and the caller's BYE ends the call normally."""
    daemon = call(tmp_path, timers(4), "uac_refreshed.xml", "uas_refreshed.xml",
                  "4;refresher=uac")
    sent = daemon.events("session_refresh_sent")
    assert sorted(e["leg"] for e in sent) == ["in", "out"]
    assert {e["method"] for e in sent} == {"INVITE"}  # neither side allows UPDATE
    [ended] = daemon.events("call_ended")
    assert ended["reason"] == "BYE from the caller"


def test_a_callee_that_stops_refreshing_gets_both_legs_hung_up(tmp_path: Path) -> None:
    """The callee says it refreshes (3 s) and never does: before the session expires
    (3 s less a third) the gateway sends BYE to both legs, and the CDR says why."""
    daemon = call(tmp_path, timers(30), "uac_bye_from_callee.xml", "uas_session_timer.xml",
                  "3;refresher=uas")
    [ended] = daemon.events("call_ended")
    assert ended["reason"] == "session expired: no refresh from the callee in 3 s"
    [cdr] = CdrStore(tmp_path / "state" / "cdr.sqlite3").recent()
    assert cdr["ended_by"] == "gateway" and cdr["answered"]
