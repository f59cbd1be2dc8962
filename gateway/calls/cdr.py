"""Call detail records in SQLite (WAL): one row per call, written when it ends.

A call in progress has a row in `cdr_open` from admission on (updated when it is answered),
so a node killed mid-call loses no record: on start-up each open row becomes a CDR ended
with cause "node restart". The `cdr` table itself only ever holds finished calls, which is
what operators' queries expect.

SQLite because a node must keep its CDRs across restarts without a server to run; WAL so a
reader (an operator's query, the status API) never blocks the daemon's writes. A write is one
short transaction on the event loop (well under a millisecond on local disk).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

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
    media TEXT                      -- JSON counters per stream and direction
);
CREATE INDEX IF NOT EXISTS cdr_started ON cdr (started);
CREATE TABLE IF NOT EXISTS cdr_open (
    key INTEGER PRIMARY KEY,
    record TEXT NOT NULL            -- the CallRecord so far, as JSON
);
"""
RESTART_CAUSE = "node restart"


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
    key: int | None = None  # its row in cdr_open while the call is in progress


class CdrStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    def open(self, record: CallRecord) -> None:
        """Keep `record` as a call in progress, so a crash cannot lose it."""
        cursor = self.db.execute("INSERT INTO cdr_open (record) VALUES (?)",
                                 (_as_json(record),))
        record.key = cursor.lastrowid

    def update(self, record: CallRecord) -> None:
        if record.key is not None:
            self.db.execute("UPDATE cdr_open SET record = ? WHERE key = ?",
                            (_as_json(record), record.key))

    def write(self, record: CallRecord) -> None:
        """The finished call: its CDR, and its open row gone, in one transaction."""
        self.db.execute("BEGIN")
        try:
            self._insert(record)
            if record.key is not None:
                self.db.execute("DELETE FROM cdr_open WHERE key = ?", (record.key,))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        record.key = None

    def close_interrupted(self, ended: float) -> int:
        """Start-up: the calls a previous run left open end now, cause "node restart"."""
        rows = self.db.execute("SELECT record FROM cdr_open ORDER BY key").fetchall()
        for (text,) in rows:
            record = CallRecord(**json.loads(text))
            record.ended, record.end_cause, record.ended_by = ended, RESTART_CAUSE, "gateway"
            self.write(record)
        return len(rows)

    def _insert(self, record: CallRecord) -> None:
        self.db.execute(
            "INSERT INTO cdr (in_call_id, out_call_id, caller, alias, outcome, service, rule, "
            "destination, started, ringing, answered, ended, end_cause, ended_by, media) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (record.in_call_id, record.out_call_id, record.caller, record.alias,
             record.outcome, record.service, record.rule, record.destination, record.started,
             record.ringing, record.answered, record.ended, record.end_cause, record.ended_by,
             json.dumps(record.media) if record.media else None),
        )

    def recent(self, limit: int = 50) -> list[dict[str, object]]:
        cursor = self.db.execute("SELECT * FROM cdr ORDER BY id DESC LIMIT ?", (limit,))
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def close(self) -> None:
        self.db.close()


def _as_json(record: CallRecord) -> str:
    """The record's fields as JSON: `vars`, not `dataclasses.asdict`, whose deep copy of
    every value cost more than the SQLite write itself on each call's set-up."""
    return json.dumps(vars(record))
