"""A node killed mid-call (SIGKILL: no drain, no clean-up) loses no call record: the next
`lyncgate run` on the same state directory closes the open call with cause "node restart"."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from gateway.calls.cdr import CdrStore
from tests.daemon.harness import Daemon, open_cdrs
from tests.kit.nodes import BASE, RULES
from tests.peers import SCENARIOS, free_port, need

pytestmark = pytest.mark.peer


def test_a_killed_node_closes_the_call_it_had_on_the_next_start(tmp_path: Path) -> None:
    uas_port = free_port()
    config = BASE + RULES.replace("match = 'routed'", "match = 'call-(\\d+)'") + (
        f"replace = 'uas-\\1@127.0.0.1:{uas_port};transport=udp'\n")
    daemon = Daemon(tmp_path, config)
    peers = [subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for argv in (
        [need("sipp"), "-sf", str(SCENARIOS / "uas_rr.xml"), "-i", "127.0.0.1", "-p",
         str(uas_port), "-m", "1", "-nostdin", "-timeout", "10s"],
        [need("sipp"), f"127.0.0.1:{daemon.udp}", "-sf", str(SCENARIOS / "uac_hold.xml"),
         "-s", "call-3", "-i", "127.0.0.1", "-p", str(free_port()), "-m", "1", "-nostdin",
         "-timeout", "10s"])]
    try:
        daemon.wait_event("call_connected", timeout=10)
        # Killed once its record of the answered call has reached the disk, which the
        # writer does within milliseconds of the answer (gateway/calls/cdr.py).
        open_cdrs(tmp_path, lambda records: any(r["answered"] for r in records))
        daemon.proc.kill()
        daemon.proc.wait(10)
    finally:
        for proc in peers:
            proc.kill()
            proc.wait()
        daemon.stop()
    cdrs = tmp_path / "state" / "cdr.sqlite3"
    assert CdrStore(cdrs).recent() == []  # the call never ended in that run

    restarted = Daemon(tmp_path, config)
    try:
        [closed] = restarted.wait_event("cdr_closed_after_restart")
        assert closed["calls"] == 1
    finally:
        restarted.stop()
    [cdr] = CdrStore(cdrs).recent()
    assert (cdr["end_cause"], cdr["ended_by"]) == ("node restart", "gateway")
    assert str(cdr["alias"]).startswith("sip:call-3@") and cdr["answered"]
    assert float(str(cdr["ended"])) >= float(str(cdr["answered"])) and time.time() >= float(
        str(cdr["ended"]))
