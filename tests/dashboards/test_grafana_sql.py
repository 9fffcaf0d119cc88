"""The macro and variable expansion against Grafana's own documented outputs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.dashboards.grafana_sql import (
    GrafanaError,
    TimeRange,
    Variable,
    calculate_interval,
    expand,
    format_interval,
    go_float,
    referenced_variables,
)

RANGE = TimeRange(
    datetime(2017, 4, 21, 5, 1, 17, tzinfo=UTC), datetime(2017, 4, 21, 5, 6, 17, tzinfo=UTC)
)
VARS = {
    "chain": Variable("chain", ("1337",)),
    "operator": Variable("operator", ("alpha", "o'brien"), multi=True, include_all=True),
    "one": Variable("one", ("alpha",), multi=True),
}


def run(sql: str, interval_ms: int = 60_000, time_range: TimeRange = RANGE) -> str:
    return expand(sql, VARS, time_range=time_range, interval_ms=interval_ms)


def test_time_macros_as_the_grafana_docs_show_them() -> None:
    assert run("$__timeFilter(time_column)") == (
        "time_column BETWEEN '2017-04-21T05:01:17Z' AND '2017-04-21T05:06:17Z'"
    )
    assert run("$__timeFrom() $__timeTo()") == "'2017-04-21T05:01:17Z' '2017-04-21T05:06:17Z'"
    assert run("$__timeGroup(dateColumn,'5m')") == "floor(extract(epoch from dateColumn)/300)*300"
    assert run("$__timeGroupAlias(dateColumn, $__interval)") == (
        'floor(extract(epoch from dateColumn)/60)*60 AS "time"'
    )
    assert run("$__timeGroup(x, $__interval, NULL)", interval_ms=500) == (
        "floor(extract(epoch from x)/0.5)*0.5"
    )
    assert run("$__time(c), $__timeEpoch(c)") == 'c AS "time", extract(epoch from c) as "time"'
    assert run("$__unixEpochFilter(t)") == "t >= 1492750877 AND t <= 1492751177"
    assert run("$__unixEpochFrom() $__unixEpochTo() $__interval_ms") == (
        "1492750877 1492751177 60000"
    )


def test_fractional_seconds_are_trimmed_as_go_does() -> None:
    r = TimeRange(RANGE.start + timedelta(milliseconds=120), RANGE.end)
    assert run("$__timeFrom()", time_range=r) == "'2017-04-21T05:01:17.12Z'"


def test_variables_are_quoted_as_the_postgresql_datasource_quotes_them() -> None:
    assert run("chain_id = $chain") == "chain_id = 1337"
    assert run("IN ($operator)") == "IN ('alpha','o''brien')"
    assert run("IN (${operator:sqlstring})") == "IN ('alpha','o''brien')"
    assert run("IN ($one)") == "IN ('alpha')"  # multi: quoted even when one is selected
    assert run("${operator:csv} [[chain]] ${chain}") == "alpha,o'brien 1337 1337"


def test_what_grafana_refuses_is_refused() -> None:
    with pytest.raises(GrafanaError, match="unknown macro"):
        run("$__timeFilterr(x)")
    with pytest.raises(GrafanaError, match="neither a variable nor a macro"):
        run("chain_id = $chian")
    with pytest.raises(GrafanaError, match="parentheses"):
        run("$__timeFilter(coalesce(a, b))")


def test_the_interval_follows_the_range_the_width_and_the_lower_limit() -> None:
    six_hours = TimeRange(RANGE.start, RANGE.start + timedelta(hours=6))
    assert calculate_interval(six_hours, resolution=1600, low_limit=None) == 15_000
    assert calculate_interval(six_hours, resolution=1600, low_limit="1m") == 60_000
    month = TimeRange(RANGE.start, RANGE.start + timedelta(days=30))
    assert calculate_interval(month, resolution=1600, low_limit="1m") == 1_800_000
    assert [format_interval(ms) for ms in (500, 15_000, 60_000, 1_800_000, 86_400_000)] == [
        "500ms",
        "15s",
        "1m",
        "30m",
        "1d",
    ]
    assert [go_float(x) for x in (60.0, 0.5, 604_800.0, 2_592_000.0)] == [
        "60",
        "0.5",
        "604800",
        "2.592e+06",
    ]


def test_references_in_every_syntax_are_found() -> None:
    text = "$a ${b} ${c:csv} [[d]] [[e:raw]] ${f.g} $__timeFilter(x)"
    assert referenced_variables(text) == {"a", "b", "c", "d", "e", "f", "__timeFilter"}
