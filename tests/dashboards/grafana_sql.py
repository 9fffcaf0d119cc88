"""What Grafana does to a PostgreSQL panel's SQL before the database sees it, done the same way, so
the dashboard's queries can be run and checked without a Grafana.

Two steps, in Grafana's order:

1. The browser's template service replaces dashboard variables (``$var``, ``${var}``,
   ``${var:format}``, ``[[var]]``) and the built-in ``$__interval``/``$__interval_ms``. With no
   format, the PostgreSQL datasource's ``interpolateVariable`` decides: a multi-value or
   include-All variable becomes quoted literals joined by commas (``'a','b'``), a single value is
   inserted as is with its quotes doubled. Unknown names (the macros) are left alone.
2. The server (``pkg/tsdb/grafana-postgresql-datasource``, sqleng) replaces ``$__interval``,
   ``$__interval_ms``, ``$__unixEpochFrom()``, ``$__unixEpochTo()``, then every macro
   ``$__name(args)`` (args: no parentheses inside, split on commas, trimmed); an unknown macro is
   an error. Times are RFC 3339 in UTC with nanoseconds trimmed, as Go's ``time.RFC3339Nano``.

The ``$__interval`` of a panel follows the browser's ``rangeutil.calculateInterval``: the range
divided by the resolution (max data points, else the panel's width in pixels), rounded by
``roundInterval``, never below the panel's ``interval`` (or the datasource's ``timeInterval``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

__all__ = [
    "BUILTIN_VARIABLES",
    "MACROS",
    "GrafanaError",
    "TimeRange",
    "Variable",
    "calculate_interval",
    "expand",
    "format_interval",
    "go_float",
    "interpolate_variables",
    "parse_interval",
    "referenced_variables",
    "rfc3339nano",
]


class GrafanaError(ValueError):
    """What Grafana would answer with an error instead of running the query."""


# The template service's pattern (public/app/features/templating/template_srv.ts, variableRegex).
VARIABLE_RE = re.compile(
    r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^\}]+))?(?::([^\}]+))?\}"
)
# sqleng's macro pattern (pkg/tsdb/sqleng/sql_engine.go).
MACRO_RE = re.compile(r"\$([_a-zA-Z0-9]+)\(([^\)]*)\)")

MACROS = frozenset(
    {
        "__time",
        "__timeEpoch",
        "__timeFilter",
        "__timeFrom",
        "__timeTo",
        "__timeGroup",
        "__timeGroupAlias",
        "__unixEpochFilter",
        "__unixEpochNanoFilter",
        "__unixEpochNanoFrom",
        "__unixEpochNanoTo",
        "__unixEpochGroup",
        "__unixEpochGroupAlias",
    }
)
# Names the template service or a datasource fills in without a dashboard variable.
BUILTIN_VARIABLES = frozenset(
    {
        "__interval",
        "__interval_ms",
        "__rate_interval",
        "__range",
        "__range_s",
        "__range_ms",
        "__from",
        "__to",
        "__dashboard",
        "__org",
        "__user",
        "__unixEpochFrom",
        "__unixEpochTo",
        "timeFilter",
    }
)


@dataclass(frozen=True)
class TimeRange:
    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("a time range needs aware datetimes")

    @property
    def ms(self) -> int:
        return (self.end - self.start) // timedelta(milliseconds=1)


@dataclass(frozen=True)
class Variable:
    """A dashboard variable's current selection (All already expanded to every value)."""

    name: str
    values: tuple[str, ...]
    texts: tuple[str, ...] = ()
    multi: bool = False
    include_all: bool = False

    @property
    def multi_valued(self) -> bool:
        return self.multi or self.include_all


def referenced_variables(text: str) -> set[str]:
    """Every variable name the template service would look up in ``text``."""
    names = set()
    for m in VARIABLE_RE.finditer(text):
        names.add(m.group(1) or m.group(2) or m.group(4))
    return names


# -- step 1: the browser ----------------------------------------------------------------------


def _quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _default_format(var: Variable) -> str:
    """grafana-postgresql-datasource's interpolateVariable."""
    if var.multi_valued:
        return ",".join(_quote_literal(v) for v in var.values)
    if len(var.values) != 1:
        raise GrafanaError(f"variable {var.name} is single-valued but has {len(var.values)}")
    return var.values[0].replace("'", "''")


