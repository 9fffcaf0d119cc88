"""The scoring job against a real database: a lying probe is outvoted and surfaced, data that
stops coming decays to stale_data, and statuses keep their "since" across runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import Engine

from monitor.ingest.schemas import ProbeResult
from monitor.scoring.job import run_scoring
from monitor.serving import ServerThread
from monitor.settings import Settings
from monitor.signing.eip712 import sign_batch
from tests.conftest import Network
from tests.test_api import endpoint_ids, now_ms

OPERATORS = ("alpha", "bravo", "delta")


def deliver(url: str, engine: Engine, network: Network, *, at_ms: int, liar: bool) -> None:
    """Three rounds from every probe: everything healthy, except that the last probe, if
    ``liar``, reports every endpoint down."""
    ids = endpoint_ids(engine)
    for n, account in enumerate(network.probes):
        lying = liar and n == len(network.probes) - 1
        results = [
            ProbeResult(
                endpoint_id=ids[op],
                operator_id=op,
                chain_id=network.chain_id,
                observed_at_ms=at_ms + i * 1_000,
                ok=not lying,
                error="timeout" if lying else None,
                latency_us=None if lying else 20_000,
                head=5_000 + i,
                reference_head=5_000 + i,
                lag_blocks=None if lying else 0,
                lag_ms=None if lying else 0,
                check_height=5_000 + i - 3,
                block_hash="0x" + "aa" * 32,
                correct=None if lying else True,
            )
            for i in range(3)
            for op in OPERATORS
        ]
        body = sign_batch(account, results).model_dump_json()
        response = httpx.post(
            f"{url}/v1/batches", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 200, response.text


def scores(url: str, network: Network) -> dict[str, dict[str, object]]:
    body = httpx.get(f"{url}/v1/scores", params={"chain_id": network.chain_id}).json()
    return {s["operator_id"]: s for s in body["scores"] if s["operator_id"] in OPERATORS}


def test_a_lying_probe_is_outvoted_and_surfaced(
    collector: ServerThread, network: Network, engine: Engine, settings: Settings
) -> None:
    deliver(collector.url, engine, network, at_ms=now_ms() - 10_000, liar=True)
    run_scoring(engine, settings)
    by_op = scores(collector.url, network)
    for op in OPERATORS:  # two honest probes of three: the median is theirs
        assert by_op[op]["status"] == "ok" and by_op[op]["availability"] == 1.0, by_op[op]
    probes = httpx.get(f"{collector.url}/v1/probes", params={"chain_id": network.chain_id}).json()[
        "probes"
    ]
    outlier = {p["address"]: p["outlier_score"] for p in probes}
    liar = network.probes[-1].address
    assert outlier[liar] == 1.0
    assert all(score == 0.0 for address, score in outlier.items() if address != liar)
    assert next(p for p in probes if p["address"] == liar)["kinds"] == {"availability": 3}

    # The same in Prometheus' format, for alerting.
    metrics = httpx.get(f"{collector.url}/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    line = f'monitor_probe_outlier_score{{chain_id="{network.chain_id}",probe="{liar}"}} 1.0'
    assert line in metrics.text.splitlines()
    assert "monitor_endpoint_weight{" in metrics.text


def test_data_that_stops_coming_decays_then_is_stale(
    collector: ServerThread, network: Network, engine: Engine, settings: Settings
) -> None:
    observed = datetime.now(UTC) - timedelta(seconds=5)
    deliver(collector.url, engine, network, at_ms=int(observed.timestamp() * 1000), liar=False)
    newest = observed + timedelta(seconds=2)

    def at(age_s: float) -> dict[str, dict[str, object]]:
        run_scoring(engine, settings, as_of=newest + timedelta(seconds=age_s))
        return scores(collector.url, network)

    fresh = at(10)
    assert all(s["status"] == "ok" for s in fresh.values())
    since = fresh["alpha"]["status_since"]
    assert at(30)["alpha"]["status_since"] == since  # still ok, since the same moment
    decaying = at(90)["alpha"]  # stale_after_s = 60: half way to nothing
    factors = decaying["factors"]
    assert isinstance(factors, dict)
    assert factors["freshness"]["sub_score"] == pytest.approx(0.5, abs=0.02)
    stale = at(125)["alpha"]
    assert (stale["status"], stale["score"], stale["reasons"]) == (
        "excluded",
        None,
        ["stale_data"],
    )
    weights = httpx.get(f"{collector.url}/v1/weights", params={"chain_id": network.chain_id}).json()
    assert weights["total_bps"] == 0  # routers must fall back: nobody has fresh data
