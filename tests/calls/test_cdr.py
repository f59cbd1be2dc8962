"""CDRs survive a node killed mid-call: a call in progress is kept open from admission on
(with its answer time), and the next start closes it with cause "node restart"."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from gateway.calls.cdr import CallRecord, CdrStore
from gateway.sip.message import Response, make_response
from tests.kit.calls import (
    CALLER,
    FIRST,
    Harness,
    invite,
    outbound,
)


async def test_a_call_in_progress_is_closed_as_node_restart_on_the_next_start(
        tmp_path: Path) -> None:
    path = tmp_path / "cdr.sqlite3"
    h = Harness([FIRST], CdrStore(path))
    h.feed(invite(), CALLER)
    await h.settle()
    out, peer = outbound(h.take(), "INVITE")
    h.feed(make_response(out, 200, to_tag="callee", headers=(("Contact", "<sip:a@x>"),)), peer)
    assert any(isinstance(m, Response) and m.status == 200 for m, _ in h.take())
    assert h.cdrs is not None and h.cdrs.recent() == []  # still in progress

    restarted = CdrStore(path)  # the process died; a new one opens the same file
    assert restarted.close_interrupted(1_700_000_100.0) == 1
    [cdr] = restarted.recent()
    assert (cdr["in_call_id"], cdr["out_call_id"]) == ("in-call-1", out.call_id)
    assert cdr["answered"] == 1_700_000_000.0 and cdr["ended"] == 1_700_000_100.0
    assert (cdr["end_cause"], cdr["ended_by"]) == ("node restart", "gateway")
    assert restarted.close_interrupted(1_700_000_200.0) == 0  # closed once only


def test_a_finished_call_leaves_nothing_open(tmp_path: Path) -> None:
    store = CdrStore(tmp_path / "cdr.sqlite3")
    record = CallRecord("c1", "sip:a@x", "b@y", "rule", started=1.0)
    store.open(record)
    record.ended, record.end_cause = 2.0, "BYE from the caller"
    store.write(record)
    assert CdrStore(tmp_path / "cdr.sqlite3").close_interrupted(3.0) == 0
    assert [r["end_cause"] for r in store.recent()] == ["BYE from the caller"]


def test_the_writer_commits_off_the_caller_thread_and_close_loses_nothing_queued(
        tmp_path: Path) -> None:
    """Records are queued and committed by the writer thread in batches; what is still
    queued when the store closes (a node stopping) is committed before it closes."""
    store = CdrStore(tmp_path / "cdr.sqlite3")
    records = [CallRecord(f"c{i}", "sip:a@x", "b@y", "rule", started=float(i))
               for i in range(50)]
    for record in records:
        store.open(record)
    for record in records:
        record.ended, record.end_cause = record.started + 1, "BYE from the caller"
        store.write(record)
    assert store._writer is not None and store._writer.name == "cdr-writer"
    store.close()
    reopened = CdrStore(tmp_path / "cdr.sqlite3")
    assert len(reopened.recent(100)) == 50
    assert reopened.close_interrupted(99.0) == 0


def open_rows(path: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT key, record FROM cdr_open ORDER BY key").fetchall()


def test_an_open_row_holds_the_latest_record_until_the_call_ends(tmp_path: Path) -> None:
    """Open, then answered twice over in one batch: the row has the last values; once the
    call is written in a later batch, the row is gone and the CDR holds the end."""
    path = tmp_path / "cdr.sqlite3"
    store = CdrStore(path)
    record = CallRecord("c1", "sip:a@x", "b@y", "rule", started=1.0)
    store.open(record)
    assert store.flush()
    record.ringing = 2.0
    store.update(record)
    record.answered = 3.0
    store.update(record)
    record.answered = 4.0  # after queueing: the queued snapshot must not see it
    assert store.flush()
    [(_, text)] = open_rows(path)
    assert (json.loads(text)["ringing"], json.loads(text)["answered"]) == (2.0, 3.0)
    record.ended, record.end_cause = 5.0, "BYE from the caller"
    store.write(record)
    assert store.flush()
    assert open_rows(path) == []
    [cdr] = store.recent()
    assert (cdr["answered"], cdr["ended"]) == (4.0, 5.0)


def test_a_call_that_ends_in_the_batch_it_opened_in_never_writes_an_open_row(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its open row would be inserted and deleted in one transaction: neither is done, and
    the CDR is written all the same (what a batch of short or failed calls costs)."""
    path = tmp_path / "cdr.sqlite3"
    store = CdrStore(path)
    batch: list[object] = []
    monkeypatch.setattr(store, "_put", batch.append)  # one batch, committed below
    record = CallRecord("c1", "sip:a@x", "b@y", "rule", started=1.0)
    store.open(record)
    store.update(record)
    record.ended, record.end_cause = 2.0, "486 Busy Here"
    store.write(record)
    db = sqlite3.connect(path, isolation_level=None)
    executed: list[str] = []
    db.set_trace_callback(executed.append)
    CdrStore._commit(db, batch)  # type: ignore[arg-type]
    assert [sql for sql in executed if "cdr_open" in sql] == []
    assert [r["end_cause"] for r in store.recent()] == ["486 Busy Here"]


def test_a_database_from_before_the_video_column_gains_it_and_keeps_its_rows(
        tmp_path: Path) -> None:
    """A node upgraded over an older CDR file: the `video` column is added in place, old
    rows read it as empty, new rows carry it."""
    path = tmp_path / "cdr.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE cdr (id INTEGER PRIMARY KEY, in_call_id TEXT NOT NULL, out_call_id TEXT,"
        " caller TEXT NOT NULL, alias TEXT NOT NULL, outcome TEXT NOT NULL, service TEXT,"
        " rule TEXT, destination TEXT, started REAL NOT NULL, ringing REAL, answered REAL,"
        " ended REAL NOT NULL, end_cause TEXT NOT NULL, ended_by TEXT NOT NULL, media TEXT);"
        "INSERT INTO cdr (in_call_id, caller, alias, outcome, started, ended, end_cause,"
        " ended_by) VALUES ('old', 'a', 'b', 'rule', 1, 2, 'BYE', 'caller');")
    old.close()
    store = CdrStore(path)
    store.write(CallRecord("new", "a", "b", "rule", 3.0, ended=4.0, end_cause="BYE",
                           video="up 1280x720"))
    assert [(r["in_call_id"], r["video"]) for r in store.recent()] == [
        ("new", "up 1280x720"), ("old", None)]
    store.close()
    assert CdrStore(path).recent()[0]["video"] == "up 1280x720"  # added once, not again