def _formatted(var: Variable, fmt: str) -> str:
    values = var.values
    if fmt == "sqlstring":
        return ",".join(_quote_literal(v) for v in values)
    if fmt in ("csv", "raw"):
        return ",".join(values)
    if fmt == "singlequote":
        return ",".join("'" + v.replace("'", "\\'") + "'" for v in values)
    if fmt == "doublequote":
        return ",".join('"' + v.replace('"', '\\"') + '"' for v in values)
    if fmt == "pipe":
        return "|".join(values)
    if fmt == "text":
        return " + ".join(var.texts or values)
    raise GrafanaError(f"format {fmt!r} of ${{{var.name}}} is not one this module knows")


def interpolate_variables(
    sql: str, variables: Mapping[str, Variable], *, time_range: TimeRange, interval_ms: int
) -> str:
    builtins = {
        "__interval": format_interval(interval_ms),
        "__interval_ms": str(interval_ms),
        "__from": str(int(time_range.start.timestamp() * 1000)),
        "__to": str(int(time_range.end.timestamp() * 1000)),
        "__range_ms": str(time_range.ms),
        "__range_s": str(time_range.ms // 1000),
        "__range": format_interval(time_range.ms),
    }

    def replace(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(4)
        fmt = m.group(3) or m.group(6)
        if name in builtins:
            return builtins[name]
        var = variables.get(name)
        if var is None:
            return m.group(0)  # not a variable: left for the datasource (macros)
        return _formatted(var, fmt) if fmt else _default_format(var)

    return VARIABLE_RE.sub(replace, sql)


# -- step 2: the server -----------------------------------------------------------------------


def rfc3339nano(t: datetime) -> str:
    """Go's ``t.UTC().Format(time.RFC3339Nano)``: fractional seconds without trailing zeros."""
    t = t.astimezone(UTC)
    text = t.strftime("%Y-%m-%dT%H:%M:%S")
    if t.microsecond:
        text += "." + f"{t.microsecond:06d}".rstrip("0")
    return text + "Z"


def go_float(value: float) -> str:
    """Go's ``fmt.Sprintf("%v", float64)``: ``%g`` with the shortest digits, whose exponent form
    starts below 1e-4 and from 1e6 on (``fmt.Println(1e6)`` prints ``1e+06``)."""
    if value == 0:
        return "0"
    d = Decimal(repr(float(value)))
    sign, digits, exponent = d.as_tuple()
    assert isinstance(exponent, int)
    exp10 = len(digits) + exponent - 1  # the decimal exponent of the first digit
    if -4 <= exp10 < 6:
        return format(d.normalize(), "f")
    coefficient = "".join(map(str, digits)).rstrip("0") or "0"
    mantissa = coefficient[0] + ("." + coefficient[1:] if len(coefficient) > 1 else "")
    return f"{'-' if sign else ''}{mantissa}e{'-' if exp10 < 0 else '+'}{abs(exp10):02d}"


_UNITS_MS = {
    "ms": 1,
    "s": 1000,
    "m": 60_000,
    "h": 3_600_000,
    "d": 86_400_000,
    "w": 604_800_000,
    "y": 31_536_000_000,
}


def parse_interval(text: str) -> int:
    """gtime.ParseInterval for the forms Grafana writes: a number and a unit; milliseconds."""
    m = re.fullmatch(r"(\d+)(ms|s|m|h|d|w|y)", text.strip().strip("'"))
    if m is None:
        raise GrafanaError(f"error parsing interval {text}")
    return int(m.group(1)) * _UNITS_MS[m.group(2)]


def format_interval(ms: int) -> str:
    """gtime.FormatInterval (and the browser's secondsToHms for the intervals it produces)."""
    for unit in ("y", "d", "h", "m", "s", "ms"):
        if ms >= _UNITS_MS[unit]:
            return f"{ms // _UNITS_MS[unit]}{unit}"
    return "1ms"


def _round_interval(ms: float) -> int:
    """rangeutil.roundInterval."""
    steps = [
        (15, 10),
        (35, 20),
        (75, 50),
        (150, 100),
        (350, 200),
        (750, 500),
        (1_500, 1_000),
        (3_500, 2_000),
        (7_500, 5_000),
        (12_500, 10_000),
        (17_500, 15_000),
        (25_000, 20_000),
        (45_000, 30_000),
        (90_000, 60_000),
        (210_000, 120_000),
        (450_000, 300_000),
        (750_000, 600_000),
        (1_050_000, 900_000),
        (1_500_000, 1_200_000),
        (2_700_000, 1_800_000),
        (5_400_000, 3_600_000),
        (9_000_000, 7_200_000),
        (16_200_000, 10_800_000),
        (32_400_000, 21_600_000),
        (86_400_000, 43_200_000),
        (604_800_000, 86_400_000),
        (1_814_400_000, 604_800_000),
        (3_628_800_000, 2_592_000_000),
    ]
    for below, rounded in steps:
        if ms < below:
            return rounded
    return 31_536_000_000


def calculate_interval(time_range: TimeRange, *, resolution: int, low_limit: str | None) -> int:
    """rangeutil.calculateInterval: the panel's ``$__interval`` in milliseconds."""
    interval = _round_interval(time_range.ms / resolution)
    lowest = parse_interval(low_limit) if low_limit else 1
    return max(interval, lowest)


def _seconds(ms: int) -> str:
    return go_float(ms / 1000)


def _macro(name: str, args: Sequence[str], time_range: TimeRange) -> str:
    start, end = time_range.start, time_range.end

    def need(n: int) -> None:
        if len(args) < n or any(not a for a in args[:n]):
            raise GrafanaError(f"missing argument for macro {name}")

    if name == "__time":
        need(1)
        return f'{args[0]} AS "time"'
    if name == "__timeEpoch":
        need(1)
        return f'extract(epoch from {args[0]}) as "time"'
    if name == "__timeFilter":
        need(1)
        return f"{args[0]} BETWEEN '{rfc3339nano(start)}' AND '{rfc3339nano(end)}'"
    if name == "__timeFrom":
        return f"'{rfc3339nano(start)}'"
    if name == "__timeTo":
        return f"'{rfc3339nano(end)}'"
    if name in ("__timeGroup", "__timeGroupAlias"):
        if len(args) < 2:
            raise GrafanaError(f"macro {name} needs time column and interval and optional fill")
        seconds = _seconds(parse_interval(args[1]))
        group = f"floor(extract(epoch from {args[0]})/{seconds})*{seconds}"
        return group + ' AS "time"' if name == "__timeGroupAlias" else group
    if name == "__unixEpochFilter":
        need(1)
        return f"{args[0]} >= {int(start.timestamp())} AND {args[0]} <= {int(end.timestamp())}"
    if name == "__unixEpochNanoFilter":
        need(1)
        return f"{args[0]} >= {_nanos(start)} AND {args[0]} <= {_nanos(end)}"
    if name == "__unixEpochNanoFrom":
        return str(_nanos(start))
    if name == "__unixEpochNanoTo":
        return str(_nanos(end))
    if name in ("__unixEpochGroup", "__unixEpochGroupAlias"):
        if len(args) < 2:
            raise GrafanaError(f"macro {name} needs time column and interval")
        seconds = _seconds(parse_interval(args[1]))
        group = f"floor(({args[0]})/{seconds})*{seconds}"
        return group + ' AS "time"' if name == "__unixEpochGroupAlias" else group
    raise GrafanaError(f"unknown macro {name!r}")


def _nanos(t: datetime) -> int:
    return (t - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 1000


def expand_macros(sql: str, *, time_range: TimeRange, interval_ms: int) -> str:
    """The server side: sqleng.Interpolate, then the macro engine."""
    sql = sql.replace("$__interval_ms", str(interval_ms))
    sql = sql.replace("$__interval", format_interval(interval_ms))
    sql = sql.replace("$__unixEpochFrom()", str(int(time_range.start.timestamp())))
    sql = sql.replace("$__unixEpochTo()", str(int(time_range.end.timestamp())))

    def replace(m: re.Match[str]) -> str:
        if "(" in m.group(2):
            # The pattern stops at the first ")": Grafana versions differ on nested parentheses
            # (older ones cut the argument there), so a portable dashboard has none.
            raise GrafanaError(f"parentheses inside the arguments of ${m.group(1)}(...)")
        args = [a.strip() for a in m.group(2).split(",")] if m.group(2).strip() else []
        return _macro(m.group(1), args, time_range)

    expanded = MACRO_RE.sub(replace, sql)
    left = re.search(r"\$__\w+|\$\w+|\[\[\w+", expanded)
    if left is not None:
        raise GrafanaError(f"{left.group(0)} is neither a variable nor a macro")
    return expanded


def expand(
    sql: str, variables: Mapping[str, Variable], *, time_range: TimeRange, interval_ms: int
) -> str:
    """The SQL the database receives for one query of one panel."""
    browser = interpolate_variables(sql, variables, time_range=time_range, interval_ms=interval_ms)
    return expand_macros(browser, time_range=time_range, interval_ms=interval_ms)
