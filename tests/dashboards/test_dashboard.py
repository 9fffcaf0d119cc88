"""dashboards/monitor.json checked as far as it can be without a Grafana: its structure, its
variables and datasources, units and thresholds against the registry's SLA defaults, the
provisioning files, the read-only role's grants and the docs. The SQL itself runs in
test_queries.py (a pipeline run) and test_performance.py (a realistic volume)."""

from __future__ import annotations

import re
from itertools import combinations
from typing import Any

import pytest
import yaml

from monitor.registry.schema import SlaTargets
from tests.dashboards.dashboard import (
    DOCS,
    GRID_COLUMNS,
    PG_TYPES,
    PROVISIONING,
    READONLY_SQL,
    load,
    panels,
    sql_queries,
    variable_queries,
)
from tests.dashboards.grafana_sql import BUILTIN_VARIABLES, MACROS, referenced_variables

DASH = load()
PANELS = panels(DASH)
CONTENT = [p for p in PANELS if p["type"] != "row"]
QUERYING = [p for p in CONTENT if p["type"] != "text"]
DEFAULTS = SlaTargets()

REQUIRED_ROWS = {
    "Fleet overview",
    "Block lag",
    "Latency",
    "Availability and correctness",
    "SLA compliance",
    "Probe health",
    "Ingest",
}
REQUIRED_PANELS = {
    "How to read this dashboard",
    "Routing weight per operator",
    "Current score",
    "Endpoint status and exclusion reasons",
    "Lag behind the reference head (blocks)",
    "Lag behind the reference head (seconds)",
    "Latency p50 per operator",
    "Latency p95 per operator",
    "Latency p50 / p95 per probe region",
    "Availability (scoring window)",
    "Correctness (scoring window)",
    "SLA availability (minutes up)",
    "SLA compliance for the period",
    "Breach events",
    "Batches received per probe",
    "Probes: last seen",
    "Disagreement with the majority (outlier score)",
    "Ingest rate",
    "Rejected batches by reason",
}


def by_title(title: str) -> dict[str, Any]:
    (panel,) = [p for p in PANELS if p.get("title") == title]
    return panel


def steps(panel: dict[str, Any]) -> list[float]:
    th = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    return [s["value"] for s in th if s["value"] is not None]


def test_it_is_a_current_dashboard_with_a_stable_uid() -> None:
    assert DASH["schemaVersion"] >= 39
    assert DASH["uid"] == "monitor-overview"
    assert DASH["id"] is None  # Grafana assigns it; a fixed id clashes between instances
    assert DASH["title"] and DASH["description"]
    assert DASH["time"] == {"from": "now-6h", "to": "now"}


def test_rows_and_panels_are_all_there() -> None:
    assert {p["title"] for p in PANELS if p["type"] == "row"} >= REQUIRED_ROWS
    assert {p["title"] for p in CONTENT} >= REQUIRED_PANELS


def test_panel_ids_are_unique() -> None:
    ids = [p["id"] for p in PANELS]
    assert all(isinstance(i, int) for i in ids)
    assert len(ids) == len(set(ids))


def _cells(panel: dict[str, Any]) -> set[tuple[int, int]]:
    g = panel["gridPos"]
    return {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}


