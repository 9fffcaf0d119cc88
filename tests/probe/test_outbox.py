"""The probe's durable outbox: order, acknowledgement, rejection and durability, each per
collector; a body kept until every collector is done with it; collectors added and removed; files
from before several collectors upgraded in place."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.probe.outbox import LEGACY_COLLECTOR, SCHEMA_VERSION, Outbox, Pending

A = "http://127.0.0.1:8001"
B = "https://collector-b.example/monitor"

# The schema every outbox had before several collectors (monitor/probe/outbox.py at d7145bb).
LEGACY_SCHEMA = (
    "CREATE TABLE pending (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " batch_id TEXT UNIQUE NOT NULL, body BLOB NOT NULL, created_at REAL NOT NULL,"
    " attempts INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE rejected (batch_id TEXT PRIMARY KEY, body BLOB NOT NULL,"
    " status INTEGER NOT NULL, reason TEXT NOT NULL, rejected_at REAL NOT NULL)",
)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "keys" / "probe.key.outbox.sqlite"  # the parent is created on open


@pytest.fixture
def outbox(path: Path) -> Iterator[Outbox]:
    box = Outbox(path)
    box.configure([A])
    yield box
    box.close()


@pytest.fixture
def two(path: Path) -> Iterator[Outbox]:
    box = Outbox(path)
    box.configure([A, B])
    yield box
    box.close()


def ids(box: Outbox, collector: str = A, limit: int = 100) -> list[str]:
    return [p.batch_id for p in box.oldest(collector=collector, limit=limit)]


def write_legacy(path: Path, pending: list[tuple[str, bytes, int]], rejected: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as db:
        for statement in LEGACY_SCHEMA:
            db.execute(statement)
        db.executemany(
            "INSERT INTO pending (batch_id, body, created_at, attempts) VALUES (?, ?, 1.0, ?)",
            pending,
        )
        db.executemany(
            "INSERT INTO rejected VALUES (?, ?, 422, 'bad', 2.0)",
            [(f"old-{i}", b"refused") for i in range(rejected)],
        )
    db.close()


def test_empty(outbox: Outbox) -> None:
    assert outbox.oldest(collector=A) == []
    assert outbox.depth() == 0 and outbox.depth(collector=A) == 0
    assert outbox.rejected_count() == 0
    assert outbox.collectors == (A,)


def test_put_needs_a_collector(path: Path) -> None:
    box = Outbox(path)
    try:
        with pytest.raises(ValueError, match="no collectors"):
            box.put("a", b"x")
        with pytest.raises(ValueError, match="at least one"):
            box.configure([])
        assert box.depth() == 0
    finally:
        box.close()


def test_put_then_oldest_in_insertion_order(outbox: Outbox) -> None:
    # Insertion order, not id order.
    names = ["c", "a", "b", "e", "d"]
    for name in names:
        outbox.put(name, f"body-{name}".encode())
    pending = outbox.oldest(collector=A)
    assert [p.batch_id for p in pending] == names
    assert pending[0] == Pending("c", b"body-c", 0)
    assert all(isinstance(p.body, bytes) for p in pending)
    assert ids(outbox, limit=2) == ["c", "a"]
    assert outbox.depth() == 5
    assert outbox.oldest(collector=B) == []  # not configured: owed nothing


def test_acknowledge_removes_only_that_batch(outbox: Outbox) -> None:
    for name in "abc":
        outbox.put(name, b"x")
    outbox.acknowledge("b", collector=A)
    assert ids(outbox) == ["a", "c"]
    outbox.acknowledge("b", collector=A)  # twice is harmless
    outbox.acknowledge("unknown", collector=A)
    outbox.acknowledge("a", collector=B)  # a collector that was never owed it
    assert outbox.depth() == 2
    outbox.acknowledge("a", collector=A)
    outbox.acknowledge("c", collector=A)
    assert outbox.oldest(collector=A) == [] and outbox.depth() == 0


def test_each_collector_has_its_own_queue(two: Outbox) -> None:
    for name in "abc":
        two.put(name, name.encode())
    assert ids(two, A) == ids(two, B) == ["a", "b", "c"]
    two.acknowledge("a", collector=A)
    two.acknowledge("b", collector=A)
    # A is past them; B is not, so the bodies stay.
    assert (ids(two, A), ids(two, B)) == (["c"], ["a", "b", "c"])
    assert (two.depth(), two.depth(collector=A), two.depth(collector=B)) == (3, 1, 3)
    two.acknowledge("a", collector=B)
    assert two.depth() == 2  # a: both done, body gone
    two.attempted("c", collector=B)
    two.attempted("c", collector=B)
    assert [p.attempts for p in two.oldest(collector=B)] == [0, 2]
    assert [p.attempts for p in two.oldest(collector=A)] == [0]


def test_reject_is_for_one_collector(two: Outbox, path: Path) -> None:
    for name in "abc":
        two.put(name, f"body-{name}".encode())
    two.reject("b", collector=B, status=422, reason='{"error": "unknown_endpoint"}')
    assert ids(two, B) == ["a", "c"]
    assert ids(two, A) == ["a", "b", "c"]  # A still gets it
    assert (two.rejected_count(), two.rejected_count(collector=A)) == (1, 0)
    assert two.depth() == 3
    two.acknowledge("b", collector=A)
    assert two.depth() == 2  # acknowledged by A, refused by B: done with
    with sqlite3.connect(path) as db:
        rows = db.execute(
            "SELECT batch_id, collector, body, status, reason FROM rejected"
        ).fetchall()
    assert rows == [("b", B, b"body-b", 422, '{"error": "unknown_endpoint"}')]
    # Refused by both: one row each, and the body is gone from the queue.
    two.reject("c", collector=A, status=413, reason="too big")
    two.reject("c", collector=B, status=413, reason="too big")
    assert (two.depth(), two.rejected_count(), two.rejected_count(collector=B)) == (1, 3, 2)


def test_reject_unknown_batch_changes_nothing(outbox: Outbox) -> None:
    outbox.put("a", b"x")
    outbox.reject("zzz", collector=A, status=400, reason="?")
    outbox.reject("a", collector=B, status=400, reason="?")  # B was never owed it
    assert (outbox.depth(), outbox.rejected_count()) == (1, 0)


def test_reject_is_one_step(outbox: Outbox, path: Path) -> None:
    # If the delete fails, the insert is rolled back too: the pair is never both delivered and
    # rejected (nor neither).
    outbox.put("a", b"x")
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TRIGGER no_delete BEFORE DELETE ON deliveries "
            "BEGIN SELECT RAISE(ABORT, 'delete refused'); END"
        )
    with pytest.raises(sqlite3.DatabaseError):
        outbox.reject("a", collector=A, status=403, reason="x")
    assert (outbox.depth(collector=A), outbox.rejected_count()) == (1, 0)
    with sqlite3.connect(path) as db:
        db.execute("DROP TRIGGER no_delete")
    # The connection is still usable afterwards, and the move then succeeds.
    outbox.reject("a", collector=A, status=403, reason="x")
    assert (outbox.depth(), outbox.rejected_count()) == (0, 1)


def test_put_is_one_step(two: Outbox, path: Path) -> None:
    # A batch is stored with a delivery row for every collector, or not at all.
    with sqlite3.connect(path) as db:
        db.execute(
            f"CREATE TRIGGER no_b BEFORE INSERT ON deliveries WHEN NEW.collector = '{B}' "
            "BEGIN SELECT RAISE(ABORT, 'insert refused'); END"
        )
    with pytest.raises(sqlite3.DatabaseError):
        two.put("a", b"x")
    assert (two.depth(), two.depth(collector=A)) == (0, 0)


def test_depth_survives_close_and_reopen(path: Path) -> None:
    box = Outbox(path)
    box.configure([A])
    for name in "abcd":
        box.put(name, name.encode() * 3)
    box.attempted("a", collector=A)
    box.acknowledge("b", collector=A)
    box.reject("c", collector=A, status=422, reason="bad")
    box.close()

    reopened = Outbox(path)  # the configured collectors are on disk too
    try:
        assert reopened.collectors == (A,)
        assert reopened.depth() == 2
        assert reopened.rejected_count() == 1
        assert reopened.oldest(collector=A) == [Pending("a", b"aaa", 1), Pending("d", b"ddd", 0)]
        reopened.put("e", b"e")  # order continues after the survivors
        assert ids(reopened) == ["a", "d", "e"]
    finally:
        reopened.close()


def test_written_batch_is_visible_to_another_connection_at_once(path: Path) -> None:
    # Autocommit: put() is durable when it returns, not at close.
    box = Outbox(path)
    box.configure([A])
    try:
        box.put("a", b"x")
        other = Outbox(path)
        try:
            assert other.depth() == 1 and other.depth(collector=A) == 1
        finally:
            other.close()
    finally:
        box.close()


def test_duplicate_batch_id_refused(outbox: Outbox) -> None:
    outbox.put("a", b"first")
    with pytest.raises(sqlite3.IntegrityError):
        outbox.put("a", b"second")
    assert outbox.oldest(collector=A) == [Pending("a", b"first", 0)]


def test_added_collector_gets_what_is_still_on_disk(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    box = Outbox(path)
    box.configure([A])
    for name in "abc":
        box.put(name, name.encode())
    box.acknowledge("a", collector=A)  # delivered and deleted: gone for a collector added later
    box.close()

    box = Outbox(path)
    try:
        with caplog.at_level(logging.INFO, logger="monitor.probe"):
            box.configure([A, B])
        assert ids(box, B) == ["b", "c"]
        assert ids(box, A) == ["b", "c"]  # unchanged
        assert any(f"collector {B} added" in r.getMessage() for r in caplog.records)
        box.put("d", b"d")
        assert ids(box, A) == ids(box, B) == ["b", "c", "d"]
        box.configure([A, B])  # the same set again changes nothing
        assert ids(box, B) == ["b", "c", "d"]
    finally:
        box.close()


def test_removed_collector_pins_nothing(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    box = Outbox(path)
    box.configure([A, B])
    for name in "abc":
        box.put(name, name.encode())
    box.acknowledge("a", collector=A)
    box.acknowledge("b", collector=A)  # A done with a, b; B (soon gone) with none
    box.close()

    box = Outbox(path)
    try:
        with caplog.at_level(logging.WARNING, logger="monitor.probe"):
            box.configure([A])
        assert box.collectors == (A,)
        assert (box.depth(), box.depth(collector=B)) == (1, 0)  # only c, which A still needs
        assert ids(box, A) == ["c"]
        (record,) = [r for r in caplog.records if B in r.getMessage()]
        assert "3 batches" in record.getMessage() and record.levelno == logging.WARNING
        # Added back later, it is a new collector: what is on disk now.
        box.configure([A, B])
        assert ids(box, B) == ["c"]
    finally:
        box.close()


def test_replacing_every_collector_moves_the_backlog(path: Path) -> None:
    box = Outbox(path)
    box.configure([A])
    box.put("a", b"a")
    box.configure([B])
    try:
        assert (ids(box, A), ids(box, B), box.depth()) == ([], ["a"], 1)
    finally:
        box.close()


def test_legacy_file_is_upgraded_in_place(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_legacy(path, [("x", b"body-x", 4), ("y", b"body-y", 0)], rejected=2)
    with caplog.at_level(logging.INFO, logger="monitor.probe"):
        box = Outbox(path)
    try:
        assert any("upgraded" in r.getMessage() for r in caplog.records)
        assert box.collectors == ()
        assert box.depth() == 2  # waiting for a collector to be configured
        box.configure([A, B])
        for url in (A, B):  # every configured collector gets the pending batches, in order
            assert box.oldest(collector=url) == [
                Pending("x", b"body-x", 0),
                Pending("y", b"body-y", 0),
            ]
        assert (box.rejected_count(), box.rejected_count(collector=LEGACY_COLLECTOR)) == (2, 2)
        box.put("z", b"z")  # order continues after the old batches
        assert ids(box, B) == ["x", "y", "z"]
        box.acknowledge("x", collector=A)
        box.reject("x", collector=B, status=422, reason="r")  # a second row for x: other key
        box.reject("old-0", collector=A, status=422, reason="r")  # not pending: no change
        assert (box.depth(), box.rejected_count()) == (2, 3)
    finally:
        box.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        rows = db.execute("SELECT batch_id, collector FROM rejected ORDER BY 1, 2").fetchall()
    assert rows == [("old-0", ""), ("old-1", ""), ("x", B)]
    reopened = Outbox(path)  # upgraded once; opening again changes nothing
    try:
        assert (reopened.collectors, ids(reopened, A)) == ((A, B), ["y", "z"])
    finally:
        reopened.close()


def test_a_newer_schema_is_refused(path: Path) -> None:
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(sqlite3.DatabaseError, match="newer"):
        Outbox(path)
