"""The SLA's scheduled jobs, beside scoring in the collector: rollups then breach events (every
``rollup_interval_s``), webhook deliveries (every few seconds, only with a webhook URL),
retention (hourly) and yesterday's attestations (checked every 10 minutes, issued once). Each
job skips a run rather than stacking, and survives a database outage. With several replicas on
one PostgreSQL, a run holds the job's advisory lock (monitor.db.locks) and a replica that finds it
held skips its run: each of these jobs takes what is left to do (batches not rolled up, rows past
retention, days not attested, deliveries pending), so one replica at a time never does anything
twice."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import httpx
from apscheduler.schedulers.base import BaseScheduler
from eth_account.signers.local import LocalAccount
from sqlalchemy import Engine
from sqlalchemy.exc import InterfaceError, OperationalError

from monitor.attestations.job import attest_previous_day
from monitor.db.locks import run_once
from monitor.db.session import session_scope
from monitor.settings import Settings
from monitor.sla.events import evaluate_breaches
from monitor.sla.retention import RetentionSummary, enforce_retention
from monitor.sla.rollup import roll_up
from monitor.sla.webhook import deliver_pending

if TYPE_CHECKING:
    from monitor.metrics import JobMetrics

log = logging.getLogger("monitor.sla")

MAX_ROLLUP_RUNS = 50  # per tick: a large backlog is caught up over several ticks
WEBHOOK_INTERVAL_S = 5.0


def run_rollups(
    engine: Engine,
    settings: Settings,
    *,
    now: datetime | None = None,
    metrics: JobMetrics | None = None,
) -> int:
    """Roll up what has arrived (bounded), then open and close breach events; returns the
    number of batches rolled up (and counts them, with the run's duration, in ``metrics``)."""
    now = now or datetime.now(UTC)
    started = time.perf_counter()
    total = 0
    for _ in range(MAX_ROLLUP_RUNS):
        with session_scope(engine) as session:
            done = roll_up(session).batches
        total += done
        if done == 0:
            break
    with session_scope(engine) as session:
        evaluate_breaches(
            session,
            now=now,
            window=timedelta(seconds=settings.breach_window_s),
            webhook=settings.webhook_url is not None,
        )
    if metrics is not None:
        metrics.rollup_duration.observe(time.perf_counter() - started)
        metrics.rollup_batches.inc(total)
    return total


def run_webhooks(
    engine: Engine,
    settings: Settings,
    *,
    now: datetime | None = None,
    metrics: JobMetrics | None = None,
) -> None:
    if settings.webhook_url is None:
        return
    with httpx.Client(timeout=settings.webhook_timeout_s) as client:
        delivered, failed = deliver_pending(
            engine, url=settings.webhook_url, client=client, now=now or datetime.now(UTC)
        )
    if metrics is not None:
        metrics.webhook_deliveries.labels("delivered").inc(delivered)
        metrics.webhook_deliveries.labels("failed").inc(failed)


def run_retention(
    engine: Engine, settings: Settings, *, now: datetime | None = None
) -> RetentionSummary:
    with session_scope(engine) as session:
        return enforce_retention(
            session,
            now=now or datetime.now(UTC),
            raw=timedelta(days=settings.retention_days),
            minutes=timedelta(days=settings.minute_rollup_retention_days),
            hours=timedelta(days=settings.hour_rollup_retention_days),
        )


def _guarded(engine: Engine, name: str, work: Callable[[], object]) -> Callable[[], None]:
    def tick() -> None:
        try:
            run_once(engine, name, work)
        except (OperationalError, InterfaceError) as exc:  # database down: retried next tick
            log.warning("%s skipped: database unavailable (%s)", name, type(exc).__name__)
        except Exception:  # keep the schedule alive
            log.exception("%s failed", name)

    return tick


def add_sla_jobs(
    scheduler: BaseScheduler,
    engine: Engine,
    settings: Settings,
    account: LocalAccount,
    *,
    metrics: JobMetrics | None = None,
) -> None:
    def attest() -> None:
        attest_previous_day(
            engine,
            account=account,
            now=datetime.now(UTC),
            retention_days=settings.retention_days,
        )

    jobs: list[tuple[str, float, Callable[[], object]]] = [
        (
            "rollups",
            settings.rollup_interval_s,
            lambda: run_rollups(engine, settings, metrics=metrics),
        ),
        ("retention", 3600.0, lambda: run_retention(engine, settings)),
    ]
    if settings.attest_daily:
        jobs.append(("attestations", 600.0, attest))
    if settings.webhook_url is not None:
        jobs.append(
            (
                "webhooks",
                WEBHOOK_INTERVAL_S,
                lambda: run_webhooks(engine, settings, metrics=metrics),
            )
        )
    for name, seconds, work in jobs:
        scheduler.add_job(
            _guarded(engine, name, work),
            "interval",
            seconds=seconds,
            next_run_time=datetime.now(UTC),
            max_instances=1,
            coalesce=True,
            id=name,
        )
