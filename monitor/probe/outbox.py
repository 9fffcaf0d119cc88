"""A durable queue of signed batches: written before sending, removed only on acknowledgement.

One SQLite file beside the probe's key. A batch the collector refuses for good (a 4xx other than
408/429) moves to ``rejected`` so it cannot block the queue, and stays there for inspection.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Pending:
    batch_id: str
    body: bytes
    attempts: int


class Outbox:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: autocommit; every statement is its own durable transaction.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS pending (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
            " batch_id TEXT UNIQUE NOT NULL, body BLOB NOT NULL, created_at REAL NOT NULL,"
            " attempts INTEGER NOT NULL DEFAULT 0)"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS rejected (batch_id TEXT PRIMARY KEY, body BLOB NOT NULL,"
            " status INTEGER NOT NULL, reason TEXT NOT NULL, rejected_at REAL NOT NULL)"
        )

    def put(self, batch_id: str, body: bytes) -> None:
        self._db.execute(
            "INSERT INTO pending (batch_id, body, created_at) VALUES (?, ?, ?)",
            (batch_id, body, time.time()),
        )

    def oldest(self, limit: int = 100) -> list[Pending]:
        rows = self._db.execute(
            "SELECT batch_id, body, attempts FROM pending ORDER BY seq LIMIT ?", (limit,)
        ).fetchall()
        return [Pending(batch_id, bytes(body), attempts) for batch_id, body, attempts in rows]

    def acknowledge(self, batch_id: str) -> None:
        self._db.execute("DELETE FROM pending WHERE batch_id = ?", (batch_id,))

    def attempted(self, batch_id: str) -> None:
        self._db.execute(
            "UPDATE pending SET attempts = attempts + 1 WHERE batch_id = ?", (batch_id,)
        )

    def reject(self, batch_id: str, *, status: int, reason: str) -> None:
        with self._db:  # one transaction: the batch is in exactly one of the two tables
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT OR REPLACE INTO rejected SELECT batch_id, body, ?, ?, ? FROM pending"
                " WHERE batch_id = ?",
                (status, reason, time.time(), batch_id),
            )
            self._db.execute("DELETE FROM pending WHERE batch_id = ?", (batch_id,))

    def depth(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM pending").fetchone()[0])

    def rejected_count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM rejected").fetchone()[0])

    def close(self) -> None:
        self._db.close()
