"""The probe's durable outbox: order, acknowledgement, rejection, durability."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.probe.outbox import Outbox, Pending


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "keys" / "probe.key.outbox.sqlite"  # the parent is created on open


@pytest.fixture
def outbox(path: Path) -> Iterator[Outbox]:
    box = Outbox(path)
    yield box
    box.close()


def ids(box: Outbox, limit: int = 100) -> list[str]:
    return [p.batch_id for p in box.oldest(limit)]


def test_empty(outbox: Outbox) -> None:
    assert outbox.oldest() == []
    assert outbox.depth() == 0
    assert outbox.rejected_count() == 0


def test_put_then_oldest_in_insertion_order(outbox: Outbox) -> None:
    # Insertion order, not id order.
    names = ["c", "a", "b", "e", "d"]
    for name in names:
        outbox.put(name, f"body-{name}".encode())
    pending = outbox.oldest()
    assert [p.batch_id for p in pending] == names
    assert pending[0] == Pending("c", b"body-c", 0)
    assert all(isinstance(p.body, bytes) for p in pending)
    assert ids(outbox, limit=2) == ["c", "a"]
    assert outbox.depth() == 5


def test_acknowledge_removes_only_that_batch(outbox: Outbox) -> None:
    for name in "abc":
        outbox.put(name, b"x")
    outbox.acknowledge("b")
    assert ids(outbox) == ["a", "c"]
    outbox.acknowledge("b")  # twice is harmless
    outbox.acknowledge("unknown")
    assert outbox.depth() == 2
    outbox.acknowledge("a")
    outbox.acknowledge("c")
    assert outbox.oldest() == [] and outbox.depth() == 0


def test_attempted_counts(outbox: Outbox) -> None:
    outbox.put("a", b"x")
    outbox.put("b", b"y")
    outbox.attempted("a")
    outbox.attempted("a")
    assert [(p.batch_id, p.attempts) for p in outbox.oldest()] == [("a", 2), ("b", 0)]


def test_reject_moves_to_rejected(outbox: Outbox, path: Path) -> None:
    for name in "abc":
        outbox.put(name, f"body-{name}".encode())
    outbox.reject("b", status=403, reason='{"error": "unknown_probe"}')
    assert ids(outbox) == ["a", "c"]
    assert (outbox.depth(), outbox.rejected_count()) == (2, 1)
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT batch_id, body, status, reason FROM rejected").fetchall()
    assert rows == [("b", b"body-b", 403, '{"error": "unknown_probe"}')]


def test_reject_unknown_batch_changes_nothing(outbox: Outbox) -> None:
    outbox.put("a", b"x")
    outbox.reject("zzz", status=400, reason="?")
    assert (outbox.depth(), outbox.rejected_count()) == (1, 0)


def test_reject_is_one_step(outbox: Outbox, path: Path) -> None:
    # If the delete fails, the insert is rolled back too: the batch is never in both tables
    # (nor in neither).
    outbox.put("a", b"x")
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TRIGGER no_delete BEFORE DELETE ON pending "
            "BEGIN SELECT RAISE(ABORT, 'delete refused'); END"
        )
    with pytest.raises(sqlite3.DatabaseError):
        outbox.reject("a", status=403, reason="x")
    assert (outbox.depth(), outbox.rejected_count()) == (1, 0)
    with sqlite3.connect(path) as db:
        db.execute("DROP TRIGGER no_delete")
    # The connection is still usable afterwards, and the move then succeeds.
    outbox.reject("a", status=403, reason="x")
    assert (outbox.depth(), outbox.rejected_count()) == (0, 1)


def test_depth_survives_close_and_reopen(path: Path) -> None:
    box = Outbox(path)
    for name in "abcd":
        box.put(name, name.encode() * 3)
    box.attempted("a")
    box.acknowledge("b")
    box.reject("c", status=422, reason="bad")
    box.close()

    reopened = Outbox(path)
    try:
        assert reopened.depth() == 2
        assert reopened.rejected_count() == 1
        assert reopened.oldest() == [Pending("a", b"aaa", 1), Pending("d", b"ddd", 0)]
        reopened.put("e", b"e")  # order continues after the survivors
        assert ids(reopened) == ["a", "d", "e"]
    finally:
        reopened.close()


def test_written_batch_is_visible_to_another_connection_at_once(path: Path) -> None:
    # Autocommit: put() is durable when it returns, not at close.
    box = Outbox(path)
    try:
        box.put("a", b"x")
        other = Outbox(path)
        try:
            assert other.depth() == 1
        finally:
            other.close()
    finally:
        box.close()


def test_duplicate_batch_id_refused(outbox: Outbox) -> None:
    outbox.put("a", b"first")
    with pytest.raises(sqlite3.IntegrityError):
        outbox.put("a", b"second")
    assert outbox.oldest() == [Pending("a", b"first", 0)]
