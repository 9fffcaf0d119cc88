"""Scoring and SLA queries at fleet scale on PostgreSQL, each against a plain ``count(*)`` of the
rows it reads, in one run.

    .venv/bin/python bench/fleet.py [--quick] [--database-url URL]

Generates straight into the database (``INSERT ... SELECT generate_series``, foreign key
triggers off, the results' secondary indexes built after the load): endpoints (``--operators`` x
``--chains``, one endpoint per operator and chain), ``--probes`` probes, ``--hours`` of results
(each probe checks every endpoint every ``--interval-s``, one batch per probe and round; ~1 % of
checks fail, a few endpoints are flaky, latencies with a tail, lag mostly 0), and for
``--rollup-subjects`` subjects (operator on a chain) 30 days of minute rollups and 365 days of
hour rollups. Then it times (median of ``--runs``):

* the scoring job for a 5-minute window (``monitor.scoring.job.run_scoring``, every chain), with
  the part spent reading the window (``_window_samples``), against ``SELECT count(*)`` of the
  results in that window;
* the SLA report for the last 30 days and uptime for 30 and 365 days of one subject
  (``monitor.sla.service``), against ``count(*)`` of that subject's probe-minute rows of the
  30 days and hour rows of the 365 days.

Targets (issue 7): scoring job under 2 s, any SLA or uptime answer under 200 ms. Without
``--database-url`` a throwaway PostgreSQL cluster is started and stopped at the end; with one, the
database must be empty (it is migrated and filled).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Connection, Engine, text

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from monitor.db.migrate import upgrade  # noqa: E402
from monitor.db.session import make_engine, session_scope  # noqa: E402
from monitor.scoring import service as scoring_service  # noqa: E402
from monitor.scoring.job import run_scoring  # noqa: E402
from monitor.settings import Settings  # noqa: E402
from monitor.sla.service import sla_report, uptime  # noqa: E402

SCORING_TARGET_S = 2.0
QUERY_TARGET_S = 0.2
WINDOW = timedelta(minutes=5)


@dataclass(frozen=True)
class Scale:
    operators: int
    chains: int
    probes: int
    hours: float
    interval_s: int
    rollup_subjects: int

    @property
    def endpoints(self) -> int:
        return self.operators * self.chains

    @property
    def rounds(self) -> int:
        return int(self.hours * 3600) // self.interval_s


@contextmanager
def database(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    from tests.support.postgres import PostgresCluster

    with PostgresCluster() as cluster:
        cluster.create_database("fleet")
        yield cluster.url("fleet")


# --- generation -------------------------------------------------------------------------------


def registry(conn: Connection, scale: Scale) -> None:
    conn.execute(
        text(
            "INSERT INTO chains (chain_id, name, block_time_s, confirmations, sla_availability,"
            " sla_latency_p95_ms, sla_max_lag_blocks, sla, quorum, checks, scoring, active,"
            " updated_at)"
            " SELECT c, 'chain-' || c, 12, 6, 0.999, 500, 3, '{}', 2, '{}', '{}', true, now()"
            " FROM generate_series(1, CAST(:chains AS integer)) AS c"
        ),
        {"chains": scale.chains},
    )
    conn.execute(
        text(
            "INSERT INTO operators (id, name, sla, active, updated_at)"
            " SELECT 'op' || o, 'Operator ' || o, '{}', true, now()"
            " FROM generate_series(1, CAST(:operators AS integer)) AS o"
        ),
        {"operators": scale.operators},
    )
    conn.execute(
        text(
            "INSERT INTO endpoints (operator_id, chain_id, url, archive, active, updated_at)"
            " SELECT 'op' || o, c, 'http://127.0.0.1:9/' || o || '/' || c, false, true, now()"
            " FROM generate_series(1, CAST(:chains AS integer)) AS c,"
            "  generate_series(1, CAST(:operators AS integer)) AS o"
            " ORDER BY c, o"
        ),
        {"chains": scale.chains, "operators": scale.operators},
    )
    conn.execute(
        text(
            "INSERT INTO probes (address, name, region, active, updated_at)"
            " SELECT '0x' || lpad(to_hex(p), 40, '0'), 'probe-' || p, 'region-' || p, true, now()"
            " FROM generate_series(1, CAST(:probes AS integer)) AS p"
        ),
        {"probes": scale.probes},
    )


RESULT_INDEXES = (
    "ix_results_batch_id",
    "ix_results_endpoint_observed",
    "ix_results_chain_observed",
    "ix_results_probe_observed",
)


def results(conn: Connection, scale: Scale, now: datetime) -> None:
    """One batch per probe and round; every endpoint in every batch. Loaded an hour at a time,
    with the secondary indexes dropped and rebuilt after (what a bulk load does)."""
    definitions = dict(
        conn.execute(
            text(
                "SELECT indexname, indexdef FROM pg_indexes"
                " WHERE tablename = 'results' AND indexname = ANY(:names)"
            ),
            {"names": list(RESULT_INDEXES)},
        ).all()
    )
    for name in definitions:
        conn.execute(text(f'DROP INDEX "{name}"'))
    start = now - timedelta(seconds=scale.rounds * scale.interval_s)
    per_chunk = max(1, 3600 // scale.interval_s)
    started = time.perf_counter()
    for first in range(0, scale.rounds, per_chunk):
        last = min(scale.rounds, first + per_chunk) - 1
        conn.execute(
            text(
                "INSERT INTO batches (probe_id, batch_id, created_at, received_at, results_hash,"
                " signature, result_count, body, body_hash, rolled_up)"
                " SELECT p.id, md5(p.id || ':' || r),"
                "  :start + make_interval(secs => (r + 1) * :interval),"
                "  :start + make_interval(secs => (r + 1) * :interval + 0.2),"
                "  '0x' || md5(p.id || ':' || r || 'r') || md5(p.id || ':' || r || 's'),"
                "  '0x' || repeat('ab', 65), :endpoints, '{}',"
                "  '0x' || md5(p.id || ':' || r || 'b') || md5(p.id || ':' || r || 'c'), true"
                " FROM probes p,"
                "  generate_series(CAST(:first AS integer), CAST(:last AS integer)) AS r"
            ),
            {
                "start": start,
                "interval": scale.interval_s,
                "endpoints": scale.endpoints,
                "first": first,
                "last": last,
            },
        )
        # Each probe checks each endpoint once per round, at a spread-out moment inside it.
        conn.execute(
            text(
                "INSERT INTO results (batch_id, probe_id, endpoint_id, operator_id, chain_id,"
                " observed_at, ok, error, latency_ms, head, reference_head, lag_blocks,"
                " lag_seconds, check_height, block_hash, correct)"
                " SELECT b.id, b.probe_id, e.id, e.operator_id, e.chain_id, x.observed_at,"
                "  x.ok, CASE WHEN x.ok THEN NULL WHEN x.v < 0.7 THEN 'timeout'"
                "   ELSE 'transport' END,"
                "  CASE WHEN x.ok THEN round((15 + 70 * x.v"
                "   + CASE WHEN x.w > 0.97 THEN 600 * x.w ELSE 0 END)::numeric, 2)::float8 END,"
                "  CASE WHEN x.ok THEN x.ref - x.lag END, x.ref,"
                "  CASE WHEN x.ok THEN x.lag END, CASE WHEN x.ok THEN x.lag * 12.0 END,"
                "  NULL, NULL,"
                "  CASE WHEN NOT x.ok OR x.v < 0.2 THEN NULL ELSE x.w < 0.9995 END"
                " FROM batches b"
                " CROSS JOIN endpoints e"
                " CROSS JOIN LATERAL (SELECT"
                "   b.created_at - make_interval(secs => :interval * (0.2 + 0.75 * random()))"
                "     AS observed_at,"
                "   random() < CASE WHEN e.id % 97 = 0 THEN 0.85 ELSE 0.995 END AS ok,"
                "   random() AS v, random() AS w,"
                "   20000000 + (extract(epoch FROM b.created_at)::bigint / 12) AS ref,"
                "   CASE WHEN e.id % 53 = 0 THEN 4 WHEN random() < 0.9 THEN 0 ELSE 1 END AS lag"
                " ) x"
                " WHERE b.created_at > :lo AND b.created_at <= :hi"
            ),
            {
                "interval": scale.interval_s,
                "lo": start + timedelta(seconds=first * scale.interval_s),
                "hi": start + timedelta(seconds=(last + 1) * scale.interval_s),
            },
        )
        conn.commit()
        done = (last + 1) * scale.probes * scale.endpoints
        rate = done / (time.perf_counter() - started)
        print(f"  results: {done:,} rows ({rate:,.0f}/s)", flush=True)
    for name, definition in definitions.items():
        began = time.perf_counter()
        conn.execute(text(definition))
        conn.commit()
        print(f"  index {name}: {time.perf_counter() - began:.1f} s", flush=True)


def rollups(conn: Connection, scale: Scale, now: datetime) -> None:
    """30 days (+ an hour) of minute rollups and 365 days of hour rollups for the first
    ``rollup_subjects`` subjects: six checks per probe-minute, ~0.1 % of minutes down."""
    minute0 = now.replace(second=0, microsecond=0)
    hour0 = now.replace(minute=0, second=0, microsecond=0)
    subjects = "SELECT e.chain_id, e.operator_id FROM endpoints e ORDER BY e.id LIMIT :subjects"
    params = {
        "subjects": scale.rollup_subjects,
        "minute0": minute0,
        "hour0": hour0,
        # JSON as parameters: a colon in the statement's text would read as a parameter
        "minute_lags": '{"0":5,"1":1}',
        "minute_latency": '{"2":2,"4":2,"7":1,"9":1}',
        "hour_latency": '{"2":120,"4":120,"7":60,"9":59}',
    }
    minutes = "generate_series(0, 30 * 1440 + 60) AS m"
    hours = "generate_series(1, 365 * 24) AS h"
    statements = {
        "subject_minutes": (
            "INSERT INTO subject_minutes (chain_id, operator_id, minute, state, reasons,"
            " probes, samples)"
            f" SELECT s.chain_id, s.operator_id, :minute0 - make_interval(mins => m),"
            "  CASE WHEN random() < 0.001 THEN 'down' ELSE 'up' END, '', :probes, 6 * :probes"
            f" FROM ({subjects}) s, {minutes}"
        ),
        "subject_minutes reasons": (
            "UPDATE subject_minutes SET reasons = 'unavailable' WHERE state = 'down'"
        ),
        "probe_minutes": (
            "INSERT INTO probe_minutes (chain_id, operator_id, minute, probe_id, samples,"
            " available, judged, incorrect, lags, latency)"
            f" SELECT s.chain_id, s.operator_id, :minute0 - make_interval(mins => m), p.id, 6,"
            "  6, 5, 0, :minute_lags, :minute_latency"
            f" FROM ({subjects}) s, probes p, {minutes}"
        ),
        "subject_hours": (
            "INSERT INTO subject_hours (chain_id, operator_id, hour, up, down, unavailable,"
            " lagging, incorrect, samples)"
            f" SELECT s.chain_id, s.operator_id, :hour0 - make_interval(hours => h),"
            "  60 - d, d, d, 0, 0, 360 * :probes"
            f" FROM ({subjects}) s, {hours},"
            "  LATERAL (SELECT (random() < 0.05)::int + h * 0 AS d) x"
        ),
        "probe_hours": (
            "INSERT INTO probe_hours (chain_id, operator_id, hour, probe_id, samples, available,"
            " judged, incorrect, latency)"
            f" SELECT s.chain_id, s.operator_id, :hour0 - make_interval(hours => h), p.id,"
            "  360, 359, 300, 0, :hour_latency"
            f" FROM ({subjects}) s, probes p, {hours}"
        ),
    }
    for name, statement in statements.items():
        began = time.perf_counter()
        conn.execute(text(statement), {**params, "probes": scale.probes})
        conn.commit()
        print(f"  {name}: {time.perf_counter() - began:.1f} s", flush=True)


def generate(engine: Engine, scale: Scale, now: datetime) -> None:
    with engine.connect() as conn:
        # Bulk load: no foreign key triggers (the rows are made consistent), a stable seed.
        conn.execute(text("SET session_replication_role = replica"))
        conn.execute(text("SELECT setseed(0.42)"))
        registry(conn, scale)
        conn.commit()
        results(conn, scale, now)
        rollups(conn, scale, now)
        conn.execute(text("SET session_replication_role = origin"))
        conn.commit()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        began = time.perf_counter()
        conn.execute(text("VACUUM ANALYZE"))
        print(f"  vacuum analyze: {time.perf_counter() - began:.1f} s", flush=True)


# --- measurement ------------------------------------------------------------------------------


def median_time(work: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        work()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def scalar(engine: Engine, query: str, **params: object) -> object:
    with engine.connect() as conn:
        return conn.execute(text(query), params).scalar()


def scalar_at(url: str, query: str) -> object:
    engine = make_engine(url)
    try:
        return scalar(engine, query)
    finally:
        engine.dispose()


@dataclass
class Line:
    name: str
    seconds: float
    reference: float | None = None
    target: float | None = None

    def show(self) -> str:
        ratio = f"{self.seconds / self.reference:8.1f}" if self.reference else " " * 8
        verdict = ""
        if self.target is not None:
            verdict = "met" if self.seconds < self.target else "MISSED"
            verdict = f"  target < {self.target * 1000:,.0f} ms: {verdict}"
        return f"{self.name:48} {self.seconds * 1000:10.1f} ms  ratio {ratio}{verdict}"


def measure(url: str, scale: Scale, now: datetime, runs: int) -> list[Line]:
    engine = make_engine(url)
    lines: list[Line] = []
    try:
        chains = list(range(1, scale.chains + 1))
        window_rows = (
            "SELECT count(*) FROM results WHERE chain_id = ANY(:chains)"
            " AND observed_at >= :start AND observed_at < :end"
        )
        args = {"chains": chains, "start": now - WINDOW, "end": now}
        rows = scalar(engine, window_rows, **args)
        count = median_time(lambda: scalar(engine, window_rows, **args), runs)
        lines.append(Line(f"SELECT count(*) of the window ({rows:,} rows)", count))
        settings = Settings(database_url=url, windows=["5m"])
        reading: list[float] = []
        original = scoring_service._window_samples

        def timed_samples(*a: object, **kw: object) -> object:
            began = time.perf_counter()
            try:
                return original(*a, **kw)  # type: ignore[arg-type]
            finally:
                reading.append(time.perf_counter() - began)

        scoring_service._window_samples = timed_samples  # type: ignore[assignment]
        try:
            scoring = median_time(lambda: run_scoring(engine, settings, as_of=now), runs)
        finally:
            scoring_service._window_samples = original
        per_run = sum(reading) / runs
        lines.append(
            Line(
                f"scoring job, 5-minute window ({scale.chains} chains)",
                scoring,
                count,
                SCORING_TARGET_S,
            )
        )
        lines.append(Line("  of which reading the window (_window_samples)", per_run, count))
        subject = {"chain_id": 1, "operator_id": "op1"}
        minute_rows = (
            "SELECT count(*) FROM probe_minutes WHERE chain_id = :chain_id"
            " AND operator_id = :operator_id AND minute >= :start AND minute < :end"
        )
        margs = {**subject, "start": now - timedelta(days=30), "end": now}
        n_minutes = scalar(engine, minute_rows, **margs)
        minute_count = median_time(lambda: scalar(engine, minute_rows, **margs), runs)
        hour_rows = (
            "SELECT count(*) FROM subject_hours WHERE chain_id = :chain_id"
            " AND operator_id = :operator_id AND hour >= :start AND hour < :end"
        )
        hargs = {**subject, "start": now - timedelta(days=365), "end": now}
        n_hours = scalar(engine, hour_rows, **hargs)
        hour_count = median_time(lambda: scalar(engine, hour_rows, **hargs), runs)
        lines.append(Line(f"SELECT count(*) of 30 d probe-minutes ({n_minutes:,})", minute_count))
        lines.append(Line(f"SELECT count(*) of 365 d subject-hours ({n_hours:,})", hour_count))
        with session_scope(engine) as session:
            report = median_time(
                lambda: sla_report(
                    session, operator_id="op1", chain_id=1, start=now - timedelta(days=30), end=now
                ),
                runs,
            )
            up30 = median_time(
                lambda: uptime(session, operator_id="op1", chain_id=1, window="30d", now=now),
                runs,
            )
            up365 = median_time(
                lambda: uptime(session, operator_id="op1", chain_id=1, window="365d", now=now),
                runs,
            )
        lines.append(Line("SLA report, 30 days (vs. minute count)", report, minute_count, 0.2))
        lines.append(Line("uptime 30d (vs. minute count)", up30, minute_count, 0.2))
        lines.append(Line("uptime 365d (vs. hour count)", up365, hour_count, 0.2))
    finally:
        engine.dispose()
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="1,000 endpoints, 2 h every 10 s, 5 subjects"
    )
    parser.add_argument("--database-url", help="an empty PostgreSQL database (default: throwaway)")
    parser.add_argument("--operators", type=int, help="default 1,000 (--quick: 100)")
    parser.add_argument("--chains", type=int, default=10)
    parser.add_argument("--probes", type=int, default=5)
    parser.add_argument("--hours", type=float, help="of results; default 24 (--quick: 2)")
    parser.add_argument(
        "--interval-s", type=int, help="between a probe's checks; default 60 (--quick: 10)"
    )
    parser.add_argument("--rollup-subjects", type=int, help="default 20 (--quick: 5)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--smoke", action="store_true", help="20 endpoints, 6 minutes of results, 1 run (the suite)"
    )
    parser.add_argument(
        "--measure-only",
        action="store_true",
        help="measure a database this script filled before (--database-url): its scale is the"
        " one given again, its 'now' its newest batch",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.operators, args.chains, args.probes = 10, 2, 2
        args.hours, args.interval_s, args.rollup_subjects, args.runs = 0.1, 10, 1, 1
    scale = Scale(
        operators=args.operators or (100 if args.quick else 1000),
        chains=args.chains,
        probes=args.probes,
        hours=args.hours or (2.0 if args.quick else 24.0),
        interval_s=args.interval_s or (10 if args.quick else 60),
        rollup_subjects=args.rollup_subjects or (5 if args.quick else 20),
    )
    now = datetime.now(UTC).replace(microsecond=0)
    print(
        f"fleet: {scale.endpoints:,} endpoints ({scale.operators:,} operators x {scale.chains}"
        f" chains) x {scale.probes} probes, {scale.hours:g} h every {scale.interval_s} s ="
        f" {scale.rounds * scale.probes * scale.endpoints:,} results;"
        f" rollups for {scale.rollup_subjects} subjects",
        flush=True,
    )
    if args.measure_only and not args.database_url:
        parser.error("--measure-only needs --database-url")
    with database(args.database_url) as url:
        if args.measure_only:
            newest = scalar_at(url, "SELECT max(created_at) FROM batches")
            assert isinstance(newest, datetime), "no batches: fill the database first"
            now = newest.astimezone(UTC)
        else:
            upgrade(url)
            engine = make_engine(url)
            began = time.perf_counter()
            try:
                generate(engine, scale, now)
            finally:
                engine.dispose()
            print(f"generated in {time.perf_counter() - began:.0f} s", flush=True)
            stored = scale.rounds * scale.probes * scale.endpoints
            size = int(str(scalar_at(url, "SELECT pg_total_relation_size('results')")))
            print(
                f"results table with its indexes: {size / 2**30:.2f} GiB,"
                f" {size / max(stored, 1):.0f} bytes per result",
                flush=True,
            )
        lines = measure(url, scale, now, args.runs)
    print(f"\n{'PostgreSQL, median of ' + str(args.runs) + ' runs':48} {'time':>13}  ratio")
    for line in lines:
        print(line.show())
    missed = [line.name for line in lines if line.target and line.seconds >= line.target]
    print("targets: all met" if not missed else f"targets missed: {', '.join(missed)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
