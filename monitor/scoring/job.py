"""The scheduled scoring job: every ``scoring_interval_s``, every chain and window, one run;
the SLA's jobs (monitor.sla.job) share its scheduler. With several replicas on one PostgreSQL,
one of them makes each interval's run (monitor.db.locks)."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from apscheduler.schedulers.background import BackgroundScheduler
from eth_account.signers.local import LocalAccount
from sqlalchemy import Engine, select
from sqlalchemy.exc import InterfaceError, OperationalError

from monitor.db.locks import interval_start, run_once
from monitor.db.models import ScoringRun
from monitor.db.session import session_scope
from monitor.scoring.service import RunSummary, score_all
from monitor.settings import Settings, parse_window
from monitor.sla.job import add_sla_jobs

if TYPE_CHECKING:
    from monitor.metrics import JobMetrics

log = logging.getLogger("monitor.scoring")


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


def scored_since(engine: Engine, start: datetime) -> bool:
    """Has a run (of any chain and window: one tick scores them all) started at ``start`` or
    later?"""
    with session_scope(engine) as session:
        return (
            session.scalar(select(ScoringRun.id).where(ScoringRun.as_of >= start).limit(1))
            is not None
        )


def scheduled_scoring(
    engine: Engine, settings: Settings, *, metrics: JobMetrics | None = None
) -> list[RunSummary] | None:
    """One scheduled tick: the run, or None when another replica is making it or has made this
    interval's (PostgreSQL; on SQLite, one process, every tick runs)."""
    now = datetime.now(UTC)
    interval = settings.scoring_interval_s
    summaries: list[RunSummary] = []

    def due() -> bool:
        if engine.dialect.name != "postgresql":
            return True
        return not scored_since(engine, interval_start(now, interval))

    def work() -> None:
        summaries.extend(run_scoring(engine, settings, as_of=now, metrics=metrics))

    return summaries if run_once(engine, "scoring", work, due=due) else None


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
    scheduler.start()
    return scheduler
