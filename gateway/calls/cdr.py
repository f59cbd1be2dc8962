"""Call detail records in SQLite (WAL): one row per call, written when it ends.

A call in progress has a row in `cdr_open` from admission on (updated when it is answered),
so a node killed mid-call loses no record: on start-up each open row becomes a CDR ended
with cause "node restart". The `cdr` table itself only ever holds finished calls, which is
what operators' queries expect.

SQLite because a node must keep its CDRs across restarts without a server to run; WAL so a
reader (an operator's query, the status API) never blocks the daemon's writes.

The event loop only snapshots a record (a copy of its fields, or the CDR's row) and queues
it; a writer thread encodes and commits what has queued in one transaction every
`BATCH_WINDOW_S`, leaving out the open rows of calls that ended within the batch. On the
loop, SQLite's commits, and above all its WAL checkpoints (which fsync the database),
stalled every call the node was handling for milliseconds at a time; batched, a few hundred
calls a second cost a few dozen commits. A record reaches the disk within that window plus
a commit, so a node killed mid-call keeps every call that had been in progress for longer
than that.
"""

from __future__ import annotations

import itertools
import json
import queue
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from gateway import logs

log = logs.get(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS cdr (
    id INTEGER PRIMARY KEY,
    in_call_id TEXT NOT NULL,
    out_call_id TEXT,
    caller TEXT NOT NULL,
    alias TEXT NOT NULL,
    outcome TEXT NOT NULL,          -- service | rule | reject
    service TEXT,
    rule TEXT,
    destination TEXT,
    started REAL NOT NULL,          -- Unix time
    ringing REAL,
    answered REAL,
    ended REAL NOT NULL,
    end_cause TEXT NOT NULL,
    ended_by TEXT NOT NULL,         -- caller | callee | gateway
    media TEXT,                     -- JSON counters per stream and direction
    video TEXT,                     -- translated video: up WxH | refused: why | none
    meeting TEXT                    -- Lync meeting joined: JSON conference_id, focus, ...
);
CREATE INDEX IF NOT EXISTS cdr_started ON cdr (started);
CREATE TABLE IF NOT EXISTS cdr_open (
    key INTEGER PRIMARY KEY,
    record TEXT NOT NULL            -- the CallRecord so far, as JSON
);
"""
RESTART_CAUSE = "node restart"
# Each batch wakes the writer thread, which then takes the GIL from the event loop: at 10 ms
# that hand-over, about once per call at 100 calls/s, cost the node 5-15% more CPU per call
# than at 100 ms (paired daemon runs under SIPp). A node killed outright loses at most this
# much of its latest record changes; a call in progress for longer keeps its open row.
BATCH_WINDOW_S = 0.1
_INSERT = ("INSERT INTO cdr (in_call_id, out_call_id, caller, alias, outcome, service, rule, "
           "destination, started, ringing, answered, ended, end_cause, ended_by, media, video, "
           "meeting) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
# Columns added since the first schema, for a database an older node made.
ADDED = (("video", "TEXT"), ("meeting", "TEXT"))


@dataclass
class CallRecord:
    in_call_id: str
    caller: str
    alias: str
    outcome: str
    started: float
    service: str | None = None
    rule: str | None = None
    destination: str | None = None
    out_call_id: str | None = None
    ringing: float | None = None
    answered: float | None = None
    ended: float | None = None
    end_cause: str = ""
    ended_by: str = "gateway"
    media: dict[str, object] = field(default_factory=dict)
    # Video translated between Lync and SIP: "up WxH", "refused: <why>", "none"; None on
    # calls with no Lync side.
    video: str | None = None
    # A Lync meeting joined by Conference ID (JSON: conference_id, focus, lobby_seconds,
    # outcome); None on every other call.
    meeting: str | None = None
    key: int | None = None  # its row in cdr_open while the call is in progress


@dataclass(frozen=True, slots=True)
class _Op:
    """A step of a call's record for the writer, its values taken when it was queued:
    "open" and "update" carry the record so far (for its `cdr_open` row), "write" the
    finished CDR's row."""

    kind: Literal["open", "update", "write"]
    key: int | None  # the call's cdr_open row
    values: dict[str, object] | tuple[object, ...]
    call_id: str


class CdrStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = _connect(path)  # start-up's and the readers' connection
        self.db.executescript(SCHEMA)
        have = {row[1] for row in self.db.execute("PRAGMA table_info(cdr)")}
        for name, kind in ADDED:
            if name not in have:
                self.db.execute(f"ALTER TABLE cdr ADD COLUMN {name} {kind}")
        (most,) = self.db.execute("SELECT coalesce(max(key), 0) FROM cdr_open").fetchone()
        self._keys = itertools.count(int(most) + 1)
        self._queue: queue.SimpleQueue[_Op | threading.Event | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None  # started by the first write

    def open(self, record: CallRecord) -> None:
        """Keep `record` as a call in progress, so a crash cannot lose it."""
        record.key = next(self._keys)
        self._put(_Op("open", record.key, _snapshot(record), record.in_call_id))

    def update(self, record: CallRecord) -> None:
        if record.key is not None:
            self._put(_Op("update", record.key, _snapshot(record), record.in_call_id))

    def write(self, record: CallRecord) -> None:
        """The finished call: its CDR, and its open row gone, in the same transaction."""
        self._put(_Op("write", record.key, _row(record), record.in_call_id))
        record.key = None

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything queued so far is committed (or failed and logged)."""
        if self._writer is None:
            return True
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def close_interrupted(self, ended: float) -> int:
        """Start-up: the calls a previous run left open end now, cause "node restart"."""
        self.flush()
        rows = self.db.execute("SELECT key, record FROM cdr_open ORDER BY key").fetchall()
        with self.db:  # one transaction: every interrupted call closed, or none
            self.db.execute("BEGIN")
            for key, text in rows:
                record = CallRecord(**json.loads(text))
                record.ended, record.end_cause, record.ended_by = ended, RESTART_CAUSE, "gateway"
                self.db.execute(_INSERT, _row(record))
                self.db.execute("DELETE FROM cdr_open WHERE key = ?", (key,))
        return len(rows)

    def recent(self, limit: int = 50) -> list[dict[str, object]]:
        self.flush()
        cursor = self.db.execute("SELECT * FROM cdr ORDER BY id DESC LIMIT ?", (limit,))
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def close(self) -> None:
        """Commit what is queued, stop the writer, close the database."""
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join(timeout=10)
            self._writer = None
        self.db.close()

    def _put(self, op: _Op) -> None:
        if self._writer is None:
            self._writer = threading.Thread(target=self._write_loop, name="cdr-writer",
                                            daemon=True)
            self._writer.start()
        self._queue.put(op)

    def _write_loop(self) -> None:
        db = _connect(self.path)
        try:
            while True:
                item = self._queue.get()
                batch = [item]
                if isinstance(item, _Op):
                    time.sleep(BATCH_WINDOW_S)  # let the calls of the next moments join it
                with_more = True
                while with_more:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        with_more = False
                self._commit(db, [op for op in batch if isinstance(op, _Op)])
                for waiting in batch:
                    if isinstance(waiting, threading.Event):
                        waiting.set()
                if None in batch:
                    return
        finally:
            db.close()

    @staticmethod
    def _commit(db: sqlite3.Connection, ops: list[_Op]) -> None:
        """One transaction for the batch. A call whose record opened and ended within it
        needs no open row at all (most failed calls, and every call shorter than the
        window); of a row's updates, only the last is written."""
        if not ops:
            return
        ended = {op.key for op in ops if op.kind == "write"}
        opened = {op.key for op in ops if op.kind == "open"}
        latest: dict[int, dict[str, object] | tuple[object, ...]] = {}
        finished: list[tuple[object, ...]] = []
        for op in ops:
            if op.kind == "write":
                assert isinstance(op.values, tuple)
                finished.append(op.values)
            elif op.key is not None and op.key not in ended:
                latest[op.key] = op.values
        gone = [(key,) for key in ended if key is not None and key not in opened]
        try:
            with db:
                db.execute("BEGIN")
                db.executemany("INSERT INTO cdr_open (key, record) VALUES (?, ?)",
                               [(k, json.dumps(v)) for k, v in latest.items() if k in opened])
                db.executemany("UPDATE cdr_open SET record = ? WHERE key = ?",
                               [(json.dumps(v), k) for k, v in latest.items() if k not in opened])
                db.executemany(_INSERT, finished)
                db.executemany("DELETE FROM cdr_open WHERE key = ?", gone)
        except (sqlite3.Error, OSError) as exc:  # a full disk must not take calls down
            log.error("cdr_write_failed", calls=sorted({op.call_id for op in ops}),
                      steps=len(ops), error=str(exc))


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db


def _row(record: CallRecord) -> tuple[object, ...]:
    return (record.in_call_id, record.out_call_id, record.caller, record.alias,
            record.outcome, record.service, record.rule, record.destination, record.started,
            record.ringing, record.answered, record.ended, record.end_cause, record.ended_by,
            json.dumps(record.media) if record.media else None, record.video,
            record.meeting)


def _snapshot(record: CallRecord) -> dict[str, object]:
    """The record's fields as they are now, for the writer to encode (the call goes on
    changing the record): `vars`, not `dataclasses.asdict`, whose deep copy of every value
    cost more than the SQLite write itself on each call's set-up."""
    values = vars(record).copy()
    values["media"] = dict(record.media)
    return values
