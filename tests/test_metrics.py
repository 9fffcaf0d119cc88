"""The collector's GET /metrics over real loopback HTTP, on SQLite and on PostgreSQL: ingest
counters by outcome and refusal code, the latency histogram of stored results, job durations,
per-endpoint gauges equal to /v1/scores, and Prometheus' naming conventions."""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from eth_account import Account
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from sqlalchemy import Engine

from monitor import __version__
from monitor.app import create_app
from monitor.ingest.schemas import ProbeResult
from monitor.metrics import INGEST_REJECTION_CODES, CollectorMetrics
from monitor.scoring.job import run_scoring
from monitor.serving import ServerThread
from monitor.settings import Settings
from monitor.signing.eip712 import sign_batch
from monitor.sla.job import run_rollups
from tests.conftest import Network, make_settings
from tests.test_api import deliver_rounds, endpoint_ids

TIMEOUT = 10.0
LATENCIES_US = {"alpha": 20_000, "bravo": 60_000, "charlie": 300_000, "delta": 1_500_000}


# --- helpers ------------------------------------------------------------------------------------


def scrape(url: str) -> dict[str, list[Sample]]:
    """Family name (as the parser names it: counters without _total) -> its samples."""
    response = httpx.get(f"{url}/metrics", timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {f.name: f.samples for f in text_string_to_metric_families(response.text)}


def value(families: dict[str, list[Sample]], sample: str, **labels: str) -> float:
    """The value of the one sample named ``sample`` whose labels include ``labels``."""
    family = sample.removesuffix("_total")
    for suffix in ("_bucket", "_count", "_sum"):
        family = family.removesuffix(suffix)
    found = [
        s
        for s in families.get(family, [])
        if s.name == sample and labels.items() <= s.labels.items()
    ]
    assert len(found) == 1, (sample, labels, found)
    return found[0].value


def by_label(families: dict[str, list[Sample]], sample: str, label: str) -> dict[str, float]:
    family = sample.removesuffix("_total")
    return {s.labels[label]: s.value for s in families.get(family, []) if s.name == sample}


def instruments(collector: ServerThread) -> CollectorMetrics:
    metrics: CollectorMetrics = collector.app.state.instruments
    return metrics


def post(url: str, body: bytes | str) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/batches",
        content=body,
        headers={"content-type": "application/json"},
        timeout=TIMEOUT,
    )


def results_for(engine: Engine, network: Network) -> list[ProbeResult]:
    """One round of the four demo operators with known latencies; echo unavailable."""
    ids = endpoint_ids(engine)
    at = time.time_ns() // 1_000_000 - 5_000
    results = [
        ProbeResult(
            endpoint_id=ids[operator_id],
            operator_id=operator_id,
            chain_id=network.chain_id,
            observed_at_ms=at,
            ok=True,
            error=None,
            latency_us=latency_us,
            head=100,
            reference_head=100,
            lag_blocks=0,
            lag_ms=0,
            check_height=97,
            block_hash="0x" + "aa" * 32,
            correct=True,
        )
        for operator_id, latency_us in LATENCIES_US.items()
    ]
    results.append(
        ProbeResult(
            endpoint_id=ids["echo"],
            operator_id="echo",
            chain_id=network.chain_id,
            observed_at_ms=at,
            ok=False,
            error="timeout",
            latency_us=None,
            head=None,
            reference_head=100,
            lag_blocks=None,
            lag_ms=None,
            check_height=97,
            block_hash=None,
            correct=None,
        )
    )
    return results


# --- ingest -------------------------------------------------------------------------------------


