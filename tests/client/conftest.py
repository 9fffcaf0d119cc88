"""A fleet of independently operated collectors over loopback, for monitor.client.

Four real collector apps, each with its own signing key and its own database (SQLite, then
PostgreSQL), the same registry and the same signed probe batches; three are scored from all of
them (a, b, c: identical answers), one from less (d: honest but different). Beside them, test
doubles that forge: one re-signs altered weights with a wrong key, one alters the numbers and
keeps a's signature, one (rogue) signs altered weights with its own announced key, one mirrors
a's answer verbatim (a cache in front of a), one refuses connections, one never answers.
"""

from __future__ import annotations

import itertools
import json
import shutil
import socket
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from monitor import simnet
from monitor.app import create_app
from monitor.db.models import Endpoint
from monitor.db.session import make_engine, session_scope
from monitor.ingest.schemas import ErrorKind, ProbeResult
from monitor.registry.apply import apply_registry
from monitor.registry.schema import load_registry
from monitor.scoring.job import run_scoring
from monitor.serving import ServerThread
from monitor.settings import Settings
from monitor.signing.collector import sign_weights
from monitor.signing.eip712 import sign_batch
from monitor.signing.keys import generate_key
from tests.conftest import TEMPLATE_DB
from tests.support.postgres import PostgresCluster
from tests.support.results import answered

CHAIN_ID = simnet.DEMO_CHAIN_ID
TIMEOUT_S = 10.0
_names = itertools.count()


@dataclass
class Fleet:
    chain_id: int
    ids: dict[str, int]  # operator -> its endpoint id
    honest: list[str]  # a, b, c: scored from the same data
    signers: list[str]  # their addresses, in that order
    partial: str  # d: scored without bravo's results
    partial_signer: str
    answer: dict[str, Any]  # a's /v1/weights, as served
    resigned: str  # altered, re-signed with a key nobody trusts; /v1/identity copied from a
    tampered: str  # altered, a's signature kept; /v1/identity copied from a
    rogue: str  # altered, signed with its own key, which its /v1/identity announces
    rogue_signer: str
    mirror: str  # a's answer and identity verbatim
    refused: str  # nothing listens
    silent: str  # accepts connections, never answers


def get_json(url: str, path: str, **params: Any) -> dict[str, Any]:
    response = httpx.get(f"{url}{path}", params=params, timeout=TIMEOUT_S, trust_env=False)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def forged(answer: dict[str, Any], ids: dict[str, int]) -> dict[str, Any]:
    """``answer`` with 2000 bps moved from the best endpoint to charlie (on a wrong fork)."""
    body = json.loads(json.dumps(answer))
    weights = body["weights"]
    best = max(weights, key=lambda w: w["weight_bps"])
    fork = next(w for w in weights if w["endpoint_id"] == ids["charlie"])
    best["weight_bps"] -= 2_000
    fork["weight_bps"] += 2_000
    for w in weights:
        w["weight"] = w["weight_bps"] / 10_000
    return body


def resign(body: dict[str, Any], account: LocalAccount) -> dict[str, Any]:
    body["signature"] = sign_weights(
        account,
        chain_id=body["chain_id"],
        window=body["window"],
        as_of_ms=body["as_of_ms"],
        weights=[(w["endpoint_id"], w["operator_id"], w["weight_bps"]) for w in body["weights"]],
    )
    body["signer"] = account.address
    return body


def static_server(routes: dict[str, dict[str, Any]], name: str) -> ServerThread:
    """A loopback HTTP server answering each path with its fixed JSON (query ignored)."""

    async def answer(request: Request) -> JSONResponse:
        return JSONResponse(routes[request.url.path])

    app = Starlette(routes=[Route(path, answer) for path in routes])
    return ServerThread(app, name=name)


def batches(ids: dict[str, int], probes: list[LocalAccount], at_ms: int) -> list[bytes]:
    """One signed batch per probe, three rounds each: alpha healthy, bravo 4 blocks behind,
    charlie on another fork, delta slow; the same bytes go to every collector."""
    good, bad = "0x" + "aa" * 32, "0x" + "bb" * 32
    bodies = []
    for account in probes:
        results = []
        for i in range(3):
            head = 5_000 + i
            rows: list[tuple[str, int, int, str, bool, ErrorKind | None]] = [
                ("alpha", 20_000, 0, good, True, None),
                ("bravo", 25_000, 4, good, True, None),
                ("charlie", 20_000, 0, bad, False, "wrong_hash"),
                ("delta", 320_000, 0, good, True, None),
            ]
            for operator, latency_us, lag, block_hash, correct, error in rows:
                results.append(
                    answered(
                        endpoint_id=ids[operator],
                        operator_id=operator,
                        chain_id=CHAIN_ID,
                        observed_at_ms=at_ms + i * 1_000,
                        error=error,
                        latency_us=latency_us,
                        head=head,
                        lag=lag,
                        block_hash=block_hash,
                        correct=correct,
                    )
                )
        bodies.append(sign_batch(account, results).model_dump_json().encode())
    return bodies


