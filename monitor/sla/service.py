"""SLA reports and uptime from the rollups: whole hours from the hour tables, the partial hours at
the edges from the minute tables; raw results are never read (docs/sla.md)."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from monitor.attestations.models import Attestation, Document
from monitor.db.models import Chain, Operator
from monitor.exceptions import MalformedRequest, NotFound
from monitor.sla import histogram
from monitor.sla.judge import REASONS, ProbeMinute, SlaFigures, SlaTargets, figures
from monitor.sla.models import ProbeHour, ProbeMinuteRow, SubjectHour, SubjectMinute
from monitor.sla.penalties import PenaltyPolicy, Recommendation, policy_hash, recommend
from monitor.sla.rollup import hour_of, minute_of
from monitor.sla.targets import subject_targets

MAX_PERIOD = timedelta(days=400)
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)  # far from datetime's end: periods add hours
MAX_BREACH_RANGES = 500
UPTIME_WINDOWS = {
    "1h": 3600,
    "24h": 86_400,
    "7d": 7 * 86_400,
    "30d": 30 * 86_400,
    "365d": 365 * 86_400,
}


@dataclass(frozen=True)
class BreachRange:
    start: datetime
    end: datetime  # exclusive
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class SlaReport:
    operator_id: str
    chain_id: int
    start: datetime
    end: datetime
    targets: SlaTargets
    figures: SlaFigures
    longest_outage_minutes: int
    breaches: tuple[BreachRange, ...]
    breaches_truncated: bool
    recommendation: Recommendation
    policy_hash: str


def subject(session: Session, *, operator_id: str, chain_id: int) -> tuple[Chain, Operator]:
    operator = session.get(Operator, operator_id)
    if operator is None:
        raise NotFound(f"operator {operator_id!r} is not in the registry", code="unknown_operator")
    chain = session.get(Chain, chain_id)
    if chain is None:
        raise NotFound(f"chain {chain_id} is not in the registry", code="unknown_chain")
    return chain, operator


def check_period(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """Whole minutes; a clear error for an empty, reversed or too long period."""
    start, end = minute_of(start), minute_of(end)
    if not (start >= EARLIEST and end <= LATEST):
        raise MalformedRequest(
            f"periods lie between {EARLIEST.date()} and {LATEST.date()}", code="bad_period"
        )
    if end <= start:
        raise MalformedRequest(
            "the period is empty: end must be at least a minute after start", code="bad_period"
        )
    if end - start > MAX_PERIOD:
        raise MalformedRequest(f"periods are at most {MAX_PERIOD.days} days", code="bad_period")
    return start, end


def period_figures(
    session: Session,
    *,
    chain_id: int,
    operator_id: str,
    start: datetime,
    end: datetime,
    targets: SlaTargets,
    minutes_only: bool = False,
) -> tuple[SlaFigures, int]:
    """The figures of ``[start, end)`` (whole minutes) and the longest outage in minutes.

    ``minutes_only``: the minute counts and availability alone (uptime), without the per-probe
    sums that latency and correctness need, nor the outage (0)."""
    first_hour = hour_of(start) if start == hour_of(start) else hour_of(start) + timedelta(hours=1)
    last_hour = hour_of(end)  # exclusive
    # Whole hours in the middle from the hour tables; the edges (or all of a short period) from
    # the minute tables.
    edges = [(start, first_hour), (last_hour, end)] if first_hour < last_hour else [(start, end)]
    up = down = 0
    reasons = dict.fromkeys(REASONS, 0)
    per_probe: dict[int, ProbeMinute] = defaultdict(ProbeMinute)
    if first_hour < last_hour:
        hours = (
            SubjectHour.chain_id == chain_id,
            SubjectHour.operator_id == operator_id,
            SubjectHour.hour >= first_hour,
            SubjectHour.hour < last_hour,
        )
        row = session.execute(
            select(
                func.coalesce(func.sum(SubjectHour.up), 0),
                func.coalesce(func.sum(SubjectHour.down), 0),
                func.coalesce(func.sum(SubjectHour.unavailable), 0),
                func.coalesce(func.sum(SubjectHour.lagging), 0),
                func.coalesce(func.sum(SubjectHour.incorrect), 0),
            ).where(*hours)
        ).one()
        up, down = int(row[0]), int(row[1])
        for reason, n in zip(REASONS, row[2:], strict=True):
            reasons[reason] += int(n)
        # Plain columns, not ORM objects: a year is thousands of rows per probe.
        for probe_id, samples, available, judged, incorrect, latency in (
            ()
            if minutes_only
            else session.execute(
                select(
                    ProbeHour.probe_id,
                    ProbeHour.samples,
                    ProbeHour.available,
                    ProbeHour.judged,
                    ProbeHour.incorrect,
                    ProbeHour.latency,
                ).where(
                    ProbeHour.chain_id == chain_id,
                    ProbeHour.operator_id == operator_id,
                    ProbeHour.hour >= first_hour,
                    ProbeHour.hour < last_hour,
                )
            )
        ):
            per_probe[probe_id].merge(
                ProbeMinute(
                    samples=samples,
                    available=available,
                    judged=judged,
                    incorrect=incorrect,
                    latency=histogram.loads(latency),
                )
            )
    for lo, hi in edges:
        if lo >= hi:
            continue
        for state, minute_reasons, n in session.execute(
            select(SubjectMinute.state, SubjectMinute.reasons, func.count())
            .where(
                SubjectMinute.chain_id == chain_id,
                SubjectMinute.operator_id == operator_id,
                SubjectMinute.minute >= lo,
                SubjectMinute.minute < hi,
            )
            .group_by(SubjectMinute.state, SubjectMinute.reasons)
        ):
            up += n if state == "up" else 0
            down += n if state == "down" else 0
            for reason in minute_reasons.split(",") if minute_reasons else ():
                reasons[reason] += n
        for probe_id, samples, available, judged, incorrect, lags, latency in (
            ()
            if minutes_only
            else session.execute(
                select(
                    ProbeMinuteRow.probe_id,
                    ProbeMinuteRow.samples,
                    ProbeMinuteRow.available,
                    ProbeMinuteRow.judged,
                    ProbeMinuteRow.incorrect,
                    ProbeMinuteRow.lags,
                    ProbeMinuteRow.latency,
                ).where(
                    ProbeMinuteRow.chain_id == chain_id,
                    ProbeMinuteRow.operator_id == operator_id,
                    ProbeMinuteRow.minute >= lo,
                    ProbeMinuteRow.minute < hi,
                )
            )
        ):
            per_probe[probe_id].merge(
                ProbeMinute(
                    samples=samples,
                    available=available,
                    judged=judged,
                    incorrect=incorrect,
                    lags={int(k): int(v) for k, v in json.loads(lags).items()},
                    latency=histogram.loads(latency),
                )
            )
    minutes = int((end - start).total_seconds()) // 60
    result = figures(
        minutes=minutes,
        up=up,
        down=down,
        down_by_reason=reasons,
        per_probe=per_probe.values(),
        targets=targets,
    )
    if minutes_only:
        return result, 0
    return result, longest_outage(
        session, chain_id=chain_id, operator_id=operator_id, start=start, end=end
    )


def down_minutes(
    session: Session, *, chain_id: int, operator_id: str, start: datetime, end: datetime
) -> list[tuple[datetime, tuple[str, ...]]]:
    rows = session.execute(
        select(SubjectMinute.minute, SubjectMinute.reasons)
        .where(
            SubjectMinute.chain_id == chain_id,
            SubjectMinute.operator_id == operator_id,
            SubjectMinute.minute >= start,
            SubjectMinute.minute < end,
            SubjectMinute.state == "down",
        )
        .order_by(SubjectMinute.minute)
    )
    return [(minute, tuple(reasons.split(","))) for minute, reasons in rows]


def breach_ranges(minutes: list[tuple[datetime, tuple[str, ...]]]) -> list[BreachRange]:
    """Consecutive down minutes with the same reasons, as ranges."""
    out: list[BreachRange] = []
    for minute, reasons in minutes:
        last = out[-1] if out else None
        if last is not None and last.end == minute and last.reasons == reasons:
            out[-1] = BreachRange(last.start, minute + timedelta(minutes=1), reasons)
        else:
            out.append(BreachRange(minute, minute + timedelta(minutes=1), reasons))
    return out


def longest_run(minutes: list[tuple[datetime, tuple[str, ...]]], reason: str) -> int:
    best = run = 0
    previous: datetime | None = None
    for minute, reasons in minutes:
        if reason not in reasons:
            previous, run = None, 0
            continue
        run = run + 1 if previous is not None and minute - previous == timedelta(minutes=1) else 1
        previous = minute
        best = max(best, run)
    return best


def longest_outage(
    session: Session, *, chain_id: int, operator_id: str, start: datetime, end: datetime
) -> int:
    minutes = down_minutes(
        session, chain_id=chain_id, operator_id=operator_id, start=start, end=end
    )
    return longest_run(minutes, "unavailable")


def penalty_policy(session: Session) -> PenaltyPolicy:
    document = session.get(Document, "penalty_policy")
    if document is None:
        return PenaltyPolicy()
    return PenaltyPolicy.model_validate_json(document.body)


def previous_violations(
    session: Session, *, chain_id: int, operator_id: str, before: datetime, lookback_days: int
) -> set[str]:
    """The violation kinds the subject's attestations recorded within the look-back."""
    rows = session.scalars(
        select(Attestation.violations).where(
            Attestation.chain_id == chain_id,
            Attestation.operator_id == operator_id,
            Attestation.period_end <= before,
            Attestation.period_end > before - timedelta(days=lookback_days),
        )
    )
    return {kind for row in rows for kind in json.loads(row)}


