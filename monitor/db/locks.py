"""One run of a scheduled job at a time across collector replicas (docs/scaling.md).

Several ``monitor serve`` processes on one PostgreSQL each schedule every job. A run takes a
session-level advisory lock, keyed by the job's name, for its whole duration (its work may span
several transactions) and is skipped when another replica holds it. ``due`` (read under the
lock) lets a job also skip a run that another replica already made in the current interval.
The lock lives on its own pooled connection, committed right after it is taken, so no
transaction stays open while the job runs; if the process dies, PostgreSQL ends its session and
the lock with it. SQLite serves one process: no lock there.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

log = logging.getLogger("monitor.jobs")

_NAMESPACE = "monitor.job:"


def job_key(name: str) -> int:
    """A stable signed 64-bit lock key per job name (the same in every replica and release)."""
    digest = hashlib.sha256((_NAMESPACE + name).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextlib.contextmanager
def job_lock(engine: Engine, name: str) -> Iterator[bool]:
    """True inside when this process holds the job's lock (always on SQLite), False when
    another one does; released on exit."""
    if engine.dialect.name != "postgresql":
        yield True
        return
    key = job_key(name)
    with engine.connect() as conn:
        acquired = bool(conn.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}))
        conn.commit()  # the lock is the session's: no transaction held open meanwhile
        try:
            yield acquired
        finally:
            if acquired:
                try:
                    conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                    conn.commit()
                except DBAPIError:  # connection lost: the server ended the session and its lock
                    conn.invalidate()
                    log.warning("%s: lock connection lost; the server released the lock", name)


def run_once(
    engine: Engine,
    name: str,
    work: Callable[[], object],
    *,
    due: Callable[[], bool] | None = None,
) -> bool:
    """Run ``work`` unless another replica is running job ``name`` now, or ``due`` (asked
    while holding the lock) says this interval's run is already done; True if it ran."""
    with job_lock(engine, name) as mine:
        if not mine:
            log.debug("%s: running in another replica, skipped", name)
            return False
        if due is not None and not due():
            log.debug("%s: already run this interval, skipped", name)
            return False
        work()
        return True


def interval_start(now: datetime, interval_s: float) -> datetime:
    """The start of the interval slot ``now`` falls in, slots counted from the epoch: the same
    slots in every replica, whatever their start times."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    seconds = (now - epoch).total_seconds()
    return epoch + timedelta(seconds=seconds - seconds % interval_s)
