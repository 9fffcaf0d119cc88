"""ProbeAgent against the real collector over loopback, on SQLite and PostgreSQL: rounds are
queued durably, delivered once, kept while the collector is away, set aside when refused."""

from __future__ import annotations

import asyncio
import shutil
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from eth_account import Account
from eth_account.signers.local import LocalAccount
from sqlalchemy import Engine, func, select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from monitor.db.models import Batch, Result
from monitor.db.session import session_scope
from monitor.probe.agent import ProbeAgent
from monitor.probe.outbox import Outbox
from monitor.probe.schedule import Schedule
from monitor.probe.targets import Targets
from monitor.registry.apply import apply_registry
from monitor.registry.schema import Registry
from monitor.serving import ServerThread
from monitor.settings import Settings
from monitor.simnet import DEMO_OPERATORS
from tests.conftest import Network
from tests.support.outbox import outbox_counts

OPERATORS = len(DEMO_OPERATORS)  # the demo network: alpha ... echo


def closed_port_url() -> str:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}"


def stored_batches(engine: Engine) -> dict[str, int]:
    """batch_id -> number of Batch rows with it."""
    with session_scope(engine) as session:
        rows = session.execute(select(Batch.batch_id, func.count()).group_by(Batch.batch_id)).all()
    return {batch_id: count for batch_id, count in rows}


def result_count(engine: Engine) -> int:
    with session_scope(engine) as session:
        return session.scalar(select(func.count()).select_from(Result)) or 0


def key_file(network: Network, tmp_path: Path) -> Path:
    """The demo network's first probe key, as ``monitor probe`` reads it."""
    key = tmp_path / "probe.key"
    key.write_text(network.probes[0].key.hex() + "\n")
    key.chmod(0o600)
    return key


async def fetch_targets(settings: Settings, account: LocalAccount, tmp_path: Path) -> Targets:
    outbox = Outbox(tmp_path / "targets-only.outbox.sqlite")
    agent = ProbeAgent(settings=settings, account=account, outbox=outbox)
    try:
        assert await agent.refresh_targets()
        assert agent.targets is not None
        return agent.targets
    finally:
        await agent.aclose()
        outbox.close()


def test_round_and_delivery_empty_the_outbox(
    network: Network, collector: ServerThread, engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"collector_urls": [collector.url]})

    async def scenario() -> tuple[list[str | None], int, bool, int]:
        outbox = Outbox(tmp_path / "probe.outbox.sqlite")
        agent = ProbeAgent(settings=settings, account=network.probes[0], outbox=outbox)
        try:
            batch_ids = [await agent.round()]
            queued = outbox.depth()
            delivered = await agent.deliver_pending()
            return batch_ids, queued, delivered, outbox.depth()
        finally:
            await agent.aclose()
            outbox.close()

    batch_ids, queued, delivered, depth = asyncio.run(scenario())
    assert all(batch_ids)
    assert (queued, delivered, depth) == (1, True, 0)
    assert stored_batches(engine) == {batch_id: 1 for batch_id in batch_ids if batch_id}
    assert result_count(engine) == OPERATORS


