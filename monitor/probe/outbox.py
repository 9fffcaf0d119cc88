"""A durable queue of signed batches, one copy per batch, with a delivery state per collector.

One SQLite file beside the probe's key:

- ``pending``: each batch's body, stored once, kept while any collector still needs it;
- ``deliveries``: (batch, collector, attempts), one row for each collector that has not yet
  acknowledged or refused the batch: each collector's own queue, read oldest first;
- ``rejected``: (batch, collector) pairs a collector refused for good (a 4xx other than
  408/429), with the body and the answer, for inspection; they no longer block that queue;
- ``collectors``: the collectors configured when the file was last opened by a probe.

A batch's body leaves ``pending`` when its last delivery row goes. :meth:`Outbox.configure`
reconciles the collectors with the settings: a new collector is given every batch still on disk
(the backlog nobody has finished with, not what was delivered and deleted before); a collector
no longer configured has its undelivered rows dropped (logged), so it cannot pin batches forever.

Files from before several collectors (``pending`` with a per-batch ``attempts``, ``rejected``
keyed by batch alone; ``user_version`` 0) are upgraded in place on open; their pending batches
then go to every configured collector, and their rejected rows keep an empty collector.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("monitor.probe")

SCHEMA_VERSION = 1
LEGACY_COLLECTOR = ""  # the collector of rejected rows from single-collector files: unrecorded

_CREATE = (
    "CREATE TABLE IF NOT EXISTS pending (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " batch_id TEXT UNIQUE NOT NULL, body BLOB NOT NULL, created_at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS deliveries (collector TEXT NOT NULL, seq INTEGER NOT NULL,"
    " attempts INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (collector, seq)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS deliveries_seq ON deliveries (seq)",
    "CREATE TABLE IF NOT EXISTS collectors (url TEXT PRIMARY KEY, added_at REAL NOT NULL)",
)
_CREATE_REJECTED = (
    "CREATE TABLE {name} (batch_id TEXT NOT NULL, collector TEXT NOT NULL, body BLOB NOT NULL,"
    " status INTEGER NOT NULL, reason TEXT NOT NULL, rejected_at REAL NOT NULL,"
    " PRIMARY KEY (batch_id, collector))"
)
# Bodies no collector needs any more (no delivery row left) are deleted.
_COLLECT = (
    "DELETE FROM pending WHERE NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.seq = pending.seq)"
)


@dataclass(frozen=True, slots=True)
class Pending:
    batch_id: str
    body: bytes
    attempts: int  # delivery attempts to the collector it was read for


class Outbox:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: autocommit; every statement is its own durable transaction,
        # and the multi-statement changes below are explicit BEGIN ... COMMIT blocks.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._migrate()
        except BaseException:
            self._db.close()
            raise
        self.collectors: tuple[str, ...] = tuple(
            url for (url,) in self._db.execute("SELECT url FROM collectors ORDER BY added_at, url")
        )

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        if version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(
                f"outbox {self.path} has schema {version}, newer than this probe's {SCHEMA_VERSION}"
            )
        legacy = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'rejected'"
        ).fetchone()
        for statement in _CREATE:
            self._db.execute(statement)
        if legacy:
            # Rejected rows gain a collector: the table is rebuilt (its key changes). The old
            # pending.attempts column stays, unused: attempts are counted per collector now.
            self._db.execute(_CREATE_REJECTED.format(name="rejected_v1"))
            self._db.execute(
                "INSERT INTO rejected_v1 SELECT batch_id, ?, body, status, reason, rejected_at"
                " FROM rejected",
                (LEGACY_COLLECTOR,),
            )
            self._db.execute("DROP TABLE rejected")
            self._db.execute("ALTER TABLE rejected_v1 RENAME TO rejected")
            log.info("outbox %s upgraded to one delivery state per collector", self.path)
        else:
            self._db.execute(_CREATE_REJECTED.format(name="rejected"))
        self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def configure(self, collectors: Sequence[str]) -> None:
        """Make ``collectors`` the ones every batch goes to (see the module docstring)."""
        wanted = list(dict.fromkeys(collectors))
        if not wanted:
            raise ValueError("an outbox needs at least one collector")
        now = time.time()
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            known = {url for (url,) in self._db.execute("SELECT url FROM collectors")}
            for url in wanted:
                if url in known:
                    continue
                added = self._db.execute(
                    "INSERT INTO deliveries (collector, seq) SELECT ?, seq FROM pending", (url,)
                ).rowcount
                self._db.execute("INSERT INTO collectors VALUES (?, ?)", (url, now))
                if known or added:
                    log.info(
                        "outbox: collector %s added; it gets the %d batches on disk", url, added
                    )
            for url in sorted(known - set(wanted)):
                dropped = self._db.execute(
                    "DELETE FROM deliveries WHERE collector = ?", (url,)
                ).rowcount
                self._db.execute("DELETE FROM collectors WHERE url = ?", (url,))
                log.warning(
                    "outbox: collector %s is no longer configured; %d batches it had not"
                    " acknowledged will not be sent to it",
                    url,
                    dropped,
                )
            self._db.execute(_COLLECT)
        self.collectors = tuple(wanted)

    def put(self, batch_id: str, body: bytes) -> None:
        """Store a batch once, due to every configured collector (one transaction)."""
        if not self.collectors:
            raise ValueError("outbox: no collectors configured")
        with self._db:
            self._db.execute("BEGIN")
            seq = self._db.execute(
                "INSERT INTO pending (batch_id, body, created_at) VALUES (?, ?, ?)",
                (batch_id, body, time.time()),
            ).lastrowid
            self._db.executemany(
                "INSERT INTO deliveries (collector, seq) VALUES (?, ?)",
                [(url, seq) for url in self.collectors],
            )

    def oldest(self, *, collector: str, limit: int = 100) -> list[Pending]:
        """The batches ``collector`` has yet to take, oldest first."""
        rows = self._db.execute(
            "SELECT p.batch_id, p.body, d.attempts FROM deliveries d JOIN pending p USING (seq)"
            " WHERE d.collector = ? ORDER BY d.seq LIMIT ?",
            (collector, limit),
        ).fetchall()
        return [Pending(batch_id, bytes(body), attempts) for batch_id, body, attempts in rows]

    def acknowledge(self, batch_id: str, *, collector: str) -> None:
        """``collector`` has the batch; its body goes once no collector needs it."""
        with self._db:
            self._db.execute("BEGIN")
            self._done(batch_id, collector)

    def attempted(self, batch_id: str, *, collector: str) -> None:
        self._db.execute(
            "UPDATE deliveries SET attempts = attempts + 1 WHERE collector = ?"
            " AND seq = (SELECT seq FROM pending WHERE batch_id = ?)",
            (collector, batch_id),
        )

    def reject(self, batch_id: str, *, collector: str, status: int, reason: str) -> None:
        """``collector`` refused the batch for good: recorded for it alone, out of its queue."""
        with self._db:  # one transaction: a pair is in exactly one of deliveries and rejected
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT OR REPLACE INTO rejected SELECT p.batch_id, d.collector, p.body, ?, ?, ?"
                " FROM pending p JOIN deliveries d USING (seq)"
                " WHERE p.batch_id = ? AND d.collector = ?",
                (status, reason, time.time(), batch_id, collector),
            )
            self._done(batch_id, collector)

    def _done(self, batch_id: str, collector: str) -> None:
        row = self._db.execute("SELECT seq FROM pending WHERE batch_id = ?", (batch_id,)).fetchone()
        if row is None:
            return
        self._db.execute(
            "DELETE FROM deliveries WHERE collector = ? AND seq = ?", (collector, row[0])
        )
        self._db.execute(_COLLECT + " AND seq = ?", (row[0],))

    def depth(self, *, collector: str | None = None) -> int:
        """Batches on disk that some collector still needs; with ``collector``, its queue."""
        if collector is None:
            return int(self._db.execute("SELECT count(*) FROM pending").fetchone()[0])
        return int(
            self._db.execute(
                "SELECT count(*) FROM deliveries WHERE collector = ?", (collector,)
            ).fetchone()[0]
        )

    def rejected_count(self, *, collector: str | None = None) -> int:
        """(batch, collector) refusals kept; with ``collector``, that collector's."""
        if collector is None:
            return int(self._db.execute("SELECT count(*) FROM rejected").fetchone()[0])
        return int(
            self._db.execute(
                "SELECT count(*) FROM rejected WHERE collector = ?", (collector,)
            ).fetchone()[0]
        )

    def close(self) -> None:
        self._db.close()