def test_ingest_counters_by_outcome_and_code(
    collector: ServerThread, network: Network, engine: Engine
) -> None:
    url = collector.url
    before = scrape(url)
    assert by_label(before, "monitor_ingest_batches_total", "outcome") == {
        "accepted": 0,
        "duplicate": 0,
    }
    rejected = by_label(before, "monitor_ingest_rejected_total", "code")
    assert set(rejected) == {*INGEST_REJECTION_CODES, "other"}
    assert set(rejected.values()) == {0}

    results = results_for(engine, network)
    accepted = sign_batch(network.probes[0], results).model_dump_json()
    assert post(url, accepted).json()["duplicate"] is False
    assert post(url, accepted).json()["duplicate"] is True  # an exact resend
    second = sign_batch(network.probes[1], results[:2]).model_dump_json()
    assert post(url, second).status_code == 200

    forged = sign_batch(network.probes[0], results)
    forged.message.probe = network.probes[1].address  # signed by 0, claims to be 1
    assert post(url, forged.model_dump_json()).json()["error"]["code"] == "bad_signature"
    stranger = sign_batch(Account.create(), results).model_dump_json()
    assert post(url, stranger).json()["error"]["code"] == "unknown_probe"
    assert post(url, b"{not json").json()["error"]["code"] == "malformed_batch"
    assert post(url, b"[]").json()["error"]["code"] == "malformed_batch"

    after = scrape(url)
    assert by_label(after, "monitor_ingest_batches_total", "outcome") == {
        "accepted": 2,
        "duplicate": 1,
    }
    assert value(after, "monitor_ingest_results_total") == len(results) + 2
    refused = by_label(after, "monitor_ingest_rejected_total", "code")
    assert {c: n for c, n in refused.items() if n} == {
        "bad_signature": 1,
        "unknown_probe": 1,
        "malformed_batch": 2,
    }
    assert value(after, "monitor_ingest_duration_seconds_count") == 7  # every request

    # The histogram: each stored result with a latency (not echo's timeout, not the duplicate's,
    # not the refused batches'), per chain and operator, in seconds.
    chain = str(network.chain_id)
    observed = {"alpha": 2, "bravo": 2, "charlie": 1, "delta": 1}
    for operator_id, count in observed.items():
        labels = {"chain_id": chain, "operator": operator_id}
        assert value(after, "monitor_endpoint_latency_seconds_count", **labels) == count
        assert value(after, "monitor_endpoint_latency_seconds_sum", **labels) == pytest.approx(
            count * LATENCIES_US[operator_id] / 1e6
        )
    assert "echo" not in {
        s.labels["operator"]
        for s in after["monitor_endpoint_latency_seconds"]
        if s.name.endswith("_count")
    }
    # 20 ms is within the 25 ms bucket, 60 ms is not; 1.5 s within 2.5 s, not within 1 s.
    alpha = {"chain_id": chain, "operator": "alpha"}
    assert value(after, "monitor_endpoint_latency_seconds_bucket", **alpha, le="0.025") == 2
    assert value(after, "monitor_endpoint_latency_seconds_bucket", **alpha, le="0.01") == 0
    delta = {"chain_id": chain, "operator": "delta"}
    assert value(after, "monitor_endpoint_latency_seconds_bucket", **delta, le="1.0") == 0
    assert value(after, "monitor_endpoint_latency_seconds_bucket", **delta, le="2.5") == 1

    # Each probe's newest batch, read from the database at scrape time: recent for the two that
    # sent one, absent for the one that never did.
    ages = by_label(after, "monitor_probe_last_batch_age_seconds", "probe")
    assert set(ages) == {network.probes[0].address, network.probes[1].address}
    assert all(0 <= age < 60 for age in ages.values()), ages


# --- scoring and jobs ---------------------------------------------------------------------------


def test_endpoint_gauges_equal_the_scores(
    collector: ServerThread, network: Network, engine: Engine, settings: Settings
) -> None:
    url = collector.url
    jobs = instruments(collector).jobs
    deliver_rounds(url, engine, network)
    families = scrape(url)
    assert "monitor_endpoint_score" not in families or not families["monitor_endpoint_score"]
    assert value(families, "monitor_scoring_duration_seconds_count") == 0

    run_scoring(engine, settings, metrics=jobs)
    assert run_rollups(engine, settings, metrics=jobs) == len(network.probes)
    families = scrape(url)
    assert value(families, "monitor_scoring_duration_seconds_count") == 1
    assert value(families, "monitor_scoring_duration_seconds_sum") > 0
    assert value(families, "monitor_rollup_duration_seconds_count") == 1
    assert value(families, "monitor_rollup_batches_total") == len(network.probes)
    assert by_label(families, "monitor_webhook_deliveries_total", "outcome") == {
        "delivered": 0,
        "failed": 0,
    }
    assert value(families, "monitor_database_up") == 1
    assert value(families, "monitor_build_info", version=__version__) == 1

    body = httpx.get(
        f"{url}/v1/scores", params={"chain_id": network.chain_id}, timeout=TIMEOUT
    ).json()
    chain = str(network.chain_id)
    as_of = datetime.fromisoformat(body["as_of"]).timestamp()
    run_time = value(families, "monitor_scoring_run_timestamp_seconds", chain_id=chain)
    assert run_time == pytest.approx(as_of, abs=1e-3)
    gauges = {
        "monitor_endpoint_availability": ("availability", 1.0),
        "monitor_endpoint_correctness": ("correctness", 1.0),
        "monitor_endpoint_lag_blocks": ("lag_blocks", 1.0),
        "monitor_endpoint_lag_seconds": ("lag_seconds", 1.0),
        "monitor_endpoint_latency_p50_seconds": ("latency_p50_ms", 1e-3),
        "monitor_endpoint_latency_p95_seconds": ("latency_p95_ms", 1e-3),
        "monitor_endpoint_score": ("score", 1.0),
        "monitor_endpoint_weight": ("weight", 1.0),
    }
    reasons = defaultdict(set)
    for s in families["monitor_endpoint_exclusion_reason"]:
        reasons[s.labels["operator"]].add(s.labels["reason"])
    assert len(body["scores"]) == 5
    for score in body["scores"]:
        labels = {
            "chain_id": chain,
            "operator": score["operator_id"],
            "endpoint_id": str(score["endpoint_id"]),
        }
        for name, (field, scale) in gauges.items():
            if score[field] is None:  # no figure: no sample
                assert not [s for s in families[name] if s.labels == labels], (name, labels)
            else:
                assert value(families, name, **labels) == pytest.approx(score[field] * scale)
        excluded = score["status"] == "excluded"
        assert value(families, "monitor_endpoint_excluded", **labels) == float(excluded)
        expected = {"incorrect"} if score["operator_id"] == "charlie" else set()
        if score["operator_id"] == "echo":
            expected = {"insufficient_probes", "insufficient_samples"}
        assert reasons[score["operator_id"]] == expected
        assert expected <= set(score["reasons"])
    probes = by_label(families, "monitor_probe_outlier_score", "probe")
    assert probes == {a.address: 0.0 for a in network.probes}


