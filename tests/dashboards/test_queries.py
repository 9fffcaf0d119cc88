"""Every SQL of the dashboard, expanded as Grafana expands it, run as the read-only role against a
PostgreSQL seeded by a real pipeline run (tests/dashboards/seed.py): it runs, returns the columns
its panel's format needs, and has rows where the data has them. The role reads nothing else and
writes nothing."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg import errors

from monitor import simnet
from monitor.db.session import make_engine, session_scope
from monitor.sla.service import sla_report
from tests.dashboards.conftest import Database
from tests.dashboards.dashboard import (
    Column,
    Query,
    default_range,
    fetch,
    fetch_typed,
    load,
    resolve_variables,
    sql_queries,
    variable_queries,
)
from tests.dashboards.grafana_sql import TimeRange, Variable
from tests.dashboards.seed import Seeded

pytestmark = pytest.mark.postgres

DASH = load()
QUERIES = sql_queries(DASH)

NUMERIC = {20, 21, 23, 700, 701, 1700}  # int8, int2, int4, float4, float8, numeric
TEXT = {25, 1043, 19}  # text, varchar, name
TIMESTAMP = {1114, 1184}  # timestamp, timestamptz


@pytest.fixture(scope="module")
def db(pipeline_db: tuple[Database, Seeded]) -> Database:
    return pipeline_db[0]


@pytest.fixture(scope="module")
def seeded(pipeline_db: tuple[Database, Seeded]) -> Seeded:
    return pipeline_db[1]


@pytest.fixture(scope="module")
def grafana(db: Database) -> Iterator[psycopg.Connection]:
    with db.connect() as conn:
        yield conn


@pytest.fixture(scope="module")
def time_range(seeded: Seeded) -> TimeRange:
    return default_range(DASH, seeded.now + timedelta(seconds=1))


def as_epoch(value: Any) -> float:
    return value.timestamp() if isinstance(value, datetime) else float(value)


def check_shape(q: Query, rows: list[tuple[Any, ...]], columns: list[Column]) -> None:
    """What the panel's format needs from the result (Grafana's SQL data source rules)."""
    names = [c.name for c in columns]
    assert len(names) == len(set(names)), f"{q.where}: duplicate columns {names}"
    if q.format == "time_series":
        # A "time" column (timestamp or epoch seconds), sorted: Grafana converts long frames to
        # wide and refuses unsorted ones. With a "metric" column, exactly one value column, so
        # the series is named by the metric alone; without, every other column is a value.
        assert names[0] == "time", f"{q.where}: the first column is {names[0]!r}, not time"
        assert columns[0].oid in TIMESTAMP | NUMERIC, f"{q.where}: time is not a time"
        values = columns[1:]
        if "metric" in names:
            assert names[1] == "metric" and len(names) == 3, f"{q.where}: {names}"
            assert columns[1].oid in TEXT, f"{q.where}: metric is not text"
            values = columns[2:]
            keys = [(r[0], r[1]) for r in rows]
            assert len(keys) == len(set(keys)), f"{q.where}: two rows for one time and metric"
        for c in values:
            assert c.oid in NUMERIC, f"{q.where}: value column {c.name} is not numeric"
        times = [as_epoch(r[0]) for r in rows]
        assert times == sorted(times), f"{q.where}: not sorted by time"
    elif q.format == "annotation":
        assert {"time", "timeEnd", "text", "tags"} <= set(names), f"{q.where}: {names}"
        by_name = {c.name: c.oid for c in columns}
        assert by_name["time"] in TIMESTAMP and by_name["timeEnd"] in TIMESTAMP, q.where
        assert by_name["text"] in TEXT and by_name["tags"] in TEXT, q.where
    else:
        assert q.format == "table", q.where
        assert names, q.where


@pytest.mark.parametrize("q", QUERIES, ids=lambda q: q.where)
def test_every_query_runs_as_grafana_with_all_selected(
    q: Query, grafana: psycopg.Connection, time_range: TimeRange
) -> None:
    variables = resolve_variables(DASH, grafana, time_range)
    rows, columns = fetch_typed(grafana, q.expanded(variables, time_range))
    check_shape(q, rows, columns)
    assert rows, f"{q.where}: no rows, though the pipeline run has data for it"


@pytest.mark.parametrize("q", QUERIES, ids=lambda q: q.where)
def test_every_query_runs_with_one_of_each_selected(
    q: Query, grafana: psycopg.Connection, time_range: TimeRange
) -> None:
    one = {"operator": ["bravo"], "region": ["region-0"]}  # bravo: lag, an outage, breaches
    variables = resolve_variables(DASH, grafana, time_range, select=one)
    assert len(variables["probe"].values) == 1  # the region's one probe
    rows, columns = fetch_typed(grafana, q.expanded(variables, time_range))
    check_shape(q, rows, columns)
    assert rows, f"{q.where}: no rows for bravo and one region"


def test_variable_queries_offer_what_the_registry_has(
    grafana: psycopg.Connection, time_range: TimeRange
) -> None:
    variables = resolve_variables(DASH, grafana, time_range)
    for q in variable_queries(DASH):
        _, columns = fetch(grafana, q.expanded(variables, time_range))
        assert columns in (["__text", "__value"], [columns[0]]), f"{q.where}: {columns}"
    assert variables["chain"].values == (str(simnet.DEMO_CHAIN_ID),)
    assert variables["window"].values == ("300",)  # the shortest window first: the default
    assert variables["window"].texts == ("5 min",)
    assert set(variables["operator"].values) == {o.operator_id for o in simnet.DEMO_OPERATORS}
    assert variables["region"].values == ("region-0", "region-1", "region-2")
    assert variables["probe"].texts == ("probe-0 (region-0)", "probe-1 (region-1)",
                                        "probe-2 (region-2)")  # fmt: skip


def run_panel(
    title: str, grafana: psycopg.Connection, time_range: TimeRange
) -> list[dict[str, Any]]:
    (q,) = [q for q in QUERIES if q.panel is not None and q.panel["title"] == title]
    variables = resolve_variables(DASH, grafana, time_range)
    rows, columns = fetch(grafana, q.expanded(variables, time_range))
    return [dict(zip(columns, r, strict=True)) for r in rows]


def test_weights_stack_to_one(grafana: psycopg.Connection, time_range: TimeRange) -> None:
    per_time: dict[Any, float] = defaultdict(float)
    for r in run_panel("Routing weight per operator", grafana, time_range):
        per_time[r["time"]] += float(r["weight"])
    assert len(per_time) > 20
    for total in per_time.values():
        assert total == pytest.approx(1.0, abs=1e-9)


def test_the_status_table_names_the_exclusion_reasons(
    grafana: psycopg.Connection, time_range: TimeRange
) -> None:
    rows = {r["operator"]: r for r in run_panel("Endpoint status and exclusion reasons",
                                               grafana, time_range)}  # fmt: skip
    assert rows["charlie"]["status"] == "excluded" and "wrong_hash" in rows["charlie"]["reasons"]
    assert rows["echo"]["status"] == "excluded" and "head_missing" in rows["echo"]["reasons"]
    assert rows["alpha"]["status"] == "ok" and rows["alpha"]["reasons"] == ""
    assert rows["alpha"]["weight"] > rows["delta"]["weight"] > 0


def test_the_liar_probe_stands_out(grafana: psycopg.Connection, time_range: TimeRange) -> None:
    rows = run_panel("Disagreement with the majority (outlier score)", grafana, time_range)
    worst: dict[str, float] = defaultdict(float)
    for r in rows:
        worst[r["metric"]] = max(worst[r["metric"]], float(r["outlier_score"] or 0))
    assert worst["probe-2 (region-2)"] > 0
    assert worst["probe-0 (region-0)"] == 0 and worst["probe-1 (region-1)"] == 0


def test_sla_compliance_equals_the_sla_report(
    db: Database, seeded: Seeded, grafana: psycopg.Connection
) -> None:
    """The compliance table over a period with partial hours at both ends gives GET /v1/sla's
    figures (monitor.sla.service.sla_report) to the minute, and its verdict."""
    period = TimeRange(seeded.start + timedelta(minutes=7, seconds=13.5), seeded.now)
    rows = run_panel("SLA compliance for the period", grafana, period)
    assert {r["operator"] for r in rows} == {o.operator_id for o in simnet.DEMO_OPERATORS}
    engine = make_engine(db.cluster.url(db.name))
    try:
        with session_scope(engine) as session:
            for r in rows:
                report = sla_report(
                    session,
                    operator_id=r["operator"],
                    chain_id=simnet.DEMO_CHAIN_ID,
                    start=period.start,
                    end=period.end,
                )
                f = report.figures
                got = (r["up"], r["down"], int(r["insufficient"]))
                assert got == (f.up, f.down, f.insufficient), r["operator"]
                by_reason = (r["down_unavailable"], r["down_lagging"], r["down_incorrect"])
                assert by_reason == tuple(
                    f.down_by_reason.get(k, 0) for k in ("unavailable", "lagging", "incorrect")
                ), r["operator"]
                if f.availability_ppm is None:
                    assert r["availability"] is None
                else:
                    assert int(Decimal(str(r["availability"])) * 1_000_000) == pytest.approx(
                        f.availability_ppm, abs=1
                    )
                verdict = f.verdicts["availability"].replace("_", " ")
                assert r["verdict"] == verdict, r["operator"]
                assert r["target"] == pytest.approx(report.targets.availability_ppm / 1e6)
    finally:
        engine.dispose()
    verdicts = {r["operator"]: r["verdict"] for r in rows}
    assert verdicts["alpha"] == "met" and verdicts["charlie"] == "breached"


def test_breach_events_opened_and_closed(
    grafana: psycopg.Connection, time_range: TimeRange
) -> None:
    rows = run_panel("Breach events", grafana, time_range)
    targets = {(r["operator"], r["target"]) for r in rows}
    assert {("bravo", "availability"), ("charlie", "correctness"), ("delta", "latency_p95")} <= (
        targets
    )
    assert any(r["ended_at"] is not None for r in rows)
    assert any(r["ended_at"] is None for r in rows)


STATEMENTS_REFUSED = [
    "SELECT url FROM endpoints",
    "SELECT * FROM endpoints",
    "SELECT body FROM batches",
    "SELECT signature FROM batches",
    "SELECT * FROM webhook_deliveries",
    "SELECT * FROM attestations",
    "SELECT * FROM documents",
    "SELECT * FROM alembic_version",
    "INSERT INTO results (batch_id, probe_id, endpoint_id, operator_id, chain_id, observed_at,"
    " ok) SELECT batch_id, probe_id, endpoint_id, operator_id, chain_id, observed_at, ok"
    " FROM results LIMIT 1",
    "UPDATE scores SET weight = 1",
    "DELETE FROM batches",
    "DELETE FROM breach_events",
    "TRUNCATE results",
    "CREATE TABLE grafana_was_here (x int)",
    "UPDATE endpoints SET active = false",
]


@pytest.mark.parametrize("statement", STATEMENTS_REFUSED)
def test_the_role_reads_only_what_the_dashboard_needs_and_writes_nothing(
    db: Database, statement: str
) -> None:
    with db.connect() as conn:
        # Sessions are read-only by default; lift that, so it is the privileges that refuse.
        conn.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute(statement.encode())


def test_the_role_reads_the_endpoints_without_their_urls(db: Database) -> None:
    with db.connect() as conn:
        count = conn.execute("SELECT count(*) FROM endpoints").fetchone()
        assert count is not None and count[0] == len(simnet.DEMO_OPERATORS)
        conn.execute("SELECT id, operator_id, chain_id, archive, active FROM endpoints")
        with pytest.raises(errors.ReadOnlySqlTransaction):  # and by default, read-only at all
            conn.execute("UPDATE endpoints SET active = false")


def test_the_variables_are_quoted_not_spliced(
    grafana: psycopg.Connection, time_range: TimeRange
) -> None:
    """An operator id with a quote in it (ids are [a-z0-9-], but still) stays a literal."""
    variables = resolve_variables(DASH, grafana, time_range)
    variables["operator"] = Variable(
        "operator", ("x'); DROP TABLE results; --",), multi=True, include_all=True
    )
    (q,) = [q for q in QUERIES if q.where.startswith("Endpoint status")]
    rows, _ = fetch(grafana, q.expanded(variables, time_range))
    assert rows == []
