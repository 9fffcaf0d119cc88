"""One probe, several independently operated collectors, all real and over loopback (apps under
uvicorn, each with a database of its own: SQLite and PostgreSQL): every batch reaches each exactly
once; a collector down, hanging or refusing never holds back the others; the one back from an
outage gets its backlog once; an outbox from before several collectors is upgraded and drained."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import yaml
from eth_account.signers.local import LocalAccount
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from monitor import simnet
from monitor.app import create_app
from monitor.db.models import Batch
from monitor.db.session import make_engine, session_scope
from monitor.probe import agent as agent_module
from monitor.probe.agent import ProbeAgent, run_probe
from monitor.probe.outbox import Outbox
from monitor.registry.apply import apply_registry
from monitor.registry.schema import Registry
from monitor.serving import ServerThread
from monitor.settings import Settings
from tests.conftest import TEMPLATE_DB, make_settings, start_network
from tests.probe.test_agent import result_count, stored_batches
from tests.probe.test_outbox import write_legacy
from tests.support.postgres import PostgresCluster

pytestmark = pytest.mark.postgres

OPERATORS = len(simnet.DEMO_OPERATORS)
_names = itertools.count()


class Site:
    """One collector: the real app, its own database, stoppable and restartable on its port."""

    def __init__(self, name: str, database_url: str) -> None:
        self.name = name
        self.settings = make_settings(database_url)
        self.engine = make_engine(database_url)
        self.port = 0
        self._server: ServerThread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        app = create_app(self.settings, engine=self.engine, scoring=False)
        server = ServerThread(app, port=self.port, name=self.name, lifespan="on")
        server.start()
        self.port, self._server = server.port, server

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def apply(self, registry: dict[str, Any]) -> None:
        with session_scope(self.engine) as session:
            apply_registry(session, registry=Registry.model_validate(registry))

    def stored(self) -> dict[str, int]:
        return stored_batches(self.engine)


@pytest.fixture
def sites(
    sqlite_template: Path, pg_cluster: PostgresCluster, tmp_path: Path
) -> Iterator[dict[str, Site]]:
    """a and c on SQLite, b on PostgreSQL; started by the tests that use them."""
    urls = {}
    for name in ("a", "c"):
        path = tmp_path / f"collector-{name}.db"
        shutil.copy(sqlite_template, path)
        urls[name] = f"sqlite:///{path}"
    pg_name = f"collector_b_{os.getpid()}_{next(_names)}"
    pg_cluster.create_database(pg_name, template=TEMPLATE_DB)
    urls["b"] = pg_cluster.url(pg_name)
    made = {name: Site(f"collector-{name}", url) for name, url in sorted(urls.items())}
    try:
        yield made
    finally:
        for site in made.values():
            site.stop()
            site.engine.dispose()
        pg_cluster.drop_database(pg_name)


class Net:
    def __init__(self, sim: simnet.SimnetServer, probes: list[LocalAccount], registry: Path):
        self.sim, self.probes = sim, probes
        self.registry: dict[str, Any] = yaml.safe_load(registry.read_text())


@pytest.fixture
def net(sites: dict[str, Site], tmp_path: Path) -> Iterator[Net]:
    """The demo network, every operator healthy (these tests count batches, not latency), its
    registry applied to collector a; each test applies it (or a variant) to the others."""
    operators = [
        dataclasses.replace(o, behaviour="healthy", delay_s=0) for o in simnet.DEMO_OPERATORS
    ]
    sim, probes, registry = start_network(sites["a"].engine, tmp_path, operators, probes=1)
    try:
        yield Net(sim, probes, registry)
    finally:
        sim.stop()


def probe_settings(tmp_path: Path, account: LocalAccount, *urls: str, **more: Any) -> Settings:
    key = tmp_path / "probe.key"
    key.write_text(account.key.hex() + "\n")
    key.chmod(0o600)
    # Longer than the demo network's slow operator takes to answer (0.3 s): a visit is never
    # still in flight at the endpoint's next slot, so every round is whole.
    fields: dict[str, Any] = {"interval_s": 0.5, "rpc_timeout_s": 1.0, **more}
    return Settings(collector_urls=list(urls), key_file=key, **fields)


def outbox_path(settings: Settings) -> Path:
    return settings.key_file.with_name(settings.key_file.name + ".outbox.sqlite")


def has(site: Site, batch_id: str) -> Callable[[], bool]:
    return lambda: batch_id in site.stored()


async def until(what: str, check: Callable[[], bool], timeout_s: float) -> float:
    """Poll ``check`` (in a thread: it may query a database) until true; the seconds it took."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout_s):
            while not await asyncio.to_thread(check):
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"{what}: not within {timeout_s} s") from None
    return time.monotonic() - started


