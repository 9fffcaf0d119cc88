"""``GET /v1/batches``: the stored signed batches in the order this collector stored them, for
peers to pull (monitor.ingest.sync) and for anyone to mirror.

The cursor is the storage sequence (``batches.id``) of the last batch served, in decimal.
Ids are allocated when a row is inserted, not when its transaction commits, so on PostgreSQL a
batch may become visible after one with a higher id: a reader whose cursor went past it would
never see it. A page therefore holds only batches stored at least ``settle`` ago and stops at the
first one stored more recently, so a transaction committing within ``settle`` of its
``received_at`` (milliseconds, normally) is never overtaken. SQLite has a single writer: there
ids become visible in order anyway.
"""

from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from monitor.db.models import Batch
from monitor.exceptions import MalformedRequest
from monitor.ingest.schemas import BatchEntry, BatchPage

DEFAULT_LIMIT = 100
MAX_LIMIT = 1_000
# Raw body bytes per page; a page holds at least one batch, however large (at most
# MONITOR_MAX_BODY_BYTES, what ingest takes).
PAGE_MAX_BYTES = 4 * 1024 * 1024
_SEQUENCE = re.compile(r"[0-9]{1,19}")
MAX_SEQUENCE = 2**63 - 1


def parse_cursor(cursor: str) -> int:
    """This collector's cursor -> the storage sequence it stands for; 422 when it is not one."""
    if not _SEQUENCE.fullmatch(cursor) or int(cursor) > MAX_SEQUENCE:
        raise MalformedRequest(
            "since is a cursor this collector gave as `next` (0 or absent: from the start)",
            code="malformed_cursor",
        )
    return int(cursor)


def batches_since(
    session: Session,
    *,
    since: int,
    limit: int,
    settled_before: datetime,
    max_bytes: int = PAGE_MAX_BYTES,
) -> BatchPage:
    """Up to ``limit`` batches after sequence ``since`` (and up to ``max_bytes`` of bodies, but
    at least one), stored no later than ``settled_before``."""
    size = (
        func.octet_length(Batch.body)  # PostgreSQL reads it from the TOAST header: no body read
        if session.get_bind().dialect.name == "postgresql"
        else func.length(Batch.body)  # SQLite: characters, bytes for the ASCII JSON bodies are
    )
    candidates = session.execute(
        select(Batch.id, Batch.received_at, size)
        .where(Batch.id > since)
        .order_by(Batch.id)
        .limit(limit + 1)
    ).all()
    chosen: list[int] = []
    total = 0
    more = False
    for batch_id, received_at, length in candidates:
        if received_at > settled_before:
            break  # not settled: neither it nor anything after it yet
        if len(chosen) == limit or (chosen and total + length > max_bytes):
            more = True
            break
        chosen.append(batch_id)
        total += length
    entries: list[BatchEntry] = []
    if chosen:
        rows = session.execute(
            select(Batch.body_hash, Batch.body).where(Batch.id.in_(chosen)).order_by(Batch.id)
        )
        entries = [BatchEntry(hash=digest, body=body) for digest, body in rows]
    # Past the last one chosen, even if retention deleted it meanwhile: it is gone either way.
    return BatchPage(batches=entries, next=str(chosen[-1] if chosen else since), more=more)
