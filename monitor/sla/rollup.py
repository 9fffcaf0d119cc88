"""Fold stored batches into the SLA rollups (docs/sla.md, "Rollups").

A job, not the ingest path: ingest stays one short transaction per batch and never waits for
rollups. Each run takes the batches not yet rolled up (``batches.rolled_up``, oldest first, a
bounded number), adds their results to the probe-minutes they belong to (by observation time, so
a late batch from a probe's outbox corrects the minutes it observed), re-judges those minutes,
recomputes their hours, and marks the batches rolled up, all in one transaction: a batch is
counted exactly once, or not yet.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar, cast

from sqlalchemy import select, tuple_, update
from sqlalchemy.orm import Session

from monitor.db.models import Batch, Chain, Operator, Result
from monitor.sla import histogram
from monitor.sla.judge import ProbeMinute, SlaTargets, judge_minute
from monitor.sla.models import ProbeHour, ProbeMinuteRow, SubjectHour, SubjectMinute
from monitor.sla.targets import subject_targets

Subject = tuple[int, str]  # (chain id, operator id)
BATCHES_PER_RUN = 2_000
T = TypeVar("T")


def minute_of(t: datetime) -> datetime:
    return t.replace(second=0, microsecond=0)


def hour_of(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def probe_minute_of(row: ProbeMinuteRow | ProbeHour) -> ProbeMinute:
    lags = json.loads(row.lags) if isinstance(row, ProbeMinuteRow) else {}
    return ProbeMinute(
        samples=row.samples,
        available=row.available,
        judged=row.judged,
        incorrect=row.incorrect,
        lags={int(k): int(v) for k, v in lags.items()},
        latency=histogram.loads(row.latency),
    )


@dataclass
class RollupSummary:
    batches: int
    minutes: int  # subject-minutes re-judged
    hours: int


def roll_up(session: Session, *, limit: int = BATCHES_PER_RUN) -> RollupSummary:
    """One run; call until it returns ``batches == 0`` to catch up.

    Costs what arrived, not what is stored: hours are updated by the difference each change
    makes (probe sums are added; a re-judged minute moves its hour's counts from its old state
    to its new one), never recomputed from their minutes."""
    batch_ids = session.scalars(
        select(Batch.id).where(Batch.rolled_up.is_(False)).order_by(Batch.id).limit(limit)
    ).all()
    if not batch_ids:
        return RollupSummary(0, 0, 0)
    deltas: dict[tuple[int, str, datetime, int], ProbeMinute] = defaultdict(ProbeMinute)
    rows = session.execute(
        select(
            Result.chain_id,
            Result.operator_id,
            Result.probe_id,
            Result.observed_at,
            Result.ok,
            Result.correct,
            Result.lag_blocks,
            Result.latency_ms,
        ).where(Result.batch_id.in_(batch_ids))
    )
    for chain_id, operator_id, probe_id, observed_at, ok, correct, lag, latency_ms in rows:
        deltas[(chain_id, operator_id, minute_of(observed_at), probe_id)].add(
            ok=ok,
            correct=correct,
            lag_blocks=lag,
            latency_us=None if latency_ms is None else round(latency_ms * 1000),
        )
    _add_probe_minutes(session, deltas)
    _add_probe_hours(session, deltas)
    minutes = {(c, o, m) for c, o, m, _ in deltas}
    changes = _judge_minutes(session, minutes)
    hours = _add_subject_hours(session, changes)
    session.execute(update(Batch).where(Batch.id.in_(batch_ids)).values(rolled_up=True))
    return RollupSummary(len(batch_ids), len(minutes), hours)


MinuteKey = tuple[int, str, datetime]
Counts = tuple[int, int, int, int, int, int]  # up, down, unavailable, lagging, incorrect, samples


def _counts(state: str, reasons: str, samples: int) -> Counts:
    named = reasons.split(",") if reasons else []
    return (
        int(state == "up"),
        int(state == "down"),
        int("unavailable" in named),
        int("lagging" in named),
        int("incorrect" in named),
        samples,
    )


def _add_probe_minutes(
    session: Session, deltas: dict[tuple[int, str, datetime, int], ProbeMinute]
) -> None:
    keys = list(deltas)
    existing = {
        (r.chain_id, r.operator_id, r.minute, r.probe_id): r
        for chunk in _chunks(keys, 500)
        for r in session.scalars(
            select(ProbeMinuteRow).where(
                tuple_(
                    ProbeMinuteRow.chain_id,
                    ProbeMinuteRow.operator_id,
                    ProbeMinuteRow.minute,
                    ProbeMinuteRow.probe_id,
                ).in_(chunk)
            )
        )
    }
    for key, delta in deltas.items():
        row = existing.get(key)
        if row is None:
            row = ProbeMinuteRow(
                chain_id=key[0], operator_id=key[1], minute=key[2], probe_id=key[3]
            )
            session.add(row)
            total = delta
        else:
            total = probe_minute_of(row)
            total.merge(delta)
        row.samples, row.available = total.samples, total.available
        row.judged, row.incorrect = total.judged, total.incorrect
        row.lags = json.dumps({str(k): v for k, v in sorted(total.lags.items())})
        row.latency = histogram.dumps(total.latency)
    session.flush()


def _add_probe_hours(
    session: Session, deltas: dict[tuple[int, str, datetime, int], ProbeMinute]
) -> None:
    per_hour: dict[tuple[int, str, datetime, int], ProbeMinute] = defaultdict(ProbeMinute)
    for (chain_id, operator_id, minute, probe_id), delta in deltas.items():
        per_hour[(chain_id, operator_id, hour_of(minute), probe_id)].merge(delta)
    for (chain_id, operator_id, hour, probe_id), delta in sorted(per_hour.items()):
        row = session.get(ProbeHour, (chain_id, operator_id, hour, probe_id))
        if row is None:
            row = ProbeHour(
                chain_id=chain_id, operator_id=operator_id, hour=hour, probe_id=probe_id
            )
            session.add(row)
            total = delta
        else:
            total = probe_minute_of(row)
            total.merge(delta)
        row.samples, row.available = total.samples, total.available
        row.judged, row.incorrect = total.judged, total.incorrect
        row.latency = histogram.dumps(total.latency)
    session.flush()


def _targets(session: Session, subjects: Iterable[Subject]) -> dict[Subject, SlaTargets]:
    subjects = set(subjects)
    chains = {c.chain_id: c for c in session.scalars(select(Chain))}
    operators = {o.id: o for o in session.scalars(select(Operator))}
    return {(c, o): subject_targets(chains[c], operators[o]) for c, o in subjects}


def _judge_minutes(session: Session, minutes: set[MinuteKey]) -> dict[MinuteKey, Counts]:
    """Re-judge ``minutes``; returns each one's change of counts (new minus old)."""
    targets = _targets(session, ((c, o) for c, o, _ in minutes))
    by_minute: dict[MinuteKey, list[ProbeMinute]] = defaultdict(list)
    old: dict[MinuteKey, SubjectMinute] = {}
    for chunk in _chunks(sorted(minutes), 500):
        for pm_row in session.scalars(
            select(ProbeMinuteRow).where(
                tuple_(
                    ProbeMinuteRow.chain_id, ProbeMinuteRow.operator_id, ProbeMinuteRow.minute
                ).in_(chunk)
            )
        ):
            key = (pm_row.chain_id, pm_row.operator_id, pm_row.minute)
            by_minute[key].append(probe_minute_of(pm_row))
        for verdict_row in session.scalars(
            select(SubjectMinute).where(
                tuple_(SubjectMinute.chain_id, SubjectMinute.operator_id, SubjectMinute.minute).in_(
                    chunk
                )
            )
        ):
            old[(verdict_row.chain_id, verdict_row.operator_id, verdict_row.minute)] = verdict_row
    changes: dict[MinuteKey, Counts] = {}
    for key in sorted(minutes):
        verdict = judge_minute(by_minute[key], targets[(key[0], key[1])])
        reasons = ",".join(verdict.reasons)
        new = _counts(verdict.state, reasons, verdict.samples)
        row = old.get(key)
        if row is None:
            row = SubjectMinute(chain_id=key[0], operator_id=key[1], minute=key[2])
            session.add(row)
            before: Counts = (0, 0, 0, 0, 0, 0)
        else:
            before = _counts(row.state, row.reasons, row.samples)
        row.state, row.reasons = verdict.state, reasons
        row.probes, row.samples = verdict.probes, verdict.samples
        changes[key] = cast(Counts, tuple(n - b for n, b in zip(new, before, strict=True)))
    session.flush()
    return changes


def _add_subject_hours(session: Session, changes: dict[MinuteKey, Counts]) -> int:
    per_hour: dict[MinuteKey, list[int]] = defaultdict(lambda: [0] * 6)
    for (chain_id, operator_id, minute), change in changes.items():
        total = per_hour[(chain_id, operator_id, hour_of(minute))]
        for i, n in enumerate(change):
            total[i] += n
    for (chain_id, operator_id, hour), d in sorted(per_hour.items()):
        row = session.get(SubjectHour, (chain_id, operator_id, hour))
        if row is None:
            row = SubjectHour(
                chain_id=chain_id,
                operator_id=operator_id,
                hour=hour,
                up=0,
                down=0,
                unavailable=0,
                lagging=0,
                incorrect=0,
                samples=0,
            )
            session.add(row)
        row.up += d[0]
        row.down += d[1]
        row.unavailable += d[2]
        row.lagging += d[3]
        row.incorrect += d[4]
        row.samples += d[5]
    session.flush()
    return len(per_hour)


def _chunks(items: Sequence[T], size: int) -> Iterable[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