def without(body: bytes, account: LocalAccount, endpoint_id: int) -> bytes:
    """The batch re-signed by its probe without the results of ``endpoint_id``."""
    results = [
        ProbeResult.model_validate(r)
        for r in json.loads(body)["results"]
        if r["endpoint_id"] != endpoint_id
    ]
    return sign_batch(account, results).model_dump_json().encode()


def _database(request: pytest.FixtureRequest, stack: ExitStack, directory: Path) -> str:
    if request.param == "sqlite":
        path = directory / f"collector-{next(_names)}.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
    name = f"client_{next(_names)}"
    cluster.create_database(name, template=TEMPLATE_DB)
    stack.callback(cluster.drop_database, name)
    return cluster.url(name)


def _start(stack: ExitStack, server: ServerThread) -> str:
    server.start()
    stack.callback(server.stop)
    return server.url


@pytest.fixture(
    scope="package", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def fleet(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fleet]:
    directory = tmp_path_factory.mktemp("fleet")
    probes = [Account.create() for _ in range(3)]
    registry_file = directory / "registry.yaml"
    simnet.write_registry(
        registry_file,
        simnet.DEMO_OPERATORS,
        simnet.demo_chains(),
        url_base="http://127.0.0.1:9",  # never called: the test makes the probes' results
        probes=[
            {"address": p.address, "name": f"probe-{i}", "region": f"region-{i}"}
            for i, p in enumerate(probes)
        ],
    )
    registry = load_registry(registry_file)
    as_of = datetime.now(UTC).replace(microsecond=0)
    at_ms = int(as_of.timestamp() * 1000) - 20_000
    with ExitStack() as stack:
        urls, signers = [], []
        bodies: list[bytes] = []
        ids: dict[str, int] = {}
        for name in ("a", "b", "c", "d"):
            database_url = _database(request, stack, directory)
            engine = make_engine(database_url)
            stack.callback(engine.dispose)
            with session_scope(engine) as session:
                apply_registry(session, registry=registry)
            if not ids:
                with session_scope(engine) as session:
                    rows = session.execute(select(Endpoint.operator_id, Endpoint.id)).all()
                    ids = {operator: endpoint for operator, endpoint in rows}
                bodies = batches(ids, probes, at_ms)
            key = directory / f"{name}.key"
            signers.append(generate_key(key))  # each collector its own identity
            settings = Settings(database_url=database_url, service_key_file=key)
            app = create_app(settings, engine=engine, scoring=False)
            url = _start(stack, ServerThread(app, name=f"collector-{name}", lifespan="on"))
            for body, probe in zip(bodies, probes, strict=True):
                if name == "d":  # scored from less data: nothing about bravo
                    body = without(body, probe, ids["bravo"])
                response = httpx.post(
                    f"{url}/v1/batches",
                    content=body,
                    headers={"content-type": "application/json"},
                    timeout=TIMEOUT_S,
                    trust_env=False,
                )
                assert response.status_code == 200, response.text
            run_scoring(engine, settings, as_of=as_of)
            urls.append(url)

        a = urls[0]
        answer = get_json(a, "/v1/weights", chain_id=CHAIN_ID)
        identity = get_json(a, "/v1/identity")
        rogue_key = Account.create()
        rogue_identity = {**identity, "address": rogue_key.address}
        doubles = {
            "resigned": {
                "/v1/weights": resign(forged(answer, ids), Account.create()),
                "/v1/identity": identity,
            },
            "tampered": {"/v1/weights": forged(answer, ids), "/v1/identity": identity},
            "rogue": {
                "/v1/weights": resign(forged(answer, ids), rogue_key),
                "/v1/identity": rogue_identity,
            },
            "mirror": {"/v1/weights": answer, "/v1/identity": identity},
        }
        served = {n: _start(stack, static_server(r, n)) for n, r in doubles.items()}
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            refused = f"http://127.0.0.1:{closed.getsockname()[1]}"
        silent = socket.socket()
        stack.callback(silent.close)
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes connections; nobody ever reads or answers
        yield Fleet(
            chain_id=CHAIN_ID,
            ids=ids,
            honest=urls[:3],
            signers=signers[:3],
            partial=urls[3],
            partial_signer=signers[3],
            answer=answer,
            resigned=served["resigned"],
            tampered=served["tampered"],
            rogue=served["rogue"],
            rogue_signer=rogue_key.address,
            mirror=served["mirror"],
            refused=refused,
            silent=f"http://127.0.0.1:{silent.getsockname()[1]}",
        )
