"""The status page over real loopback HTTP, on SQLite and on PostgreSQL: every operator with its
weight, status and uptime; an operator's SLA this month and its breach events; registry names
escaped; a 404 page; nothing loaded from anywhere but the collector; /v1 and the OpenAPI schema
as they were."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import Engine

from monitor.db.session import session_scope
from monitor.registry.apply import apply_registry
from monitor.registry.schema import load_registry
from monitor.serving import ServerThread
from monitor.settings import Settings
from monitor.status.render import percent
from tests.conftest import Network
from tests.status.support import (
    OPERATORS,
    absolute_hosts,
    cell,
    feed,
    operator_rows,
    page_urls,
)
from tests.test_api import assert_error

TIMEOUT = 10.0
LOOPBACK = ("127.0.0.1", "localhost", "[::1]")


def get(url: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(f"{url}{path}", timeout=TIMEOUT, **kwargs)


def html(response: httpx.Response, status: int = 200) -> str:
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("text/html"), response.headers
    assert "default-src 'none'" in response.headers["content-security-policy"]
    return response.text


def skip_at_month_start(now: datetime) -> None:
    month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if now - month < timedelta(minutes=5):
        pytest.skip("the month began minutes ago: the data fed lies partly in the last one")


def test_the_page_lists_every_operator_with_its_weight(
    collector: ServerThread, network: Network, engine: Engine, settings: Settings
) -> None:
    url = collector.url
    before = html(get(url, "/"))
    assert "Not scored yet" in before
    assert set(operator_rows(before)) == set(OPERATORS)
    assert all('<span class="status unscored">' in row for row in operator_rows(before).values())
    empty = get(url, "/status/api/history", params={"chain_id": network.chain_id}).json()
    assert [s["operator_id"] for s in empty["series"]] == OPERATORS
    assert all(s["points"] == [] for s in empty["series"])

    feed(url, engine, settings, network)
    page = html(get(url, "/"))
    assert f"chain {network.chain_id}" in page
    rows = operator_rows(page)
    assert list(rows) == OPERATORS  # by id, each once
    api = {o["id"]: o["endpoints"][0] for o in get(url, "/v1/operators").json()}
    for operator_id, row in rows.items():
        assert f"{operator_id.title()} (" in row  # the registry's name, e.g. "Alpha (healthy)"
        assert cell(row, "weight") == percent(api[operator_id]["weight"]), operator_id
        assert f'<span class="status {api[operator_id]["status"]}">' in row
        assert f'href="/status/operators/{operator_id}"' in row
    assert api["alpha"]["weight"] > api["bravo"]["weight"] > 0
    assert "incorrect" in rows["charlie"] and "excluded" in rows["charlie"]
    assert "insufficient_probes" in rows["echo"]
    assert ">4.0<" in rows["bravo"]  # lag in blocks
    assert ">320 ms<" in rows["delta"]  # latency p95
    # Uptime over 24h and 30d from the SLA minutes: alpha up, bravo lagging (down), echo unseen.
    assert rows["alpha"].count(">100%<") == 2
    assert rows["bravo"].count(">0%<") == 2
    assert rows["echo"].count(">no data<") == 2
    # The operators' endpoints as scheme://host:port: the simnet's path is each operator's id.
    assert network.sim.url in page and f"{network.sim.url}/" not in page

    history = get(url, "/status/api/history", params={"chain_id": network.chain_id})
    assert history.status_code == 200 and history.headers["content-type"] == "application/json"
    body = history.json()
    assert body["start_ms"] < body["end_ms"]
    series = {s["operator_id"]: s for s in body["series"]}
    assert list(series) == OPERATORS
    assert [s["color"] for s in body["series"]] == [0, 1, 2, 3, 4]
    assert all(len(s["points"]) == 3 for s in body["series"])  # a point per scoring run
    for i in range(3):
        assert sum(s["points"][i][1] for s in body["series"]) == pytest.approx(1, abs=1e-5)
        assert series["charlie"]["points"][i][1] == 0
    assert series["alpha"]["points"][-1][1] == pytest.approx(api["alpha"]["weight"], abs=1e-6)

    assert_error(get(url, "/status/api/history", params={"chain_id": 999}), 404, "unknown_chain")
    assert_error(get(url, "/status/api/history", params={"chain_id": 0}), 422)


def test_the_operator_page_shows_its_sla_this_month(
    collector: ServerThread, network: Network, engine: Engine, settings: Settings
) -> None:
    url = collector.url
    now = feed(url, engine, settings, network)
    skip_at_month_start(now)

    bravo = html(get(url, "/status/operators/bravo"))
    assert "Bravo (lagging)" in bravo and "SLA this month" in bravo
    assert f"{now:%Y-%m}-01 00:00 UTC" in bravo  # the period starts with the month
    assert "3 down" in bravo  # three minutes fed, each lagging
    lag = bravo.split('data-target="lag"', 1)[1].split("</tr>", 1)[0]
    assert ">0%<" in lag and "≥ 99%" in lag and "at most 2 blocks" in bravo
    latency = bravo.split('data-target="latency_p95"', 1)[1].split("</tr>", 1)[0]
    assert ">30 ms<" in latency and "≤ 250 ms" in latency  # 25 ms falls in the 30 ms bucket
    assert "not enough data" in bravo  # three judged minutes of a month: no verdict
    breaches = bravo.split('<table class="breaches">', 1)[1].split("</table>", 1)[0]
    assert breaches.count("lagging") >= 1
    events = bravo.split('<table class="events">', 1)[1].split("</table>", 1)[0]
    assert "<td>lag</td>" in events and ">open<" in events  # the last minute breached its lag
    assert f'href="/v1/sla/bravo?chain_id={network.chain_id}"' in bravo
    assert network.sim.url in bravo and f"{network.sim.url}/" not in bravo

    alpha = html(get(url, "/status/operators/alpha"))
    availability = alpha.split('data-target="availability"', 1)[1].split("</tr>", 1)[0]
    assert ">100%<" in availability
    latency = alpha.split('data-target="latency_p95"', 1)[1].split("</tr>", 1)[0]
    assert ">20 ms<" in latency
    assert "No down minute this month." in alpha and "No breach event recorded." in alpha

    charlie = html(get(url, "/status/operators/charlie"))
    correctness = charlie.split('data-target="correctness"', 1)[1].split("</tr>", 1)[0]
    assert ">0%<" in correctness
    assert "incorrect" in charlie.split('<table class="breaches">', 1)[1]


def test_names_from_the_registry_are_escaped(
    collector: ServerThread, network: Network, engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    evil = '<script>alert("name")</script><img src=x onerror=alert(1)> & "co"'
    document = yaml.safe_load(network.registry_file.read_text())
    document["operators"][0]["name"] = evil
    document["chains"][0]["name"] = "<b>chain</b>"
    changed = tmp_path / "evil.yaml"
    changed.write_text(yaml.safe_dump(document, sort_keys=False))
    with session_scope(engine) as session:
        apply_registry(session, registry=load_registry(changed))
    url = collector.url
    feed(url, engine, settings, network)

    escaped = "&lt;script&gt;alert(&#34;name&#34;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;"
    for path in ("/", "/status/operators/alpha"):
        page = html(get(url, path))
        assert escaped + " &amp; &#34;co&#34;" in page, path
        assert "<script>alert" not in page and "<img" not in page and "<b>" not in page, path
        assert "&lt;b&gt;chain&lt;/b&gt;" in page, path
    # The chart's data is JSON, read by chart.js as text (textContent), never as HTML.
    history = get(url, "/status/api/history", params={"chain_id": network.chain_id})
    assert history.headers["x-content-type-options"] == "nosniff"
    assert history.json()["series"][0]["name"] == evil

    reflected = html(get(url, "/status/operators/<img src=x onerror=alert(1)>"), 404)
    assert "<img" not in reflected and "&lt;img src=x onerror=alert(1)&gt;" in reflected


def test_an_unknown_operator_gets_a_404_page_and_v1_is_unchanged(
    collector: ServerThread, network: Network
) -> None:
    url = collector.url
    page = html(get(url, "/status/operators/nobody"), 404)
    assert "There is no operator <code>nobody</code>" in page
    html(get(url, "/status/operators/" + "x" * 300), 404)
    # The API keeps its JSON errors, and the page stays out of its schema (and the fuzzer's).
    assert_error(get(url, "/v1/operators/nobody"), 404, "unknown_operator")
    assert_error(get(url, "/no/such/route"), 404, "not_found")
    assert_error(get(url, "/status/static/nothing.js"), 404, "not_found")
    paths = get(url, "/openapi.json").json()["paths"]
    assert "/v1/operators" in paths
    assert [p for p in paths if p == "/" or p.startswith("/status")] == []


def test_nothing_loads_from_anywhere_but_the_collector(
    collector: ServerThread, network: Network, engine: Engine, settings: Settings
) -> None:
    url = collector.url
    feed(url, engine, settings, network)
    pages = {
        path: html(get(url, path), status)
        for path, status in (
            ("/", 200),
            ("/status/operators/delta", 200),
            ("/status/operators/x", 404),
        )
    }
    assets = set()
    for path, page in pages.items():
        for link in page_urls(page):
            # Same origin, root-relative: nothing names another host (nor "//host").
            assert link.startswith("/") and not link.startswith("//"), (path, link)
            if link.startswith("/status/static/"):
                assets.add(link)
        for host in absolute_hosts(page):  # as text: the operators' endpoints, on loopback here
            assert host.startswith(LOOPBACK), (path, host)
    assert {a.split("?")[0] for a in assets} == {
        "/status/static/status.css",
        "/status/static/chart.js",
        "/status/static/favicon.svg",
    }
    for asset in assets:
        response = get(url, asset)
        assert response.status_code == 200, asset
        assert "max-age" in response.headers["cache-control"]
        if asset.startswith("/status/static/status.css"):
            assert "url(" not in response.text and "@import" not in response.text
        if asset.startswith("/status/static/chart.js"):
            # the SVG namespace is a name, not a request; the only request is the history's
            assert absolute_hosts(response.text, scheme_relative=False) == {"www.w3.org"}
            assert response.text.count("fetch(") == 1 and "import(" not in response.text
    assert "text/javascript" in get(url, "/status/static/chart.js").headers["content-type"]
