"""The answers of /v1/scores and /v1/weights, kept in memory as the JSON bytes served.

An answer depends only on the chain (it must be active), the latest scoring run of the window
(its scores; endpoint URLs never change: the registry names an endpoint by its URL) and, for the
weights, the collector's key. So each answer is stored with the id of the run it was built from,
and served straight from memory, with no database query and no thread hop, while it is *fresh*:

* checked against the database (chain active? latest run id?) less than ``ttl_s`` ago, and
* no session of this process has committed a change to a scoring run, chain or endpoint since
  (a SQLAlchemy ``after_commit`` hook bumps :data:`CHANGES`): this process's scoring job and
  registry changes are seen at once; another process's (a replica's run, ``monitor registry
  apply``) within ``ttl_s``.

When not fresh the database is asked for the token (one small query); an unchanged token only
renews the answer, a new run rebuilds it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event, func, select
from sqlalchemy.orm import Session, UOWTransaction

from monitor.db.models import Chain, Endpoint, ScoringRun

_WATCHED = (ScoringRun, Chain, Endpoint)
_STALE = "monitor.answers.stale"


class Changes:
    """A counter bumped by every commit in this process that touched a watched row."""

    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()

    def bump(self) -> None:
        with self._lock:
            self.value += 1


CHANGES = Changes()


@event.listens_for(Session, "after_flush")
def _note_changes(session: Session, _: UOWTransaction) -> None:
    for objects in (session.new, session.dirty, session.deleted):
        if any(isinstance(o, _WATCHED) for o in objects):
            session.info[_STALE] = True
            return


@event.listens_for(Session, "after_commit")
def _bump_on_commit(session: Session) -> None:
    if session.info.pop(_STALE, False):
        CHANGES.bump()


@event.listens_for(Session, "after_rollback")
def _forget_on_rollback(session: Session) -> None:
    session.info.pop(_STALE, None)


def latest_run_token(session: Session, *, chain_id: int, window_s: int) -> tuple[bool, int] | None:
    """(chain active, latest run id or 0) in one query; None if the chain is not registered."""
    latest = (
        select(func.coalesce(func.max(ScoringRun.id), 0))
        .where(ScoringRun.chain_id == chain_id, ScoringRun.window_s == window_s)
        .scalar_subquery()
    )
    row = session.execute(select(Chain.active, latest).where(Chain.chain_id == chain_id)).first()
    return None if row is None else (bool(row[0]), int(row[1]))


@dataclass(slots=True)
class _Entry:
    run_id: int
    body: bytes
    checked_at: float  # time.monotonic() of the last check against the database
    changes: int  # CHANGES.value read before that check


class AnswerCache:
    """Answer bytes by key (e.g. ("weights", chain id, window)); see the module's docstring."""

    def __init__(self, ttl_s: float, *, max_entries: int = 1024) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: dict[Hashable, _Entry] = {}

    def fresh(self, key: Hashable) -> bytes | None:
        """The stored answer if it may be served without asking the database."""
        entry = self._entries.get(key)
        if (
            entry is None
            or entry.changes != CHANGES.value
            or time.monotonic() - entry.checked_at >= self.ttl_s
        ):
            return None
        return entry.body

    def revalidated(self, key: Hashable, run_id: int, changes: int) -> bytes | None:
        """The stored answer if it was built from ``run_id`` (now marked as checked)."""
        entry = self._entries.get(key)
        if entry is None or entry.run_id != run_id:
            return None
        entry.checked_at, entry.changes = time.monotonic(), changes
        return entry.body

    def store(self, key: Hashable, run_id: int, changes: int, body: bytes) -> None:
        if key not in self._entries and len(self._entries) >= self.max_entries:
            self._entries.clear()  # keys are (chain, window): only a flood of chains gets here
        self._entries[key] = _Entry(run_id, body, time.monotonic(), changes)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Any) -> bool:
        return key in self._entries