def test_every_batch_reaches_both_exactly_once(
    sites: dict[str, Site], net: Net, tmp_path: Path
) -> None:
    a, b = sites["a"], sites["b"]
    b.apply(net.registry)
    a.start()
    b.start()
    settings = probe_settings(tmp_path, net.probes[0], a.url, b.url)

    async def scenario() -> None:
        stop = asyncio.Event()
        probe = asyncio.create_task(run_probe(settings, stop=stop))
        try:

            def both_have_three() -> bool:
                return len(a.stored()) >= 3 and len(b.stored()) >= 3

            await until("three batches in both collectors", both_have_three, 20)
        finally:
            stop.set()
            await probe

    asyncio.run(scenario())

    async def deliver(path: Path, bodies: list[tuple[str, bytes]]) -> bool:
        outbox = Outbox(path)
        agent = ProbeAgent(settings=settings, account=net.probes[0], outbox=outbox)
        try:
            for batch_id, body in bodies:
                outbox.put(batch_id, body)
            return await agent.deliver_pending() and outbox.depth() == 0
        finally:
            await agent.aclose()
            outbox.close()

    # What the stop left undelivered (a last round, an acknowledgement cut short) goes out.
    assert asyncio.run(deliver(outbox_path(settings), []))
    stored_a, stored_b = a.stored(), b.stored()
    assert len(stored_a) >= 3
    assert stored_a == stored_b == dict.fromkeys(stored_a, 1)
    assert result_count(a.engine) == result_count(b.engine) == len(stored_a) * OPERATORS

    # Every batch again, as if every acknowledgement had been lost: still once in each.
    with session_scope(a.engine) as session:
        bodies = [
            (i, body.encode()) for i, body in session.execute(select(Batch.batch_id, Batch.body))
        ]
    assert asyncio.run(deliver(tmp_path / "resend.outbox.sqlite", bodies))
    assert a.stored() == b.stored() == stored_a
    assert result_count(a.engine) == result_count(b.engine) == len(stored_a) * OPERATORS


