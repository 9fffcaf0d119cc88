"""The scheduled scoring job: every ``scoring_interval_s``, every chain and window, one run;
the SLA's jobs (monitor.sla.job) share its scheduler."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from apscheduler.schedulers.background import BackgroundScheduler
from eth_account.signers.local import LocalAccount
from sqlalchemy import Engine
from sqlalchemy.exc import InterfaceError, OperationalError

from monitor.db.session import session_scope
from monitor.scoring.service import RunSummary, score_all
from monitor.settings import Settings, parse_window
from monitor.sla.job import add_sla_jobs

log = logging.getLogger("monitor.scoring")


def run_scoring(
    engine: Engine, settings: Settings, *, as_of: datetime | None = None
) -> list[RunSummary]:
    as_of = as_of or datetime.now(UTC)
    with session_scope(engine) as session:
        return score_all(
            session,
            windows_s=[parse_window(w) for w in settings.windows],
            as_of=as_of,
        )


def start_scheduler(
    engine: Engine, settings: Settings, account: LocalAccount
) -> BackgroundScheduler:
    """A thread beside the API; a run that overruns is skipped, never stacked."""

    def tick() -> None:
        try:
            summaries = run_scoring(engine, settings)
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
    add_sla_jobs(scheduler, engine, settings, account)
    scheduler.start()
    return scheduler
