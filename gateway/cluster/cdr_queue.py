"""The node's SQLite CDRs as the queue toward PostgreSQL.

`gateway.calls.cdr.CdrStore` goes on writing every finished call to the node's own SQLite,
whatever PostgreSQL's state; what has been shipped is a mark (the last local CDR id) kept
in the same file. Shipping reads past the mark in id order, writes the batch to PostgreSQL
under each call's key (node, Call-ID, start time) so a batch sent twice (a crash between
PostgreSQL's commit and the mark's) is written once, then moves the mark: nothing is lost
while PostgreSQL is away, and CDRs arrive in the order the calls ended.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

COLUMNS = ("in_call_id", "started", "out_call_id", "caller", "alias", "outcome", "service",
           "rule", "destination", "ringing", "answered", "ended", "end_cause", "ended_by",
           "media", "video", "meeting")
LOST_CAUSE = "node lost"
# A call closed "node lost" by another node is replaced by what the node itself recorded
# when it comes back (the call ended normally, or "node restart"); any other is final.
INSERT = (f"INSERT INTO cdr (node, {', '.join(COLUMNS)}) VALUES "
          f"($1, {', '.join(f'${i + 2}' for i in range(len(COLUMNS)))}) "
          "ON CONFLICT (node, in_call_id, started) DO UPDATE SET "
          + ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS[2:])
          + f" WHERE cdr.end_cause = '{LOST_CAUSE}'")
BATCH = 500


class CdrQueue:
    """Reads `path` (the node's cdr.sqlite3) beside the CDR writer: WAL lets both in."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS cluster_shipped (last_id INTEGER NOT NULL)")
        if self.db.execute("SELECT count(*) FROM cluster_shipped").fetchone()[0] == 0:
            self.db.execute("INSERT INTO cluster_shipped VALUES (0)")

    def pending(self, limit: int = BATCH) -> list[tuple[int, tuple[object, ...]]]:
        """The next CDRs not yet shipped: (local id, values in COLUMNS order)."""
        (mark,) = self.db.execute("SELECT last_id FROM cluster_shipped").fetchone()
        rows = self.db.execute(f"SELECT id, {', '.join(COLUMNS)} FROM cdr WHERE id > ? "
                               "ORDER BY id LIMIT ?", (mark, limit)).fetchall()
        return [(int(row[0]), tuple(row[1:])) for row in rows]

    def shipped(self, last_id: int) -> None:
        self.db.execute("UPDATE cluster_shipped SET last_id = ?", (last_id,))

    def backlog(self) -> int:
        (mark,) = self.db.execute("SELECT last_id FROM cluster_shipped").fetchone()
        (count,) = self.db.execute("SELECT count(*) FROM cdr WHERE id > ?", (mark,)).fetchone()
        return int(count)

    def open_calls(self) -> list[tuple[int, str]]:
        """The calls in progress as last committed: (key, record as JSON)."""
        return [(int(k), str(r)) for k, r in
                self.db.execute("SELECT key, record FROM cdr_open ORDER BY key")]

    def close(self) -> None:
        self.db.close()