def sla_report(
    session: Session, *, operator_id: str, chain_id: int, start: datetime, end: datetime
) -> SlaReport:
    chain, operator = subject(session, operator_id=operator_id, chain_id=chain_id)
    start, end = check_period(start, end)
    targets = subject_targets(chain, operator)
    result, outage = period_figures(
        session, chain_id=chain_id, operator_id=operator_id, start=start, end=end, targets=targets
    )
    ranges = breach_ranges(
        down_minutes(session, chain_id=chain_id, operator_id=operator_id, start=start, end=end)
    )
    policy = penalty_policy(session)
    previous = previous_violations(
        session,
        chain_id=chain_id,
        operator_id=operator_id,
        before=start,
        lookback_days=policy.lookback_days,
    )
    return SlaReport(
        operator_id=operator_id,
        chain_id=chain_id,
        start=start,
        end=end,
        targets=targets,
        figures=result,
        longest_outage_minutes=outage,
        breaches=tuple(ranges[:MAX_BREACH_RANGES]),
        breaches_truncated=len(ranges) > MAX_BREACH_RANGES,
        recommendation=recommend(
            verdicts=result.verdicts,
            longest_outage_minutes=outage,
            previous=previous,
            policy=policy,
        ),
        policy_hash=policy_hash(policy),
    )


def uptime(
    session: Session, *, operator_id: str, chain_id: int, window: str, now: datetime
) -> SlaFigures:
    """Uptime over a window ending now; windows from 7d up start on a whole hour."""
    seconds = UPTIME_WINDOWS.get(window)
    if seconds is None:
        raise NotFound(
            f"unknown window {window!r}; known: {', '.join(UPTIME_WINDOWS)}",
            code="unknown_uptime_window",
        )
    chain, operator = subject(session, operator_id=operator_id, chain_id=chain_id)
    end = minute_of(now) + timedelta(minutes=1)  # the current minute, as far as it is known
    start = minute_of(end - timedelta(seconds=seconds))
    if seconds >= UPTIME_WINDOWS["7d"]:
        start = hour_of(start)
    result, _ = period_figures(
        session,
        chain_id=chain_id,
        operator_id=operator_id,
        start=start,
        end=end,
        targets=subject_targets(chain, operator),
        minutes_only=True,
    )
    return result
