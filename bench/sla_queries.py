"""SLA and uptime answers from rollups over a year, side by side with a plain count of the rows
they summarise, in one run.

    .venv/bin/python bench/sla_queries.py [--probes 3] [--database-url URL]

Seeds one subject (operator on a chain) with a year of hour rollups and 35 days of minute
rollups (the default retention), then times, per query, the median of several runs of: the SLA
report for the last 30 days, uptime for each window (1h ... 365d), and ``SELECT count(*)`` over
the subject's minute rollups (the floor for anything that would read them all). Prints each
time and its ratio to the count.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from eth_account import Account
from sqlalchemy import func, insert, select
from support import bench_chain

from monitor.db.migrate import upgrade
from monitor.db.models import Endpoint, Operator, Probe
from monitor.db.session import make_engine, session_scope
from monitor.sla.models import ProbeHour, ProbeMinuteRow, SubjectHour, SubjectMinute
from monitor.sla.service import UPTIME_WINDOWS, sla_report, uptime

RUNS = 7


def seed(url: str, probes: int, now: datetime) -> None:
    upgrade(url)
    engine = make_engine(url)
    with session_scope(engine) as session:
        session.add(bench_chain())
        session.add(Operator(id="op", name="Op"))
        ids = []
        for i in range(probes):
            p = Probe(address=Account.create().address, name=f"p{i}", region="r")
            session.add(p)
            session.flush()
            ids.append(p.id)
        session.add(Endpoint(operator_id="op", chain_id=1, url="http://127.0.0.1/"))
    hour0 = now.replace(minute=0, second=0, microsecond=0)
    minute0 = now.replace(second=0, microsecond=0)
    subject = {"chain_id": 1, "operator_id": "op"}
    latency = '{"5":50,"6":8,"8":2}'
    with session_scope(engine) as session:
        hours = [hour0 - timedelta(hours=h) for h in range(366 * 24)]
        session.execute(
            insert(SubjectHour),
            [
                {**subject, "hour": h, "up": 59, "down": 1, "unavailable": 1, "lagging": 0,
                 "incorrect": 0, "samples": 60 * 6 * probes}
                for h in hours
            ],
        )  # fmt: skip
        session.execute(
            insert(ProbeHour),
            [
                {**subject, "hour": h, "probe_id": p, "samples": 360, "available": 359,
                 "judged": 359, "incorrect": 0, "latency": latency}
                for h in hours
                for p in ids
            ],
        )  # fmt: skip
    with session_scope(engine) as session:
        minutes = [minute0 - timedelta(minutes=m) for m in range(35 * 1440)]
        session.execute(
            insert(SubjectMinute),
            [
                {**subject, "minute": m, "state": "up", "reasons": "", "probes": probes,
                 "samples": 6 * probes}
                for m in minutes
            ],
        )  # fmt: skip
        for p in ids:
            session.execute(
                insert(ProbeMinuteRow),
                [
                    {**subject, "minute": m, "probe_id": p, "samples": 6, "available": 6,
                     "judged": 6, "incorrect": 0, "lags": '{"0":6}', "latency": '{"5":6}'}
                    for m in minutes
                ],
            )  # fmt: skip
    engine.dispose()


def timed(work: Callable[[], object]) -> float:
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--probes", type=int, default=3)
    parser.add_argument("--database-url")
    parser.add_argument("--smoke", action="store_true", help="one probe (the suite)")
    args = parser.parse_args()
    if args.smoke:
        args.probes = 1
    tmp = tempfile.TemporaryDirectory()
    url = args.database_url or f"sqlite:///{Path(tmp.name) / 'bench.db'}"
    now = datetime.now(UTC)
    started = time.perf_counter()
    seed(url, args.probes, now)
    print(f"database: {url.split('://')[0]}; seeded in {time.perf_counter() - started:.1f} s")
    engine = make_engine(url)
    with session_scope(engine) as session:
        rows = session.scalar(select(func.count()).select_from(ProbeMinuteRow))
        print(f"rows: {rows} probe-minutes, {366 * 24 * args.probes} probe-hours")

        def count() -> object:
            return session.scalar(
                select(func.count()).where(
                    ProbeMinuteRow.chain_id == 1, ProbeMinuteRow.operator_id == "op"
                )
            )

        floor = timed(count)
        print(f"{'SELECT count(*) of minute rows':34} {floor * 1000:8.2f} ms   ratio 1.00")
        queries: dict[str, Callable[[], object]] = {
            "SLA report, last 30 days": lambda: sla_report(
                session,
                operator_id="op",
                chain_id=1,
                start=now - timedelta(days=30),
                end=now,
            ),
        }
        for window in UPTIME_WINDOWS:
            queries[f"uptime {window}"] = lambda w=window: uptime(  # type: ignore[misc]
                session, operator_id="op", chain_id=1, window=w, now=now
            )
        for name, work in queries.items():
            t = timed(work)
            print(f"{name:34} {t * 1000:8.2f} ms   ratio {t / floor:5.2f}")
    engine.dispose()


if __name__ == "__main__":
    main()
