"""The scoring job across runs on a real database (SQLite and PostgreSQL): hysteresis and the
recovery ramp read the previous stored run, ``status_since`` survives between runs, and the
probe outlier rows are stored and served whatever probe_outliers returns."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, func, select

from monitor.db.models import Probe, ProbeScore
from monitor.db.session import session_scope
from monitor.ingest.schemas import ProbeResult
from monitor.scoring import service
from monitor.scoring.aggregate import EndpointStats, ProbeStats
from monitor.scoring.job import run_scoring
from monitor.scoring.outliers import ProbeOutlier
from monitor.scoring.policy import ChainTargets
from monitor.serving import ServerThread
from monitor.settings import Settings
from monitor.signing.eip712 import sign_batch
from tests.conftest import Network
from tests.test_api import endpoint_ids

ROUND_S = 10


def deliver(
    url: str, engine: Engine, network: Network, *, start: datetime, rounds: Iterable[bool]
) -> None:
    """One round every 10 s from ``start``, from every probe: bravo always healthy, alpha
    answering in the rounds marked True and timing out in the others."""
    ids = endpoint_ids(engine)
    t0 = int(start.timestamp() * 1000)
    plan = list(rounds)
    for account in network.probes:
        results = []
        for i, alpha_ok in enumerate(plan):
            at, head = t0 + i * ROUND_S * 1000, 5_000 + i
            for op, ok in (("alpha", alpha_ok), ("bravo", True)):
                results.append(
                    ProbeResult(
                        endpoint_id=ids[op],
                        operator_id=op,
                        chain_id=network.chain_id,
                        observed_at_ms=at,
                        ok=ok,
                        error=None if ok else "timeout",
                        latency_us=20_000 if ok else None,
                        head=head,
                        reference_head=head,
                        lag_blocks=0 if ok else None,
                        lag_ms=0 if ok else None,
                        check_height=head - 3,
                        block_hash="0x" + "aa" * 32,
                        correct=True if ok else None,
                    )
                )
        response = httpx.post(
            f"{url}/v1/batches",
            content=sign_batch(account, results).model_dump_json(),
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 200, response.text


def run(
    url: str, engine: Engine, settings: Settings, network: Network, as_of: datetime
) -> dict[str, dict[str, Any]]:
    run_scoring(engine, settings, as_of=as_of)
    body = httpx.get(f"{url}/v1/scores", params={"chain_id": network.chain_id}).json()
    return {s["operator_id"]: s for s in body["scores"]}


def unramped(entry: Mapping[str, Any]) -> float:
    """The score before the recovery ramp: the product of the explained factors."""
    return math.prod(f["sub_score"] ** f["weight"] for f in entry["factors"].values())


def since(entry: Mapping[str, Any]) -> datetime:
    return datetime.fromisoformat(entry["status_since"]).astimezone(UTC)


def test_hysteresis_then_recovery_ramp_across_stored_runs(
    collector: ServerThread, network: Network, engine: Engine, settings: Settings
) -> None:
    """alpha times out for 10 rounds, then answers every round (5-minute window, 3 probes).
    Availability over the window climbs back past 0.5 (held: not by the margin), past 0.6
    (recovering, ramp from 0), and its weight is full recovery_s = 60 s later."""
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=280)
    deliver(collector.url, engine, network, start=base, rounds=[False] * 10 + [True] * 18)

    def at(offset_s: float) -> dict[str, dict[str, Any]]:
        return run(collector.url, engine, settings, network, base + timedelta(seconds=offset_s))

    first = at(95)  # 0 of 10 answered
    alpha = first["alpha"]
    assert (alpha["status"], alpha["score"], alpha["weight"]) == ("excluded", 0.0, 0.0)
    assert alpha["reasons"] == ["unavailable", "timeout"]
    excluded_since = since(alpha)
    assert excluded_since == base + timedelta(seconds=95)
    assert first["bravo"]["weight"] == 1.0

    held = at(205)["alpha"]  # 11 of 21 = 0.52: above 0.5, not by the 0.1 margin
    assert held["availability"] == pytest.approx(11 / 21)
    assert (held["status"], held["score"], held["weight"]) == ("excluded", 0.0, 0.0)
    assert held["reasons"][0] == "recovering" and "unavailable" not in held["reasons"]
    assert since(held) == excluded_since  # the same exclusion, read from the stored run

    cleared = at(255)["alpha"]  # 16 of 26 = 0.615 >= 0.6: back, ramp starts at 0
    assert (cleared["status"], cleared["score"], cleared["weight"]) == ("recovering", 0.0, 0.0)
    assert cleared["reasons"][0] == "recovering"
    assert since(cleared) == base + timedelta(seconds=255)

    ramping = at(270)["alpha"]  # 15 s of recovery_s = 60: a quarter of its score
    assert ramping["status"] == "recovering" and since(ramping) == since(cleared)
    assert ramping["score"] == pytest.approx(0.25 * unramped(ramping))
    assert 0 < ramping["weight"] < 0.25

    back = at(255 + 60)["alpha"]  # the ramp is over (newest data 45 s old: still fresh)
    assert (back["status"], back["reasons"]) == ("ok", ["timeout"])
    assert back["score"] == pytest.approx(unramped(back))
    assert since(back) == base + timedelta(seconds=315)


def test_one_round_of_timeouts_from_every_probe_costs_the_documented_share(
    collector: ServerThread, network: Network, engine: Engine, settings: Settings
) -> None:
    """30 rounds in the window, every probe times out on alpha in one: availability 29/30, its
    score x (29/30)^8 = 0.76, not excluded; its weight against an equal peer 0.5 -> 0.43."""
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=295)
    deliver(collector.url, engine, network, start=base, rounds=[True] * 15 + [False] + [True] * 14)
    scores = run(collector.url, engine, settings, network, base + timedelta(seconds=300))
    alpha, bravo = scores["alpha"], scores["bravo"]
    assert alpha["status"] == "ok" and alpha["availability"] == pytest.approx(29 / 30)
    assert alpha["score"] / bravo["score"] == pytest.approx((29 / 30) ** 8)
    ratio = (29 / 30) ** 8
    assert alpha["weight"] == pytest.approx(ratio / (1 + ratio))  # 0.433
    # Explained: the availability factor's share of what alpha lost (the rest: latency).
    lost = {name: math.log(f["sub_score"]) * f["weight"] for name, f in alpha["factors"].items()}
    assert lost["availability"] == pytest.approx(8 * math.log(29 / 30))
    share = alpha["factors"]["availability"]["share"]
    assert share == pytest.approx(lost["availability"] / sum(lost.values()))
    assert bravo["factors"]["availability"]["share"] == 0.0


def test_probe_outlier_rows_are_stored_and_served(
    collector: ServerThread,
    network: Network,
    engine: Engine,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whatever probe_outliers answers is stored per probe and run and served as it is; the
    job hands it every probe's stats per endpoint and the consensus."""
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=60)
    deliver(collector.url, engine, network, start=base, rounds=[True] * 3)
    with session_scope(engine) as session:
        probe_ids = {
            address: pid for pid, address in session.execute(select(Probe.id, Probe.address))
        }
    first, second, third = (probe_ids[a.address] for a in network.probes)
    ids = endpoint_ids(engine)
    seen: list[tuple[Mapping[int, Mapping[int, ProbeStats]], Mapping[int, EndpointStats]]] = []

    def fake(
        per_endpoint: Mapping[int, Mapping[int, ProbeStats]],
        consensus: Mapping[int, EndpointStats],
        targets: ChainTargets,
    ) -> dict[int, ProbeOutlier]:
        seen.append((per_endpoint, consensus))
        return {
            first: ProbeOutlier(first, 2, 1, {"latency": 1}),
            second: ProbeOutlier(second, 0, 0, {}),  # judged nothing: score None
        }

    monkeypatch.setattr(service, "probe_outliers", fake)
    run_scoring(engine, settings, as_of=base + timedelta(seconds=30))
    per_endpoint, consensus = seen[0]  # first window's call
    assert set(per_endpoint[ids["alpha"]]) == {first, second, third}  # probe ids kept
    assert per_endpoint[ids["alpha"]][first].samples == 3
    assert consensus[ids["alpha"]].probes == 3

    body = httpx.get(f"{collector.url}/v1/probes", params={"chain_id": network.chain_id}).json()
    by_address = {p["address"]: p for p in body["probes"]}
    assert set(by_address) == {network.probes[0].address, network.probes[1].address}
    one = by_address[network.probes[0].address]
    assert one == {
        "address": network.probes[0].address,
        "name": "probe-0",
        "region": "region-0",
        "endpoints": 2,
        "disagreements": 1,
        "kinds": {"latency": 1},
        "outlier_score": 0.5,
    }
    assert by_address[network.probes[1].address]["outlier_score"] is None
    window = settings.windows[1]
    other = httpx.get(
        f"{collector.url}/v1/probes", params={"chain_id": network.chain_id, "window": window}
    )
    assert other.status_code == 200 and other.json()["window"] == window

    # Rows go with their run: one per probe per run and window, deleted with old runs.
    with session_scope(engine) as session:
        assert session.scalar(select(func.count()).select_from(ProbeScore)) == 2 * len(
            settings.windows
        )
    run_scoring(engine, settings, as_of=base + timedelta(days=2))
    with session_scope(engine) as session:
        assert session.scalar(select(func.count()).select_from(ProbeScore)) == 2 * len(
            settings.windows
        )
