"""Run by many (issue 8), for real: three collectors (``monitor serve`` processes, each with its
own key and database: SQLite, PostgreSQL, SQLite) that sync from each other, three probes
(``monitor probe`` processes) on the simulated network, one of which can reach only the first
collector. One collector is stopped and restarted and catches up; every batch ends up in all
three; all three then sign the very same weights; a collector that lies about them is outvoted
by the client, and one whose registry differs is reported."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from eth_account.signers.local import LocalAccount
from sqlalchemy import select

from monitor import simnet
from monitor.client import CombinedWeights, QuorumNotReached, fetch_weights
from monitor.db.models import Batch, Probe
from monitor.db.session import make_engine, session_scope
from monitor.demo import free_port
from monitor.registry.apply import apply_registry
from monitor.registry.schema import load_registry
from monitor.signing.collector import sign_typed, weights_typed_data
from monitor.signing.keys import generate_key, load_key
from tests.e2e.test_processes import Processes, responds, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

INTERVAL_S = 1.0
STARTUP_TIMEOUT_S = 30.0
CONVERGE_TIMEOUT_S = 45.0


@pytest.fixture
def network() -> Iterator[tuple[simnet.SimnetServer, dict[int, simnet.SimChain]]]:
    chains = simnet.demo_chains()
    sim = simnet.SimnetServer(simnet.DEMO_OPERATORS, chains)
    sim.start()
    try:
        yield sim, chains
    finally:
        sim.stop()


def _hashes(url: str) -> dict[str, str]:
    """body hash -> the probe's address, of every batch the collector's database holds."""
    engine = make_engine(url)
    try:
        with session_scope(engine) as session:
            rows = session.execute(
                select(Batch.body_hash, Probe.address).join(Probe, Probe.id == Batch.probe_id)
            ).all()
    finally:
        engine.dispose()
    return {h: address for h, address in rows}


def _combine(apis: list[str], pins: list[str], **kwargs: Any) -> CombinedWeights:
    return asyncio.run(
        fetch_weights(apis, chain_id=simnet.DEMO_CHAIN_ID, signers=pins, timeout_s=5, **kwargs)
    )


class _Liar:
    """A registered collector gone bad: serves an honest collector's weights with all the
    traffic moved to the forked operator, signed with its own (pinned) key."""

    def __init__(self, honest: str, key: LocalAccount) -> None:
        liar = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                upstream = httpx.get(f"{honest}{self.path}", timeout=5, trust_env=False)
                body = upstream.json()
                if self.path.startswith("/v1/weights"):
                    body = liar.forge(body)
                data = json.dumps(body).encode()
                self.send_response(upstream.status_code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.key = key
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def forge(self, body: dict[str, Any]) -> dict[str, Any]:
        entries = body["weights"]
        for entry in entries:
            forked = entry["operator_id"] == "charlie"
            entry["weight_bps"] = 10_000 if forked else 0
            entry["weight"] = 1.0 if forked else 0.0
        typed = weights_typed_data(
            chain_id=body["chain_id"],
            window=body["window"],
            as_of_ms=body["as_of_ms"],
            weights=[(e["endpoint_id"], e["operator_id"], e["weight_bps"]) for e in entries],
        )
        return {**body, "signer": self.key.address, "signature": sign_typed(self.key, typed)}

    def __enter__(self) -> _Liar:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def test_three_collectors_converge_and_routers_outvote_a_liar(
    procs: Processes,
    pg_url: str,
    sqlite_template: Path,
    network: tuple[simnet.SimnetServer, dict[int, simnet.SimChain]],
    tmp_path: Path,
) -> None:
    sim, chains = network
    probe_keys = [tmp_path / f"probe-{i}.key" for i in range(3)]
    probe_addresses = [generate_key(k) for k in probe_keys]
    collector_keys = [tmp_path / f"collector-{n}.key" for n in "abc"]
    for k in collector_keys:
        generate_key(k)
    collectors = [load_key(k) for k in collector_keys]
    registry = tmp_path / "registry.yaml"
    simnet.write_registry(
        registry,
        simnet.DEMO_OPERATORS,
        chains,
        url_base=sim.url,
        probes=[
            {"address": a, "name": f"probe-{i}", "region": f"region-{i}"}
            for i, a in enumerate(probe_addresses)
        ],
    )
    document = yaml.safe_load(registry.read_text())
    document["collectors"] = [
        {"address": c.address, "name": f"collector-{n}"}
        for c, n in zip(collectors, "abc", strict=True)
    ]
    registry.write_text(yaml.safe_dump(document, sort_keys=False))

    urls = [f"sqlite:///{tmp_path / 'a.db'}", pg_url, f"sqlite:///{tmp_path / 'c.db'}"]
    for path in (tmp_path / "a.db", tmp_path / "c.db"):
        path.write_bytes(sqlite_template.read_bytes())
    for url in urls:
        engine = make_engine(url)
        try:
            with session_scope(engine) as session:
                apply_registry(session, registry=load_registry(registry))
        finally:
            engine.dispose()

    ports = [free_port() for _ in urls]
    apis = [f"http://127.0.0.1:{p}" for p in ports]
    base_env = dict(procs.env)

    def start_collector(i: int) -> None:
        procs.env = {
            **base_env,
            "MONITOR_DATABASE_URL": urls[i],
            "MONITOR_SERVICE_KEY_FILE": str(collector_keys[i]),
            "MONITOR_SCORING_INTERVAL_S": "1",
            "MONITOR_SCORING_SETTLE_S": str(INTERVAL_S),
            "MONITOR_SCORING_REPLAY_S": "120",
            "MONITOR_ROLLUP_INTERVAL_S": "5",
            "MONITOR_WINDOWS": '["5m"]',
            "MONITOR_ANSWERS_TTL_S": "0",
            "MONITOR_ATTEST_DAILY": "false",
            "MONITOR_PEERS": json.dumps([a for j, a in enumerate(apis) if j != i]),
            "MONITOR_SYNC_INTERVAL_S": "1",
            "MONITOR_BATCHES_SETTLE_S": "0.5",
        }
        procs.start(f"collector-{'abc'[i]}", "serve", "--port", str(ports[i]))
        wait_for(f"collector {i}", lambda: responds(f"{apis[i]}/healthz"), procs, STARTUP_TIMEOUT_S)

    for i in range(3):
        start_collector(i)
    procs.env = dict(base_env)
    everywhere = [arg for api in apis for arg in ("--collector", api)]
    for i, key in enumerate(probe_keys):
        # probe-2 reaches only collector a: b and c get its batches from their peers alone
        reach = everywhere if i < 2 else ["--collector", apis[0]]
        procs.start(f"probe-{i}", "probe", *reach, "--key", str(key), "--interval", str(INTERVAL_S))

    # 1. All up for a while; then c is stopped for a while and started again on its database.
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        procs.check_alive()
        time.sleep(0.5)
    collector_c = next(p for name, p in procs.children if name == "collector-c")
    assert procs.stop(collector_c) is not None
    time.sleep(5)
    start_collector(2)
    time.sleep(3)
    for name, proc in list(procs.children):
        if name.startswith("probe-"):
            procs.stop(proc)

    # 2. Every batch ends up in all three, probe-2's included.
    def converged() -> dict[str, str] | None:
        held = [_hashes(url) for url in urls]
        return held[0] if held[0] and held[0] == held[1] == held[2] else None

    held = wait_for("the same batches everywhere", converged, procs, CONVERGE_TIMEOUT_S, step=1)
    by_probe = {a: sum(1 for p in held.values() if p == a) for a in probe_addresses}
    assert all(n >= 5 for n in by_probe.values()), by_probe

    # 3. The same data, the same evaluation times: all three sign the very same weights.
    pins: list[str] = [c.address for c in collectors]

    def unanimous() -> CombinedWeights | None:
        try:
            result = _combine(apis, pins, quorum=3)
        except QuorumNotReached:  # not yet: a collector a bucket behind
            return None
        return result if result.unanimous and result.counted == 3 else None

    agreed = wait_for("identical signed weights", unanimous, procs, CONVERGE_TIMEOUT_S, step=1)
    honest = {w.operator_id: w.weight_bps for w in agreed.weights}
    assert honest["alpha"] == max(honest.values()) > 0 == honest["charlie"], honest

    # 4. A fourth registered collector lies (all traffic to the forked operator, validly
    # signed): outvoted, and named.
    generate_key(tmp_path / "liar.key")
    liar_key = load_key(tmp_path / "liar.key")
    with _Liar(apis[0], liar_key) as liar:
        result = _combine([*apis, liar.url], [*pins, liar_key.address], quorum=3)
    assert {w.operator_id: w.weight_bps for w in result.weights} == honest
    reports = {r.url: r for r in result.collectors}
    assert reports[liar.url].status == "disagreed"
    assert {d.operator_id for d in reports[liar.url].disagreements} >= {"alpha", "charlie"}
    assert all(reports[a].status == "ok" for a in apis)

    # 5. c applies another registry (a probe dropped): reported, left out of the combination.
    document["probes"] = document["probes"][:2]
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(document, sort_keys=False))
    engine = make_engine(urls[2])
    try:
        with session_scope(engine) as session:
            apply_registry(session, registry=load_registry(other))
    finally:
        engine.dispose()
    identities = [httpx.get(f"{a}/v1/identity", timeout=5).json() for a in apis]
    hashes = [i["registry"]["hash"] for i in identities]
    assert hashes[0] == hashes[1] != hashes[2]
    result = _combine(apis, pins, quorum=2)
    reports = {r.url: r for r in result.collectors}
    assert reports[apis[2]].status == "excluded"
    assert reports[apis[2]].reason == "registry_mismatch"
    assert [reports[a].status for a in apis[:2]] == ["ok", "ok"]
