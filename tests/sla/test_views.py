"""GET /v1/sla, /v1/uptime, the badges and their errors, against the real collector over
loopback, on data ingested and rolled up for real."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import Engine

from monitor.serving import ServerThread
from monitor.settings import Settings
from monitor.sla.job import run_rollups
from tests.conftest import row_counts
from tests.sla.support import T0, Fleet, make_fleet, post, result
from tests.test_api import assert_error


def minute_batches(
    engine: Engine, fleet: Fleet, start: datetime, plan: list[list[dict[str, object]]]
) -> None:
    """``plan[m][p]``: probe p's single check of alpha in minute m (result() options), or
    absent when the list is shorter."""
    for m, checks in enumerate(plan):
        at = start + timedelta(minutes=m)
        for account, options in zip(fleet.probes, checks, strict=False):
            post(
                engine,
                account,
                [result(fleet, "alpha", at + timedelta(seconds=30), **options)],  # type: ignore[arg-type]
                created=at + timedelta(seconds=55),
            )


HEALTHY: list[dict[str, object]] = [{}, {}, {}]
DOWN: list[dict[str, object]] = [{"ok": False}, {"ok": False}, {}]
LAGGING: list[dict[str, object]] = [{"lag": 5}, {"lag": 5}, {"lag": 5}]
ONE_PROBE: list[dict[str, object]] = [{}]


def test_an_sla_report_by_hand(engine: Engine, settings: Settings, collector: ServerThread) -> None:
    fleet = make_fleet(engine)
    minute_batches(engine, fleet, T0, [HEALTHY] * 7 + [DOWN, ONE_PROBE, LAGGING])
    run_rollups(engine, settings, now=T0 + timedelta(minutes=10))
    params = {"start": T0.isoformat(), "end": (T0 + timedelta(minutes=10)).isoformat()}
    response = httpx.get(f"{collector.url}/v1/sla/alpha", params={**params, "chain_id": 1})
    assert response.status_code == 200, response.text
    report = response.json()
    assert httpx.get(f"{collector.url}/v1/sla/alpha", params=params).json() == report  # one chain
    figures = report["figures"]
    assert figures["minutes"] == {
        "total": 10,
        "up": 7,
        "down": 2,
        "insufficient": 1,
        "down_by_reason": {"unavailable": 1, "lagging": 1, "incorrect": 0},
    }
    assert figures["availability"] == pytest.approx(7 / 9, abs=1e-6)
    assert figures["lag_compliance"] == pytest.approx(8 / 9, abs=1e-6)
    assert figures["correctness"] == 1.0
    assert figures["latency_ms"] == {"p50": 50, "p95": 50, "p99": 50}
    assert figures["verdicts"] == {
        "availability": "breached",
        "latency_p95": "met",
        "lag": "breached",
        "correctness": "met",
    }
    assert (figures["probes"], figures["samples"]) == (3, 28)
    assert report["targets"]["availability"] == 0.99
    assert [(b["start"][11:16], b["minutes"], b["reasons"]) for b in report["breaches"]] == [
        ("10:44", 1, ["unavailable"]),
        ("10:46", 1, ["lagging"]),
    ]
    assert report["longest_outage_minutes"] == 1
    recommendation = report["recommendation"]
    assert [v["kind"] for v in recommendation["violations"]] == ["availability", "lag"]
    assert recommendation["penalty_bps"] == 150
    assert recommendation["policy_hash"].startswith("0x")


def test_uptime_windows_and_badges(
    engine: Engine, settings: Settings, collector: ServerThread
) -> None:
    fleet = make_fleet(engine)
    now = datetime.now(UTC)
    start = now.replace(second=0, microsecond=0) - timedelta(minutes=6)
    minute_batches(engine, fleet, start, [HEALTHY] * 5)
    run_rollups(engine, settings, now=now)
    body = httpx.get(f"{collector.url}/v1/uptime/alpha").json()
    assert set(body["windows"]) == {"1h", "24h", "7d", "30d", "365d"}
    for window in body["windows"].values():
        assert (window["uptime"], window["up"], window["down"]) == (1.0, 5, 0)
    assert body["windows"]["1h"]["insufficient"] == 60 - 5  # the last 60 minutes, this one too
    # 5 judged minutes of an hour: too little coverage for a verdict
    assert body["windows"]["1h"]["verdict"] == "insufficient_data"
    badge = httpx.get(f"{collector.url}/v1/badges/alpha/uptime/30d.svg")
    assert badge.status_code == 200
    assert badge.headers["content-type"] == "image/svg+xml"
    assert "uptime 30d" in badge.text and "100%" in badge.text and badge.text.startswith("<svg")
    empty = httpx.get(f"{collector.url}/v1/badges/bravo/uptime/24h.svg")
    assert "no data" in empty.text


def test_bad_requests_get_clear_errors_and_change_nothing(
    engine: Engine, collector: ServerThread
) -> None:
    make_fleet(engine, extra="")
    before = row_counts(engine)
    url = collector.url
    t = T0.isoformat()
    assert_error(httpx.get(f"{url}/v1/sla/nobody", params={"chain_id": 1}), 404, "unknown_operator")
    assert_error(httpx.get(f"{url}/v1/sla/alpha", params={"chain_id": 5}), 404, "unknown_chain")
    assert_error(httpx.get(f"{url}/v1/sla/alpha", params={"start": t, "end": t}), 422, "bad_period")
    assert_error(
        httpx.get(f"{url}/v1/sla/alpha", params={"start": "2026-11-02T10:00:00"}), 422, "bad_period"
    )
    assert_error(
        httpx.get(
            f"{url}/v1/sla/alpha",
            params={"start": "2020-01-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"},
        ),
        422,
        "bad_period",
    )
    assert_error(httpx.get(f"{url}/v1/sla/alpha", params={"start": "yesterday"}), 422)
    for start, end in [
        ("0001-01-01T00:00:00+01:00", "0001-01-02T00:00:00+01:00"),  # before year 1 in UTC
        ("9999-12-31T23:30:00Z", "9999-12-31T23:50:00Z"),
        ("1960-01-01T00:00:00Z", "1960-01-02T00:00:00Z"),
    ]:
        response = httpx.get(f"{url}/v1/sla/alpha", params={"start": start, "end": end})
        assert_error(response, 422, "bad_period")
    assert_error(httpx.get(f"{url}/v1/events", params={"since": "0001-01-01T00:00:00+01:00"}), 422)
    assert_error(httpx.get(f"{url}/v1/sla/Not_An_Id"), 422)
    assert_error(httpx.get(f"{url}/v1/uptime/nobody"), 404, "unknown_operator")
    assert_error(httpx.get(f"{url}/v1/badges/alpha/uptime/2w.svg"), 404, "unknown_uptime_window")
    assert_error(httpx.get(f"{url}/v1/events", params={"limit": 0}), 422)
    assert row_counts(engine) == before
