"""The scheduled scoring job: every ``scoring_interval_s``, every chain and window, one run at
a fixed evaluation time, replayed when late data arrives (:func:`buckets_due`); the SLA's jobs
(monitor.sla.job) share its scheduler. With several replicas on one PostgreSQL, one of them
makes each interval's runs (monitor.db.locks)."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from apscheduler.schedulers.background import BackgroundScheduler
from eth_account.signers.local import LocalAccount
from sqlalchemy import Engine, delete, func, select
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from monitor.db.locks import interval_start, run_once
from monitor.db.models import Batch, Result, ScoringRun
from monitor.db.session import session_scope
from monitor.ingest.sync import add_sync_job
from monitor.scoring.service import RunSummary, score_all
from monitor.settings import Settings, parse_window
from monitor.sla.job import add_sla_jobs

if TYPE_CHECKING:
    from monitor.metrics import JobMetrics

log = logging.getLogger("monitor.scoring")

# Longer than an ingest transaction holds a batch id before committing it (buckets_due).
COMMIT_MARGIN = timedelta(seconds=2)


def run_scoring(
    engine: Engine,
    settings: Settings,
    *,
    as_of: datetime | None = None,
    metrics: JobMetrics | None = None,
) -> list[RunSummary]:
    """Score every active chain and window; a completed run's duration goes to ``metrics``."""
    as_of = as_of or datetime.now(UTC)
    started = time.perf_counter()
    with session_scope(engine) as session:
        summaries = score_all(
            session,
            windows_s=[parse_window(w) for w in settings.windows],
            as_of=as_of,
        )
    if metrics is not None:
        metrics.scoring_duration.observe(time.perf_counter() - started)
    return summaries


def buckets_due(
    session: Session,
    *,
    now: datetime,
    interval_s: float,
    settle_s: float,
    replay_s: float,
) -> tuple[list[datetime], int]:
    """The evaluation times the scheduled job scores now, oldest first, and the newest stored
    batch id they take into account.

    Evaluation times are fixed buckets, multiples of the interval since the epoch, ``settle_s``
    behind the clock so that the round just observed has arrived: every collector scores the
    same instants. The list is the current bucket unless already scored, preceded by
    * buckets missed while the job was not running (down, or another replica's turn skipped), and
    * buckets whose window a batch stored since their run observed: late data (a probe's outbox
      catching up, a peer's batches after a partition). Replaying them, in order, makes the
      stored runs those that the complete data gives, hysteresis included; a collector that
      received the same batches in any order or at any time then holds the same runs.
    Both reach back ``replay_s`` at most; older runs stay as they were made.

    The batch id returned is the newest stored ``COMMIT_MARGIN`` ago or earlier: PostgreSQL
    hands out ids before commit, so a batch with a lower id may still commit after a newer
    one was read; taking it as seen could miss it for good. (What came since is looked at again
    next tick; it replays a bucket only if it observed an already scored window.)"""
    interval = timedelta(seconds=interval_s)
    target = interval_start(now - timedelta(seconds=settle_s), interval_s)
    oldest = target - timedelta(seconds=replay_s)
    settled = now - COMMIT_MARGIN
    through: int = (
        session.scalar(
            select(func.coalesce(func.max(Batch.id), 0)).where(Batch.received_at <= settled)
        )
        or 0
    )
    last = session.execute(
        select(ScoringRun.as_of, ScoringRun.batches_through)
        .where(ScoringRun.as_of <= target)  # a later one (settle raised, clock stepped back)
        .order_by(ScoringRun.as_of.desc(), ScoringRun.id.desc())
        .limit(1)
    ).first()
    if last is None:
        return [target], through
    last_as_of, seen = last
    # the next bucket on the grid, also after runs made off it (older versions, another interval)
    start = interval_start(last_as_of, interval_s) + interval if last_as_of < target else None
    earliest = session.scalar(
        # None: a run made outside this job (or by an older version): everything is news once
        select(func.min(Result.observed_at)).where(Result.batch_id > (seen or 0))
    )
    if earliest is not None and earliest < last_as_of:
        # the first bucket whose window [T - window, T) holds it is the next one after it
        late = interval_start(earliest, interval_s) + interval
        start = late if start is None else min(start, late)
    if start is None:
        return [], through
    start = max(start, interval_start(oldest, interval_s))
    buckets: list[datetime] = []
    at = start
    while at <= target and len(buckets) < replay_s / interval_s + 2:
        buckets.append(at)
        at += interval
    return buckets, through


def scheduled_scoring(
    engine: Engine,
    settings: Settings,
    *,
    metrics: JobMetrics | None = None,
    now: datetime | None = None,
) -> list[RunSummary] | None:
    """One scheduled tick (:func:`buckets_due`) at ``now`` (default: the clock): the runs it
    made, or None when another replica holds the job (PostgreSQL; on SQLite, one process, every
    tick runs)."""
    now = now or datetime.now(UTC)
    summaries: list[RunSummary] = []

    def work() -> None:
        started = time.perf_counter()
        windows_s = [parse_window(w) for w in settings.windows]
        with session_scope(engine) as session:
            buckets, through = buckets_due(
                session,
                now=now,
                interval_s=settings.scoring_interval_s,
                settle_s=settings.scoring_settle_s,
                replay_s=settings.scoring_replay_s,
            )
            if len(buckets) > 1:
                log.info("scoring: replaying %d buckets from %s", len(buckets), buckets[0])
            if buckets:  # replayed runs go, so each bucket's history is the one just made
                session.execute(
                    delete(ScoringRun).where(ScoringRun.as_of.between(buckets[0], buckets[-1]))
                )
            for at in buckets:
                summaries.extend(
                    score_all(session, windows_s=windows_s, as_of=at, batches_through=through)
                )
        if metrics is not None and summaries:
            metrics.scoring_duration.observe(time.perf_counter() - started)

    return summaries if run_once(engine, "scoring", work) else None


def start_scheduler(
    engine: Engine,
    settings: Settings,
    account: LocalAccount,
    *,
    metrics: JobMetrics | None = None,
) -> BackgroundScheduler:
    """A thread beside the API; a run that overruns is skipped, never stacked."""

    def tick() -> None:
        try:
            summaries = scheduled_scoring(engine, settings, metrics=metrics)
            if summaries is not None:
                log.debug("scored %d chain-windows", len(summaries))
        except (OperationalError, InterfaceError) as exc:  # database down: expected, retried
            log.warning("scoring skipped: database unavailable (%s)", type(exc).__name__)
        except Exception:  # keep the schedule alive; the next tick retries
            log.exception("scoring run failed")

    scheduler = BackgroundScheduler(timezone=UTC)
    scheduler.add_job(
        tick,
        "interval",
        seconds=settings.scoring_interval_s,
        next_run_time=datetime.now(UTC),
        max_instances=1,
        coalesce=True,
        id="scoring",
    )
    add_sla_jobs(scheduler, engine, settings, account, metrics=metrics)
    add_sync_job(scheduler, engine, settings, metrics=metrics)  # pulls peers' batches
    scheduler.start()
    return scheduler