# --- conventions --------------------------------------------------------------------------------


def test_exposition_follows_prometheus_conventions(
    collector: ServerThread, network: Network, engine: Engine, settings: Settings
) -> None:
    deliver_rounds(collector.url, engine, network)
    run_scoring(engine, settings, metrics=instruments(collector).jobs)
    response = httpx.get(f"{collector.url}/metrics", timeout=TIMEOUT)
    families = list(text_string_to_metric_families(response.text))
    names = {f.name for f in families}
    for family in families:
        assert family.name.startswith("monitor_"), family.name
        assert family.documentation, family.name
        assert "_ms" not in family.name and "milli" not in family.name, family.name
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples), family
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), family.name
    expected = {
        "monitor_endpoint_lag_blocks",
        "monitor_endpoint_lag_seconds",
        "monitor_endpoint_latency_p50_seconds",
        "monitor_endpoint_latency_p95_seconds",
        "monitor_endpoint_availability",
        "monitor_endpoint_correctness",
        "monitor_endpoint_score",
        "monitor_endpoint_weight",
        "monitor_endpoint_excluded",
        "monitor_endpoint_latency_seconds",
        "monitor_ingest_batches",
        "monitor_ingest_results",
        "monitor_ingest_rejected",
        "monitor_ingest_duration_seconds",
        "monitor_scoring_duration_seconds",
        "monitor_rollup_duration_seconds",
        "monitor_rollup_batches",
        "monitor_webhook_deliveries",
        "monitor_probe_outlier_score",
        "monitor_probe_last_batch_age_seconds",
        "monitor_build_info",
    }
    assert expected <= names, expected - names
    types = {f.name: f.type for f in families}
    for counter in ("monitor_ingest_batches", "monitor_ingest_rejected", "monitor_rollup_batches"):
        assert types[counter] == "counter"
    assert types["monitor_endpoint_latency_seconds"] == "histogram"

    # Labels bounded by the registry: endpoint series are the five registered endpoints.
    endpoints = {
        s.labels["endpoint_id"]
        for f in families
        if f.name.startswith("monitor_endpoint_")
        and f.type == "gauge"
        and not f.name.endswith("_created")
        for s in f.samples
    }
    assert endpoints == {str(i) for i in endpoint_ids(engine).values()}


def test_two_apps_keep_their_own_registries(database_url: str) -> None:
    settings = make_settings(database_url)
    first = create_app(settings, scoring=False)
    second = create_app(settings, scoring=False)
    try:
        assert isinstance(first.state.metrics, CollectorRegistry)
        assert first.state.metrics is not second.state.metrics
        first.state.instruments.ingest.refused("bad_signature")
        first.state.instruments.ingest.refused("no_such_code")  # bounded: counted as "other"
        get = first.state.metrics.get_sample_value
        assert get("monitor_ingest_rejected_total", {"code": "bad_signature"}) == 1
        assert get("monitor_ingest_rejected_total", {"code": "other"}) == 1
        assert get("monitor_ingest_rejected_total", {"code": "no_such_code"}) is None
        assert (
            second.state.metrics.get_sample_value(
                "monitor_ingest_rejected_total", {"code": "bad_signature"}
            )
            == 0
        )
    finally:
        first.state.engine.dispose()
        second.state.engine.dispose()


def test_database_down_still_serves_the_counters(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'no-such-directory' / 'monitor.db'}"
    app = create_app(make_settings(url), scoring=False)
    try:
        with ServerThread(app, name="collector-no-db", lifespan="on") as server:
            body = sign_batch(Account.create(), []).model_dump_json()
            assert post(server.url, body).status_code == 503
            families = scrape(server.url)
    finally:
        app.state.engine.dispose()
    assert value(families, "monitor_database_up") == 0
    assert value(families, "monitor_ingest_rejected_total", code="database_unavailable") == 1
    assert "monitor_endpoint_weight" not in families
