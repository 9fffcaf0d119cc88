"""dashboards/monitor.json as the tests read it: its panels, every SQL query in it (panel targets,
variable queries, annotations), and the variables resolved against a database the way Grafana
resolves them."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import yaml

from tests.dashboards.grafana_sql import TimeRange, Variable, calculate_interval, expand

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "dashboards" / "monitor.json"
PROVISIONING = ROOT / "dashboards" / "provisioning"
READONLY_SQL = ROOT / "dashboards" / "grafana_readonly.sql"
DOCS = ROOT / "docs" / "dashboards.md"

PG_TYPES = ("grafana-postgresql-datasource", "postgres")
GRID_COLUMNS = 24
DASHBOARD_WIDTH_PX = 1600  # the panel width Grafana's interval is computed from, assumed


def load() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def panels(dashboard: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows and the panels of collapsed rows included."""
    out: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def datasource_time_interval() -> str:
    """The provisioned PostgreSQL datasource's min interval (jsonData.timeInterval)."""
    doc = yaml.safe_load((PROVISIONING / "datasources" / "monitor.yaml").read_text())
    (pg,) = [d for d in doc["datasources"] if d["type"] in PG_TYPES]
    return str(pg["jsonData"]["timeInterval"])


@dataclass(frozen=True)
class Query:
    """One SQL text of the dashboard and what Grafana expects back."""

    where: str  # for messages and test ids
    sql: str
    format: str  # time_series | table | annotation | variable
    panel: Mapping[str, Any] | None = None

    def interval_ms(self, time_range: TimeRange) -> int:
        panel = self.panel or {}
        width = panel.get("gridPos", {}).get("w", GRID_COLUMNS)
        resolution = panel.get("maxDataPoints") or round(width / GRID_COLUMNS * DASHBOARD_WIDTH_PX)
        low = panel.get("interval") or datasource_time_interval()
        return calculate_interval(time_range, resolution=resolution, low_limit=low)

    def expanded(self, variables: Mapping[str, Variable], time_range: TimeRange) -> str:
        return expand(
            self.sql, variables, time_range=time_range, interval_ms=self.interval_ms(time_range)
        )


def _is_pg(datasource: Any) -> bool:
    return isinstance(datasource, dict) and datasource.get("type") in PG_TYPES


def sql_queries(dashboard: Mapping[str, Any]) -> list[Query]:
    """Panel targets, then annotation queries (variable queries: ``variable_queries``)."""
    out = []
    for panel in panels(dashboard):
        for t in panel.get("targets", []):
            if _is_pg(t.get("datasource", panel.get("datasource"))):
                out.append(
                    Query(f"{panel['title']} [{t['refId']}]", t["rawSql"], t["format"], panel)
                )
    for anno in dashboard["annotations"]["list"]:
        if _is_pg(anno.get("datasource")):
            out.append(Query(f"annotation {anno['name']}", anno["target"]["rawSql"], "annotation"))
    return out


def variable_queries(dashboard: Mapping[str, Any]) -> list[Query]:
    return [
        Query(f"variable {v['name']}", _query_text(v), "variable")
        for v in dashboard["templating"]["list"]
        if v["type"] == "query"
    ]


def _query_text(variable: Mapping[str, Any]) -> str:
    query = variable["query"]
    return query if isinstance(query, str) else query["rawSql"]


def default_range(dashboard: Mapping[str, Any], now: datetime) -> TimeRange:
    """The dashboard's default time range (``now-6h`` .. ``now``) at ``now``."""

    def at(expr: str) -> datetime:
        if expr == "now":
            return now
        m = re.fullmatch(r"now-(\d+)([smhd])", expr)
        assert m, f"time {expr!r} is not of the form now-<n><unit>"
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[m.group(2)]
        return now - timedelta(**{unit: int(m.group(1))})

    return TimeRange(at(dashboard["time"]["from"]), at(dashboard["time"]["to"]))


def resolve_variables(
    dashboard: Mapping[str, Any],
    conn: psycopg.Connection,
    time_range: TimeRange,
    *,
    select: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Variable]:
    """Run each query variable in order (a later one may use an earlier one), as Grafana does on
    load, and select All where the variable has it, else the first value; ``select`` picks
    given values of a variable instead (each must be one of its options)."""
    select = select or {}
    resolved: dict[str, Variable] = {}
    for v in dashboard["templating"]["list"]:
        if v["type"] != "query":
            continue
        query = Query(f"variable {v['name']}", _query_text(v), "variable")
        rows, columns = fetch(conn, query.expanded(resolved, time_range))
        if sorted(columns) == ["__text", "__value"]:
            options = [
                (str(r[columns.index("__value")]), str(r[columns.index("__text")])) for r in rows
            ]
        else:
            options = [(str(r[0]), str(r[0])) for r in rows]
        if v["name"] in select:
            wanted = list(select[v["name"]])
            missing = set(wanted) - {value for value, _ in options}
            assert not missing, f"variable {v['name']} offers no {missing}"
            options = [o for o in options if o[0] in wanted]
        elif not v.get("includeAll"):
            options = options[:1]
        resolved[v["name"]] = Variable(
            v["name"],
            tuple(value for value, _ in options),
            tuple(text for _, text in options),
            multi=bool(v.get("multi")),
            include_all=bool(v.get("includeAll")),
        )
    return resolved


@dataclass(frozen=True)
class Column:
    name: str
    oid: int  # the PostgreSQL type


def fetch_typed(conn: psycopg.Connection, sql: str) -> tuple[list[tuple[Any, ...]], list[Column]]:
    with conn.cursor() as cur:
        cur.execute(sql.encode())  # bytes: no placeholder parsing, the SQL goes as it is
        rows = cur.fetchall()
        columns = [Column(c.name, c.type_code) for c in cur.description or []]
    return rows, columns


def fetch(conn: psycopg.Connection, sql: str) -> tuple[list[tuple[Any, ...]], list[str]]:
    rows, columns = fetch_typed(conn, sql)
    return rows, [c.name for c in columns]
