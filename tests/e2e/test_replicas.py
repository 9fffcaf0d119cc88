"""Two collector replicas (``monitor serve`` processes) on one PostgreSQL, as behind a load
balancer: each interval's scoring run is made by one of them, both answer /v1/weights the same,
and a batch posted to either is stored once (docs/scaling.md)."""

from __future__ import annotations

import itertools
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from sqlalchemy import func, select

from monitor import simnet
from monitor.db.models import Batch, Endpoint, ScoringRun
from monitor.db.session import make_engine, session_scope
from monitor.demo import free_port
from monitor.registry.apply import apply_registry
from monitor.registry.schema import load_registry
from monitor.signing.keys import generate_key
from tests.e2e.test_processes import Processes, responds, wait_for
from tests.ingest.support import signed_body

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

INTERVAL_S = 1.0
RUN_S = 6.0
STARTUP_TIMEOUT_S = 30.0


def post(api: str, body: bytes) -> dict[str, Any]:
    response = httpx.post(
        f"{api}/v1/batches",
        content=body,
        headers={"content-type": "application/json"},
        timeout=10,
        trust_env=False,
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def weights(api: str) -> dict[str, Any]:
    response = httpx.get(
        f"{api}/v1/weights",
        params={"chain_id": simnet.DEMO_CHAIN_ID},
        timeout=10,
        trust_env=False,
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_two_replicas_score_once_per_interval_and_store_each_batch_once(
    pg_url: str, procs: Processes, tmp_path: Path
) -> None:
    probes = [Account.create() for _ in range(3)]
    registry = tmp_path / "registry.yaml"
    simnet.write_registry(
        registry,
        simnet.DEMO_OPERATORS,
        simnet.demo_chains(),
        url_base="http://127.0.0.1:9",  # never called: the test posts the probes' batches
        probes=[
            {"address": p.address, "name": f"probe-{i}", "region": f"region-{i}"}
            for i, p in enumerate(probes)
        ],
    )
    engine = make_engine(pg_url)
    try:
        with session_scope(engine) as session:
            apply_registry(session, registry=load_registry(registry))
        with session_scope(engine) as session:
            endpoints = [
                (e.id, e.operator_id, e.chain_id)
                for e in session.scalars(select(Endpoint).order_by(Endpoint.id))
            ]
        key = tmp_path / "collector.key"
        generate_key(key)  # one identity for the service, shared by its replicas
        procs.env.update(
            {
                "MONITOR_DATABASE_URL": pg_url,
                "MONITOR_SERVICE_KEY_FILE": str(key),
                "MONITOR_SCORING_INTERVAL_S": str(INTERVAL_S),
                "MONITOR_SCORING_SETTLE_S": "0",  # runs as of the tick's own slot
                "MONITOR_ROLLUP_INTERVAL_S": str(INTERVAL_S),
                "MONITOR_WINDOWS": '["5m"]',
            }
        )
        apis = []
        for name in ("replica-a", "replica-b"):
            port = free_port()
            procs.start(name, "serve", "--host", "127.0.0.1", "--port", str(port))
            apis.append(f"http://127.0.0.1:{port}")
        for api in apis:
            wait_for(f"{api}", lambda a=api: responds(f"{a}/healthz"), procs, STARTUP_TIMEOUT_S)

        # Batches alternate between the replicas (a load balancer's round robin); each one is
        # also posted again to the other replica, as a probe retrying through the balancer.
        started = time.time()
        posted: list[str] = []
        for i in itertools.count():
            if time.time() - started > RUN_S:
                break
            procs.check_alive()
            for j, probe in enumerate(probes):
                body = signed_body(probe, endpoints, ago_s=0.5)
                first, second = apis[(i + j) % 2], apis[(i + j + 1) % 2]
                ack = post(first, body)
                assert ack["duplicate"] is False, ack
                again = post(second, body)
                assert again["duplicate"] is True, again
                posted.append(ack["batch_id"])
            time.sleep(0.25)
        ended = time.time()

        # /v1/weights: the same answer (run, weights, signature) from both. Runs keep landing
        # every second, and each replica may serve its answer of the previous run for up to
        # MONITOR_ANSWERS_TTL_S (1 s): retry until both serve the same run.
        deadline = time.monotonic() + 10
        while True:
            a, b = weights(apis[0]), weights(apis[1])
            if a["as_of"] == b["as_of"] or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert a == b
        assert {w["operator_id"] for w in a["weights"]} == {
            o.operator_id for o in simnet.DEMO_OPERATORS
        }

        with session_scope(engine) as session:
            stored = session.scalars(select(Batch.batch_id)).all()
            runs = session.execute(
                select(ScoringRun.chain_id, ScoringRun.window_s, ScoringRun.as_of)
            ).all()
            runs_total = session.scalar(select(func.count()).select_from(ScoringRun))
    finally:
        engine.dispose()
    for proc in [p for _, p in procs.children]:
        procs.stop(proc)

    assert sorted(stored) == sorted(posted), "a batch is missing or stored twice"
    assert len(set(stored)) == len(stored)
    # One run per chain, window and interval slot (slots counted from the epoch, as the job
    # does), never two: both replicas ticked every second.
    per_slot = Counter((c, w, int(t.timestamp() // INTERVAL_S)) for c, w, t in runs)
    assert per_slot and max(per_slot.values()) == 1, per_slot
    assert runs_total == len(runs)
    during = [t for _, _, t in runs if started <= t.timestamp() <= ended]
    expected = (ended - started) / INTERVAL_S
    # about one per interval; the lower bound leaves room for ticks a loaded machine delays
    assert max(2.0, 0.4 * expected) <= len(during) <= expected + 1, (len(during), expected)