def test_a_collector_down_delays_nobody_and_gets_its_backlog_once(
    sites: dict[str, Site], net: Net, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """b (PostgreSQL, first in the list) stops while the probe runs rounds: a gets each batch at
    once; b, back on its port, gets the ones it missed, once each."""
    monkeypatch.setattr(agent_module, "MAX_BACKOFF_S", 1.0)  # b's retries: the test's pace
    a, b = sites["a"], sites["b"]
    b.apply(net.registry)
    a.start()
    b.start()
    settings = probe_settings(tmp_path, net.probes[0], b.url, a.url)

    async def scenario() -> list[str]:
        outbox = Outbox(outbox_path(settings))
        agent = ProbeAgent(settings=settings, account=net.probes[0], outbox=outbox)
        loops = [asyncio.create_task(agent.delivery_loop(url)) for url in agent.collectors]
        batch_ids: list[str] = []

        async def one_round() -> str:
            batch_id = await agent.round()
            assert batch_id is not None
            batch_ids.append(batch_id)
            return batch_id

        try:
            first = await one_round()
            await until("round 1 in a", has(a, first), 5)
            await until("round 1 in b", has(b, first), 5)

            await asyncio.to_thread(b.stop)
            waits = []
            for _ in range(3):
                batch_id = await one_round()
                waits.append(await until("a round in a", has(a, batch_id), 5))
            assert max(waits) < 2.0, waits  # a is served while b is away
            assert set(b.stored()) == {first}
            assert (outbox.depth(collector=a.url), outbox.depth(collector=b.url)) == (0, 3)
            assert outbox.depth() == 3  # kept for b
            assert all(p.attempts >= 1 for p in outbox.oldest(collector=b.url)[:1])

            await asyncio.to_thread(b.start)  # the same port
            await until("b's backlog delivered", lambda: outbox.depth() == 0, 10)
            return batch_ids
        finally:
            for task in loops:
                task.cancel()
            await asyncio.wait(loops, timeout=5)
            await agent.aclose()
            outbox.close()

    batch_ids = asyncio.run(scenario())
    assert a.stored() == b.stored() == dict.fromkeys(batch_ids, 1)
    assert result_count(b.engine) == 4 * OPERATORS


def test_a_hanging_collector_delays_nobody(
    sites: dict[str, Site], net: Net, tmp_path: Path
) -> None:
    """A collector that accepts connections and never answers a batch (first in the list, and
    refusing targets) holds up neither the rounds nor the delivery to the next collector."""

    async def hang(request: Request) -> Response:
        await asyncio.sleep(30)  # longer than the test; cut short when the server stops
        return JSONResponse({})

    async def busy(request: Request) -> Response:
        return JSONResponse({"error": {"code": "busy", "message": "later"}}, status_code=503)

    app = Starlette(
        routes=[Route("/v1/batches", hang, methods=["POST"]), Route("/v1/targets", busy)]
    )
    a = sites["a"]
    a.start()
    with ServerThread(app, name="hanging-collector") as hanging:
        settings = probe_settings(tmp_path, net.probes[0], hanging.url, a.url)

        async def scenario() -> tuple[list[str], list[float], int]:
            outbox = Outbox(outbox_path(settings))
            agent = ProbeAgent(settings=settings, account=net.probes[0], outbox=outbox)
            loops = [asyncio.create_task(agent.delivery_loop(url)) for url in agent.collectors]
            try:
                batch_ids, waits = [], []
                for _ in range(3):
                    batch_id = await agent.round()  # targets from a, after the 503
                    assert batch_id is not None
                    batch_ids.append(batch_id)
                    waits.append(await until("a round in a", has(a, batch_id), 5))
                return batch_ids, waits, outbox.depth(collector=hanging.url)
            finally:
                for task in loops:
                    task.cancel()
                await asyncio.wait(loops, timeout=5)
                await agent.aclose()
                outbox.close()

        batch_ids, waits, owed = asyncio.run(scenario())
    assert max(waits) < 2.0, waits
    assert owed == 3  # still queued for the hanging one
    assert a.stored() == dict.fromkeys(batch_ids, 1)


def test_a_refusal_is_recorded_for_that_collector_only(
    sites: dict[str, Site], net: Net, tmp_path: Path
) -> None:
    """c does not list the probe yet (403 unknown_probe: retried, and its targets refused); b
    does not list the operator echo (422 unknown_endpoint: refused for good). a gets everything;
    the refusal is b's alone; c, once it lists the probe, gets every batch."""
    a, b, c = sites["a"], sites["b"], sites["c"]
    without_echo = {
        **net.registry,
        "operators": [o for o in net.registry["operators"] if o["id"] != "echo"],
    }
    b.apply(without_echo)
    c.apply({**net.registry, "probes": []})
    for site in (a, b, c):
        site.start()
    settings = probe_settings(tmp_path, net.probes[0], c.url, a.url, b.url)
    path = outbox_path(settings)

    async def scenario() -> list[str]:
        outbox = Outbox(path)
        agent = ProbeAgent(settings=settings, account=net.probes[0], outbox=outbox)
        try:
            assert await agent.refresh_targets()  # c refuses; a, next, serves them
            assert agent.targets is not None
            assert sum(len(chain.endpoints) for chain in agent.targets.chains) == OPERATORS
            batch_ids = [await agent.round(), await agent.round()]
            assert await agent.deliver_pending(collector=a.url) is True
            assert await agent.deliver_pending(collector=b.url) is True  # refused for good
            assert await agent.deliver_pending(collector=c.url) is False  # to be retried
            assert [
                (outbox.depth(collector=u), outbox.rejected_count(collector=u))
                for u in (a.url, b.url, c.url)
            ] == [(0, 0), (0, 2), (2, 0)]
            assert outbox.depth() == 2  # the bodies stay for c

            await asyncio.to_thread(c.apply, net.registry)
            assert await agent.deliver_pending() is True
            assert (outbox.depth(), outbox.rejected_count()) == (0, 2)
            return [i for i in batch_ids if i is not None]
        finally:
            await agent.aclose()
            outbox.close()

    batch_ids = asyncio.run(scenario())
    assert len(batch_ids) == 2
    assert a.stored() == c.stored() == dict.fromkeys(batch_ids, 1)
    assert b.stored() == {}
    with closing(sqlite3.connect(path)) as db:
        rows = db.execute("SELECT batch_id, collector, status, reason FROM rejected").fetchall()
    assert sorted(r[0] for r in rows) == sorted(batch_ids)
    assert {(r[1], r[2]) for r in rows} == {(b.url, 422)}
    assert all("unknown_endpoint" in r[3] for r in rows)


def test_an_outbox_from_before_several_collectors_is_delivered_to_each(
    sites: dict[str, Site], net: Net, tmp_path: Path
) -> None:
    """A probe upgraded with batches still in its old-format outbox: `monitor probe` with two
    collectors upgrades the file and delivers those batches to both, once each."""
    a, b = sites["a"], sites["b"]
    b.apply(net.registry)
    a.start()
    b.start()
    settings = probe_settings(tmp_path, net.probes[0], a.url, b.url, interval_s=60.0)

    async def old_rounds() -> list[tuple[str, bytes, int]]:
        scratch = Outbox(tmp_path / "scratch.sqlite")
        agent = ProbeAgent(settings=settings, account=net.probes[0], outbox=scratch)
        try:
            for _ in range(2):
                assert await agent.round() is not None
            return [(p.batch_id, p.body, 3) for p in scratch.oldest(collector=a.url)]
        finally:
            await agent.aclose()
            scratch.close()

    legacy = asyncio.run(old_rounds())
    path = outbox_path(settings)
    write_legacy(path, legacy, rejected=1)
    old_ids = [batch_id for batch_id, _, _ in legacy]

    def owed() -> int:
        """Deliveries of the old batches not yet acknowledged (the file is upgraded by then)."""
        with closing(sqlite3.connect(path, timeout=5)) as db:
            query = (
                "SELECT count(*) FROM deliveries d JOIN pending p USING (seq)"
                " WHERE p.batch_id IN (?, ?)"
            )
            return int(db.execute(query, old_ids).fetchone()[0])

    def delivered() -> bool:
        return all(set(old_ids) <= set(s.stored()) for s in (a, b)) and owed() == 0

    async def run() -> None:
        stop = asyncio.Event()
        probe = asyncio.create_task(run_probe(settings, stop=stop))
        try:
            await until("the old batches in both collectors", delivered, 20)
        finally:
            stop.set()
            await probe

    asyncio.run(run())
    for site in (a, b):
        stored = site.stored()
        assert {i: stored[i] for i in old_ids} == dict.fromkeys(old_ids, 1)
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 1
        rejected = db.execute("SELECT batch_id, collector FROM rejected").fetchall()
    assert rejected == [("old-0", "")]  # the old refusal kept, its collector unrecorded
