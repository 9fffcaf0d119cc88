"""Collectors that sync with each other, over real loopback HTTP, each with its own database
(SQLite or PostgreSQL), the same registry, and signed batches to post to them; and a fake peer
whose answers to ``GET /v1/batches`` a test writes itself."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from eth_account.signers.local import LocalAccount
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, func, select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from monitor import simnet
from monitor.app import create_app
from monitor.db.models import Batch, Endpoint, Result
from monitor.db.session import make_engine, session_scope
from monitor.ingest.schemas import ProbeResult
from monitor.metrics import JobMetrics
from monitor.registry.apply import apply_registry
from monitor.registry.schema import load_registry
from monitor.serving import ServerThread
from monitor.settings import Settings
from monitor.signing.eip712 import sign_batch
from tests.conftest import TEMPLATE_DB, make_settings
from tests.support.postgres import PostgresCluster

TIMEOUT = 10.0
HASH = "0x" + "ab" * 32
_names = itertools.count()


def closed_port_url() -> str:
    """A loopback URL nothing listens on: a peer on the other side of a partition."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def write_registry(path: Path, probes: list[LocalAccount]) -> Path:
    """The demo operators (URLs on a closed port: never contacted) and ``probes``."""
    chains = {simnet.DEMO_CHAIN_ID: simnet.SimChain(simnet.DEMO_CHAIN_ID, 1.0)}
    simnet.write_registry(
        path,
        simnet.DEMO_OPERATORS,
        chains,
        url_base="http://127.0.0.1:9",
        probes=[
            {"address": a.address, "name": f"probe-{i}", "region": "test"}
            for i, a in enumerate(probes)
        ],
    )
    return path


@dataclass
class Node:
    """One collector: its database, its app over loopback, and its own peer-sync settings."""

    name: str
    database_url: str
    engine: Engine
    server: ServerThread
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.metrics = JobMetrics(self.registry)  # what a test's sync ticks count into

    @property
    def url(self) -> str:
        return self.server.url

    def settings(self, peers: list[str], **overrides: Any) -> Settings:
        return make_settings(self.database_url, peers=peers, batches_settle_s=0, **overrides)

    def hashes(self) -> set[str]:
        with session_scope(self.engine) as session:
            return set(session.scalars(select(Batch.body_hash)))

    def results(self) -> int:
        with session_scope(self.engine) as session:
            return session.scalar(select(func.count()).select_from(Result)) or 0

    def sample(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


class Nodes:
    """Collectors started by a test; every one is stopped and its database dropped at the end."""

    def __init__(
        self, tmp_path: Path, registry_file: Path, *, sqlite_template: Path, pg: PostgresCluster
    ) -> None:
        self.tmp_path = tmp_path
        self.registry_file = registry_file
        self._template = sqlite_template
        self._pg = pg
        self._started: list[Node] = []
        self._databases: list[str] = []

    def start(self, name: str, backend: str, *, scheduler: bool = False, **overrides: Any) -> Node:
        """A collector on a fresh ``backend`` database; ``scheduler``: with its jobs running
        (scoring, SLA, and the peer sync when ``peers`` is among ``overrides``)."""
        if backend == "sqlite":
            path = self.tmp_path / f"{name}.db"
            shutil.copy(self._template, path)
            url = f"sqlite:///{path}"
        else:
            database = f"peers_{os.getpid()}_{next(_names)}"
            self._pg.create_database(database, template=TEMPLATE_DB)
            self._databases.append(database)
            url = self._pg.url(database)
        engine = make_engine(url)
        with session_scope(engine) as session:
            apply_registry(session, registry=load_registry(self.registry_file))
        settings = make_settings(url, batches_settle_s=0, **overrides)
        server = ServerThread(
            create_app(settings, engine=engine, scoring=scheduler), name=name, lifespan="on"
        )
        server.start()
        node = Node(name, url, engine, server)
        self._started.append(node)
        return node

    def stop_all(self) -> None:
        for node in reversed(self._started):  # a node's sync never outlives its peers' start
            node.server.stop()
            node.engine.dispose()
        for database in self._databases:
            self._pg.drop_database(database)


def endpoints(engine: Engine) -> list[tuple[int, str, int]]:
    with session_scope(engine) as session:
        rows = session.execute(
            select(Endpoint.id, Endpoint.operator_id, Endpoint.chain_id).order_by(Endpoint.id)
        ).all()
    return [(r.id, r.operator_id, r.chain_id) for r in rows]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def signed_body(
    probe: LocalAccount,
    targets: list[tuple[int, str, int]],
    *,
    ago_s: float = 1.0,
    **overrides: Any,
) -> bytes:
    """A batch signed by ``probe``: one result per target, observed ``ago_s`` ago."""
    at = now_ms() - int(ago_s * 1000)
    results = [
        ProbeResult(
            endpoint_id=endpoint_id,
            operator_id=operator_id,
            chain_id=chain_id,
            observed_at_ms=at,
            ok=True,
            error=None,
            latency_us=40_000 + 1_000 * i,
            head=2_000,
            reference_head=2_000,
            lag_blocks=0,
            lag_ms=0,
            check_height=1_994,
            block_hash=HASH,
            correct=True,
            **overrides,
        )
        for i, (endpoint_id, operator_id, chain_id) in enumerate(targets)
    ]
    return sign_batch(probe, results, created_at_ms=at + 500).model_dump_json().encode()


def post(url: str, body: bytes) -> dict[str, Any]:
    response = httpx.post(
        f"{url}/v1/batches",
        content=body,
        headers={"content-type": "application/json"},
        timeout=TIMEOUT,
    )
    assert response.status_code == 200, response.text
    ack: dict[str, Any] = response.json()
    return ack


Answer = tuple[int, bytes]  # status, body


class FakePeer:
    """A peer that answers ``GET /v1/batches`` with whatever ``answer(since, limit)`` returns
    (and waits ``delay_s`` first); it records the cursors it was asked with."""

    def __init__(self, answer: Callable[[str, str], Answer], *, delay_s: float = 0.0) -> None:
        self.answer = answer
        self.delay_s = delay_s
        self.asked: list[str] = []

        async def batches(request: Request) -> Response:
            since = request.query_params.get("since", "0")
            self.asked.append(since)
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            status, body = self.answer(since, request.query_params.get("limit", ""))
            return Response(body, status_code=status, media_type="application/json")

        self.server = ServerThread(
            Starlette(routes=[Route("/v1/batches", batches)]), name="fake-peer"
        )

    @property
    def url(self) -> str:
        return self.server.url

    def __enter__(self) -> FakePeer:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()