def test_collector_down_keeps_batches_until_it_is_back(
    network: Network, collector: ServerThread, engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    live = settings.model_copy(update={"collector_urls": [collector.url]})
    dead_url = closed_port_url()
    dead = settings.model_copy(update={"collector_urls": [dead_url]})
    account = network.probes[1]
    outbox_path = tmp_path / "probe.outbox.sqlite"

    async def offline() -> list[str]:
        targets = await fetch_targets(live, account, tmp_path)  # fetched before the outage
        outbox = Outbox(outbox_path)
        agent = ProbeAgent(settings=dead, account=account, outbox=outbox)
        agent.targets = targets
        try:
            batch_ids = []
            for _ in range(2):
                batch_id = await agent.round()
                assert batch_id is not None
                batch_ids.append(batch_id)
            assert await agent.deliver_pending() is False
            assert await agent.deliver_pending() is False
            pending = outbox.oldest(collector=dead_url)
            assert [p.batch_id for p in pending] == batch_ids
            # Only the head of the queue was tried, once per attempt; nothing was lost.
            assert [p.attempts for p in pending] == [2, 0]
            assert await agent.refresh_targets() is False  # and the old targets stay
            assert agent.targets is targets
            return batch_ids
        finally:
            await agent.aclose()
            outbox.close()

    batch_ids = asyncio.run(offline())
    assert stored_batches(engine) == {}

    # The outbox survives the agent: a new one, same file, live collector, delivers everything
    # (the dead collector is no longer configured: the live one, new, gets what is on disk).
    async def back_online(path: Path) -> tuple[int, bool, int]:
        outbox = Outbox(path)
        agent = ProbeAgent(settings=live, account=account, outbox=outbox)
        try:
            before = outbox.depth()
            delivered = await agent.deliver_pending()
            return before, delivered, outbox.depth()
        finally:
            await agent.aclose()
            outbox.close()

    # A copy of the outbox as it was: as if the collector stored the batches but the
    # acknowledgements were lost, and the probe sends them all again.
    resend_path = tmp_path / "resend.outbox.sqlite"
    shutil.copy(outbox_path, resend_path)

    assert asyncio.run(back_online(outbox_path)) == (2, True, 0)
    assert stored_batches(engine) == dict.fromkeys(batch_ids, 1)
    assert result_count(engine) == 2 * OPERATORS

    assert asyncio.run(back_online(resend_path)) == (2, True, 0)
    assert stored_batches(engine) == dict.fromkeys(batch_ids, 1)  # exactly once
    assert result_count(engine) == 2 * OPERATORS


def test_unknown_probe_is_retried_until_registered(
    network: Network, collector: ServerThread, engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    """403 unknown_probe may be a registry not rolled out yet: the batch stays queued, and is
    delivered once the registry lists the probe."""
    settings = settings.model_copy(update={"collector_urls": [collector.url]})
    stranger = Account.create()  # a valid key the registry does not know (yet)
    outbox_path = tmp_path / "stranger.outbox.sqlite"

    async def scenario() -> str:
        outbox = Outbox(outbox_path)
        agent = ProbeAgent(settings=settings, account=stranger, outbox=outbox)
        try:
            assert await agent.refresh_targets() is False  # 403 for targets too
            assert await agent.round() is None  # no targets: no round
            agent.targets = await fetch_targets(settings, network.probes[2], tmp_path)
            batch_id = await agent.round()
            assert batch_id is not None
            assert await agent.deliver_pending() is False  # kept for a retry
            assert (outbox.depth(), outbox.rejected_count()) == (1, 0)
            registry = yaml.safe_load(network.registry_file.read_text())
            registry["probes"].append(
                {"address": stranger.address, "name": "late", "region": "late"}
            )
            with session_scope(engine) as session:
                apply_registry(session, registry=Registry.model_validate(registry))
            assert await agent.deliver_pending() is True
            assert (outbox.depth(), outbox.rejected_count()) == (0, 0)
            return batch_id
        finally:
            await agent.aclose()
            outbox.close()

    batch_id = asyncio.run(scenario())
    assert stored_batches(engine) == {batch_id: 1}


def test_refused_batch_moves_to_rejected(
    network: Network, collector: ServerThread, engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    """A batch the collector refuses for good (here: tampered on disk, 422) is set aside in the
    rejected table and never sent again, so it cannot block the queue."""
    settings = settings.model_copy(update={"collector_urls": [collector.url]})
    outbox_path = tmp_path / "probe.outbox.sqlite"

    async def scenario() -> str:
        outbox = Outbox(outbox_path)
        agent = ProbeAgent(settings=settings, account=network.probes[0], outbox=outbox)
        try:
            batch_id = await agent.round()
            assert batch_id is not None
            (item,) = outbox.oldest(collector=collector.url)
            tampered = item.body.replace(b'"ok":true', b'"ok":false', 1)
            assert tampered != item.body
            outbox.acknowledge(batch_id, collector=collector.url)
            outbox.put(batch_id, tampered)
            assert await agent.deliver_pending() is True  # refused for good: not a retry
            assert (outbox.depth(), outbox.rejected_count()) == (0, 1)
            assert await agent.deliver_pending() is True  # and not sent again
            assert (outbox.depth(), outbox.rejected_count()) == (0, 1)
            return batch_id
        finally:
            await agent.aclose()
            outbox.close()

    batch_id = asyncio.run(scenario())
    with sqlite3.connect(outbox_path) as db:
        rows = db.execute("SELECT batch_id, collector, status, reason FROM rejected").fetchall()
    assert len(rows) == 1
    assert rows[0][:3] == (batch_id, collector.url, 422)
    assert "malformed_batch" in rows[0][3]  # ok=false without an unavailability
    assert stored_batches(engine) == {}


@pytest.mark.parametrize("status", [429, 503])
def test_collector_busy_keeps_the_batch(status: int, tmp_path: Path) -> None:
    """Transient refusals (429, 5xx) are retried later, never rejected."""
    seen: list[int] = []

    async def batches(request: Request) -> Response:
        seen.append(len(await request.body()))
        return JSONResponse({"error": {"code": "busy", "message": "later"}}, status_code=status)

    app = Starlette(routes=[Route("/v1/batches", batches, methods=["POST"])])
    with ServerThread(app, name="busy-collector") as server:
        settings = Settings(collector_urls=[server.url], rpc_timeout_s=1.0)

        async def scenario() -> tuple[bool, int, int, list[int]]:
            outbox = Outbox(tmp_path / "busy.outbox.sqlite")
            agent = ProbeAgent(settings=settings, account=Account.create(), outbox=outbox)
            agent.targets = Targets(chains=[])
            try:
                assert await agent.round() is not None
                assert await agent.round() is not None
                delivered = await agent.deliver_pending()
                attempts = [p.attempts for p in outbox.oldest(collector=server.url)]
                return delivered, outbox.depth(), outbox.rejected_count(), attempts
            finally:
                await agent.aclose()
                outbox.close()

        delivered, depth, rejected, attempts = asyncio.run(scenario())
    assert (delivered, depth, rejected) == (False, 2, 0)
    assert attempts == [1, 0]  # stopped at the first refusal
    assert len(seen) == 1 and seen[0] > 0


def test_stop_during_a_round_keeps_its_batch(
    network: Network,
    collector: ServerThread,
    engine: Engine,
    settings: Settings,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """run_probe stopped in the middle of a paced round finishes that round (its visits go on to
    the window's end), and its last delivery pass takes the batch, whole, to the collector,
    which is up: in the database and no longer in the outbox; no error is logged."""
    from monitor.probe.agent import run_probe

    interval_s = 2.0
    key = key_file(network, tmp_path)
    settings = settings.model_copy(
        update={"collector_urls": [collector.url], "key_file": key, "interval_s": interval_s}
    )
    schedule = Schedule(interval_s, bytes.fromhex(network.probes[0].address[2:]))

    async def run() -> None:
        # Start just after a round began: the probe's first round is the next one, and the stop
        # comes half-way through it.
        now = time.time()
        await asyncio.sleep(schedule.start(schedule.round_of(now) + 1) + 0.05 - now)
        first = schedule.round_of(time.time()) + 1
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(
            schedule.start(first) + interval_s / 2 - time.time(), stop.set
        )
        await run_probe(settings, stop=stop)

    with caplog.at_level("INFO"):
        asyncio.run(run())
    outbox = Outbox(key.with_name(key.name + ".outbox.sqlite"))
    try:
        assert (outbox.depth(), outbox.rejected_count()) == (0, 0)
    finally:
        outbox.close()
    assert sum(stored_batches(engine).values()) == 1
    assert result_count(engine) == OPERATORS  # the whole round
    with session_scope(engine) as session:
        bodies = [body.encode() for body in session.scalars(select(Batch.body))]
    # The round finished on open clients: no endpoint was blamed for the probe's own stop.
    assert b'"transport"' not in bodies[0]
    assert any("finishing round" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the database is not the point
def test_stop_with_a_hanging_collector_keeps_the_batch_and_returns_in_time(
    network: Network,
    collector: ServerThread,
    settings: Settings,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A collector that serves targets but never answers a batch: the stop's last delivery pass
    is cut off after STOP_FLUSH_S and the rounds' batches stay in the outbox for the next start."""
    from monitor.probe import agent as agent_module

    async def targets(request: Request) -> Response:
        async with httpx.AsyncClient(base_url=collector.url) as client:
            answer = await client.get("/v1/targets", headers=dict(request.headers))
        return Response(answer.content, answer.status_code, media_type="application/json")

    async def never(request: Request) -> Response:
        await asyncio.sleep(30)
        return JSONResponse({})

    key = key_file(network, tmp_path)
    app = Starlette(
        routes=[Route("/v1/targets", targets), Route("/v1/batches", never, methods=["POST"])]
    )
    with ServerThread(app, name="hanging-collector") as hanging:
        settings = settings.model_copy(
            update={"collector_urls": [hanging.url], "key_file": key, "interval_s": 1.0}
        )
        outbox_file = key.with_name(key.name + ".outbox.sqlite")

        async def run() -> float:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            stopped_at: list[float] = []

            async def stop_once_queued() -> None:  # the first round's batch is on disk
                while outbox_counts(outbox_file)[0] < 1:
                    await asyncio.sleep(0.05)
                stopped_at.append(loop.time())
                stop.set()

            async with asyncio.timeout(30):
                watcher = asyncio.create_task(stop_once_queued())
                await agent_module.run_probe(settings, stop=stop)
                await watcher
            return loop.time() - stopped_at[0]

        with caplog.at_level("INFO"):
            took = asyncio.run(run())
    # The stop finishes the round under way (1 s at most), then cuts the last pass off.
    assert took < 1.0 + agent_module.STOP_FLUSH_S + 3.0, took
    assert any("last delivery pass cut off" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    outbox = Outbox(outbox_file)
    try:
        assert outbox.depth() >= 1 and outbox.rejected_count() == 0
    finally:
        outbox.close()


def test_stop_cuts_a_stuck_round_short_quietly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A round stuck past the stop's allowance (here: a collector that never answers the targets
    request) is cancelled before it queues anything, without an error, and run_probe returns."""
    from monitor.probe.agent import run_probe

    async def never(request: Request) -> Response:
        await asyncio.sleep(30)
        return JSONResponse({})

    key = tmp_path / "probe.key"
    key.write_text(Account.create().key.hex() + "\n")
    key.chmod(0o600)
    app = Starlette(routes=[Route("/v1/targets", never)])
    with ServerThread(app, name="silent-collector") as server:
        settings = Settings(
            collector_urls=[server.url], key_file=key, interval_s=0.1, rpc_timeout_s=0.1
        )

        async def run() -> None:
            stop = asyncio.Event()
            asyncio.get_running_loop().call_later(0.3, stop.set)
            async with asyncio.timeout(20):  # the allowance is max(0.1, 0.3) + 5 s
                await run_probe(settings, stop=stop)

        with caplog.at_level("INFO"):
            asyncio.run(run())
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    assert any("cut short by the stop" in r.getMessage() for r in caplog.records)
    outbox = Outbox(key.with_name(key.name + ".outbox.sqlite"))
    try:
        assert (outbox.depth(), outbox.rejected_count()) == (0, 0)
    finally:
        outbox.close()


def test_a_hostile_collectors_answers_do_not_crash_the_probe() -> None:
    """eth-account raises the recursion limit: json.loads of a deeply nested answer would kill
    the probe (a segfault) and stop its delivery to every other collector too."""
    from monitor.probe.agent import _duplicate, _worth_retrying

    deep = b"[" * 300_000
    assert _worth_retrying(httpx.Response(400, content=deep)) is False  # refused for good
    assert _worth_retrying(httpx.Response(503, content=deep)) is True
    assert _duplicate(httpx.Response(200, content=deep)) is False
    with pytest.raises(ValueError):
        Targets.model_validate_json(deep)  # how targets are read: refused, not recursed


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the database is not the point
def test_a_measuring_process_that_dies_is_replaced_and_rounds_go_on(
    network: Network,
    collector: ServerThread,
    engine: Engine,
    settings: Settings,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """SIGKILL to the probe's measuring process: the probe says so, starts another, and rounds
    keep coming, whole; the stop then ends the new one too (no process is left behind)."""
    import os
    import signal

    from monitor.probe.agent import run_probe

    key = key_file(network, tmp_path)
    settings = settings.model_copy(
        update={"collector_urls": [collector.url], "key_file": key, "interval_s": 1.0}
    )

    def children() -> list[int]:
        out = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                    cmdline = (entry / "cmdline").read_bytes()
                except OSError:
                    continue
                if int(stat[1]) == os.getpid() and b"monitor.probe.pulse" in cmdline:
                    out.append(int(entry.name))
        return out

    async def until(what: str, condition: Any, limit_s: float = 20.0) -> None:
        deadline = asyncio.get_running_loop().time() + limit_s
        while not condition():
            assert asyncio.get_running_loop().time() < deadline, f"no {what}"
            await asyncio.sleep(0.05)

    killed: list[int] = []

    async def run() -> None:
        stop = asyncio.Event()
        probe = asyncio.create_task(run_probe(settings, stop=stop))
        try:
            await until("first batch", lambda: sum(stored_batches(engine).values()) >= 1)
            [pid] = children()
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            before = sum(stored_batches(engine).values())
            await until("another measuring process", lambda: children() not in ([], killed))
            await until(
                "rounds after it", lambda: sum(stored_batches(engine).values()) >= before + 3
            )
        finally:
            stop.set()
            await probe

    with caplog.at_level("INFO"):
        asyncio.run(run())
    assert children() == []
    assert any("measuring process ended" in r.getMessage() for r in caplog.records)
    # Whole rounds, but for the one the kill cut short (the visits it had left were not made).
    assert result_count(engine) >= OPERATORS * (sum(stored_batches(engine).values()) - 1)