def test_grid_positions_fit_and_do_not_overlap() -> None:
    for p in PANELS:
        g = p["gridPos"]
        assert all(isinstance(g[k], int) for k in "xywh"), p["title"]
        assert g["w"] > 0 and g["h"] > 0 and g["x"] >= 0 and g["y"] >= 0, p["title"]
        assert g["x"] + g["w"] <= GRID_COLUMNS, f"{p['title']} is wider than the grid"
    for a, b in combinations(DASH["panels"], 2):  # rows are open: all on one grid
        assert not _cells(a) & _cells(b), f"{a['title']!r} overlaps {b['title']!r}"
    # Each panel sits below its row and above the next row.
    rows = [p for p in DASH["panels"] if p["type"] == "row"]
    assert not any(r["collapsed"] for r in rows)
    current = None
    for p in sorted(DASH["panels"], key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"])):
        if p["type"] == "row":
            current = p
        elif current is not None:
            assert DASH["panels"].index(p) > DASH["panels"].index(current), p["title"]
            assert p["gridPos"]["y"] > current["gridPos"]["y"], p["title"]


def _texts(dash: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, text) for every string Grafana interpolates variables into."""
    out = [("dashboard title", dash["title"])]
    for p in panels(dash):
        out.append((f"{p['title']} title", p["title"]))
        out.append((f"{p['title']} description", p.get("description", "")))
        for t in p.get("targets", []):
            for key in ("rawSql", "expr", "legendFormat"):
                if key in t:
                    out.append((f"{p['title']} {key}", t[key]))
    out += [(q.where, q.sql) for q in sql_queries(dash) + variable_queries(dash)]
    return out


def test_every_variable_used_is_defined() -> None:
    defined = {v["name"] for v in DASH["templating"]["list"]}
    for where, text in _texts(DASH):
        for name in referenced_variables(text):
            if name.startswith("__") and name in MACROS:
                assert re.search(rf"\${name}\(", text), f"{where}: ${name} without arguments"
                continue
            assert name in defined or name in BUILTIN_VARIABLES, f"{where}: ${name} is undefined"
    # and a variable's query uses only variables defined before it (Grafana refreshes in order)
    seen: set[str] = set()
    for v in DASH["templating"]["list"]:
        if v["type"] == "query":
            used = referenced_variables(v["query"]) - BUILTIN_VARIABLES - MACROS
            assert used <= seen, f"variable {v['name']} uses {used - seen} before it is defined"
        seen.add(v["name"])


def test_variables_are_the_ones_asked_for() -> None:
    variables = {v["name"]: v for v in DASH["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] in PG_TYPES
    assert variables["prometheus"]["type"] == "datasource"
    assert variables["prometheus"]["query"] == "prometheus"
    assert not variables["chain"]["multi"] and not variables["chain"]["includeAll"]
    for name in ("operator", "region", "probe"):
        assert variables[name]["multi"] and variables[name]["includeAll"], name
    for v in variables.values():
        if v["type"] == "query":
            assert v["datasource"] == {"type": PG_TYPES[0], "uid": "${datasource}"}, v["name"]
            assert v["refresh"] in (1, 2), v["name"]  # on load (or on time range change)


def _datasource_uids(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["uid"]] if "type" in node and isinstance(node.get("uid"), str) else []
        return found + [u for v in node.values() for u in _datasource_uids(v)]
    if isinstance(node, list):
        return [u for v in node for u in _datasource_uids(v)]
    return []


def test_no_datasource_is_hard_coded() -> None:
    uids = set(_datasource_uids(DASH["panels"])) | set(_datasource_uids(DASH["templating"]))
    assert uids == {"${datasource}", "${prometheus}"}
    annotations = set(_datasource_uids(DASH["annotations"]))
    assert annotations == {"${datasource}", "-- Grafana --"}  # Grafana's own, built in


def test_every_panel_is_described_and_queries_through_a_variable() -> None:
    for p in CONTENT:
        assert len(p.get("description", "")) > 40, f"{p['title']}: no description"
    for p in QUERYING:
        ds = p["datasource"]
        assert ds in (
            {"type": PG_TYPES[0], "uid": "${datasource}"},
            {"type": "prometheus", "uid": "${prometheus}"},
        ), p["title"]
        for t in p["targets"]:
            assert t["datasource"] == ds, f"{p['title']} [{t['refId']}]"


def test_sql_targets_are_raw_sql_with_a_format_grafana_knows() -> None:
    queries = [q for q in sql_queries(DASH) if q.panel is not None]
    assert len(queries) == len(QUERYING) - 1  # all but the Prometheus panel
    for p in QUERYING:
        for t in p["targets"]:
            if t["datasource"]["type"] != "prometheus":
                assert t["rawQuery"] is True and t["editorMode"] == "code", p["title"]
                assert t["format"] in ("time_series", "table"), p["title"]
    for q in queries:
        if q.format == "time_series":  # the columns themselves are checked on a database
            assert '"time"' in q.sql or "$__timeGroupAlias(" in q.sql, q.where
            assert re.search(r"ORDER BY 1\b", q.sql), f"{q.where}: not sorted by time"
        assert "SELECT *" not in q.sql.upper(), q.where  # column grants: name what is read


def test_units_and_thresholds_follow_the_registry_sla_defaults() -> None:
    availability = DEFAULTS.availability
    for title in (
        "Availability (scoring window)",
        "SLA availability (minutes up)",
        "SLA availability for the period",
    ):
        p = by_title(title)
        assert p["fieldConfig"]["defaults"]["unit"] == "percentunit", title
        assert steps(p) == [availability], title
    assert steps(by_title("Correctness (scoring window)")) == [DEFAULTS.correctness]
    for title in ("Latency p95 per operator", "Latency p50 / p95 per probe region"):
        p = by_title(title)
        assert p["fieldConfig"]["defaults"]["unit"] == "ms", title
        assert steps(p) == [DEFAULTS.latency_p95_ms], title
    assert steps(by_title("Lag behind the reference head (blocks)")) == [DEFAULTS.max_lag_blocks]
    assert (
        by_title("Lag behind the reference head (seconds)")["fieldConfig"]["defaults"]["unit"]
        == "s"
    )
    weights = by_title("Routing weight per operator")["fieldConfig"]["defaults"]
    assert (weights["unit"], weights["min"], weights["max"]) == ("percentunit", 0, 1)
    assert weights["custom"]["stacking"]["mode"] == "normal"
    for p in QUERYING:
        assert p["fieldConfig"]["defaults"].get("unit") or p["type"] == "table", p["title"]
    text = by_title("How to read this dashboard")["options"]["content"]
    for figure in (f"{availability:g}", f"{DEFAULTS.latency_p95_ms:g} ms", "3 blocks"):
        assert figure in text


def test_breach_events_are_annotations() -> None:
    (anno,) = [a for a in DASH["annotations"]["list"] if a.get("name") == "SLA breach events"]
    assert anno["enable"] and anno["datasource"]["uid"] == "${datasource}"
    assert anno["target"]["format"] == "table"
    for column in ('AS "time"', 'AS "timeEnd"', "AS text", "AS tags"):
        assert column in anno["target"]["rawSql"]
    assert "breach_events" in anno["target"]["rawSql"]


def test_rejected_batches_come_from_prometheus() -> None:
    p = by_title("Rejected batches by reason")
    (t,) = p["targets"]
    assert t["expr"] == "sum by (code) (rate(monitor_ingest_rejected_total[$__rate_interval]))"
    assert t["legendFormat"] == "{{code}}"


def test_provisioning_files_point_grafana_at_the_database_and_the_dashboard() -> None:
    ds = yaml.safe_load((PROVISIONING / "datasources" / "monitor.yaml").read_text())
    assert ds["apiVersion"] == 1
    by_type = {d["type"]: d for d in ds["datasources"]}
    pg = by_type[PG_TYPES[0]]
    assert pg["uid"] == "monitor-postgres"
    assert pg["url"] == "${MONITOR_GRAFANA_DB_HOST}"
    assert pg["user"] == "${MONITOR_GRAFANA_DB_USER}"
    assert pg["secureJsonData"] == {"password": "${MONITOR_GRAFANA_DB_PASSWORD}"}
    jd = pg["jsonData"]
    assert jd["database"] == "${MONITOR_GRAFANA_DB_NAME}"
    assert jd["sslmode"] == "${MONITOR_GRAFANA_DB_SSLMODE}"
    assert jd["timescaledb"] is False and isinstance(jd["postgresVersion"], int)
    assert by_type["prometheus"]["url"] == "${MONITOR_GRAFANA_PROMETHEUS_URL}"
    boards = yaml.safe_load((PROVISIONING / "dashboards" / "monitor.yaml").read_text())
    (provider,) = boards["providers"]
    assert provider["type"] == "file"
    docs = DOCS.read_text()
    assert provider["options"]["path"] + "/monitor.json" in docs  # the mount the docs show
    for name in re.findall(
        r"\$\{(\w+)\}", (PROVISIONING / "datasources" / "monitor.yaml").read_text()
    ):
        assert name in docs, f"{name} is not documented"


def _granted() -> dict[str, set[str] | None]:
    """table -> granted columns (None: the whole table), from grafana_readonly.sql."""
    text = "\n".join(
        line for line in READONLY_SQL.read_text().splitlines() if not line.startswith("--")
    )
    out: dict[str, set[str] | None] = {}
    for cols, tables in re.findall(
        r"GRANT SELECT(?:\s+\(([^)]*)\))?\s+ON\s+([\w\s,]+?)\s+TO", text
    ):
        for table in (t.strip() for t in tables.split(",")):
            out[table] = {c.strip() for c in cols.split(",")} if cols else None
    return out


def test_the_role_is_granted_the_tables_the_dashboard_reads_and_no_more() -> None:
    granted = _granted()
    read: set[str] = set()
    for q in sql_queries(DASH) + variable_queries(DASH):
        read |= set(re.findall(r"(?<!epoch )\b(?:FROM|JOIN)\s+([a-z_]+)\b(?![.(])", q.sql))
    read -= {"run", "runs", "bounds", "edges", "counted", "totals", "targets", "span"}
    assert read <= set(granted), f"not granted: {read - set(granted)}"
    assert set(granted) <= read, f"granted but unused: {set(granted) - read}"
    endpoints = granted["endpoints"]
    assert endpoints is not None and "url" not in endpoints
    batches = granted["batches"]
    assert batches is not None and not batches & {"body", "signature", "results_hash"}


def test_the_docs_cover_every_row_and_panel() -> None:
    docs = DOCS.read_text()
    for p in PANELS:
        assert p["title"] in docs, f"docs/dashboards.md does not mention {p['title']!r}"
    for needle in (
        "grafana_readonly.sql",
        "monitor_grafana",
        "/etc/grafana/provisioning/datasources",
        "/etc/grafana/provisioning/dashboards",
        "images/status-page.png",
        "monitor_ingest_rejected_total",
    ):
        assert needle in docs, needle


@pytest.mark.parametrize("q", sql_queries(DASH), ids=lambda q: q.where)
def test_sql_filters_by_the_variables_it_should(q: Any) -> None:
    """A panel about operators honours the operator variable; the probe panels the probes."""
    if re.search(r"\bscores\b|subject_minutes|breach_events", q.sql):
        assert "IN ($operator)" in q.sql, q.where
    if re.search(r"\bbatches\b|probe_scores", q.sql):
        assert "IN ($probe)" in q.sql, q.where
    if re.search(r"\b(?:scoring_runs|subject_minutes|breach_events)\b", q.sql):
        assert "$chain" in q.sql, q.where
