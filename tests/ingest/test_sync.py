"""Collectors pull the signed batches they lack from their peers (monitor.ingest.sync), over real
loopback HTTP, each with its own database (SQLite and PostgreSQL side by side): what one
collector received, every other ends up holding, byte for byte, with the same results and the
same SLA rollups; a partition heals into the union; a peer is never trusted (forged batches are
refused and counted, garbage answers stop nothing but that peer's tick).

Sync ticks are driven by the tests (``sync_peers``), except in the one test of the scheduled
job."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from sqlalchemy import Engine, select

from monitor.db.locks import job_lock
from monitor.db.session import session_scope
from monitor.ingest.models import PeerCursor
from monitor.ingest.service import batch_hash
from monitor.ingest.sync import (
    JOB,
    MAX_PAGES,
    PAGE_LIMIT,
    PeerSync,
    scheduled_sync,
    sync_peers,
)
from monitor.sla.job import run_rollups
from monitor.sla.models import SubjectMinute
from tests.conftest import row_counts
from tests.ingest.support import (
    TIMEOUT,
    Answer,
    FakePeer,
    Node,
    Nodes,
    closed_port_url,
    endpoints,
    post,
    signed_body,
    write_registry,
)
from tests.support.postgres import PostgresCluster

pytestmark = pytest.mark.postgres

WAIT_S = 10.0


@pytest.fixture
def probes() -> list[LocalAccount]:
    return [Account.create() for _ in range(2)]


@pytest.fixture
def nodes(
    tmp_path: Path, probes: list[LocalAccount], sqlite_template: Path, pg_cluster: PostgresCluster
) -> Iterator[Nodes]:
    registry = write_registry(tmp_path / "registry.yaml", probes)
    started = Nodes(tmp_path, registry, sqlite_template=sqlite_template, pg=pg_cluster)
    try:
        yield started
    finally:
        started.stop_all()


def sync(
    node: Node,
    peers: list[str],
    *,
    page_limit: int = PAGE_LIMIT,
    max_pages: int = MAX_PAGES,
    **overrides: Any,
) -> list[PeerSync]:
    """One sync tick of ``node`` with ``peers`` (and these settings)."""
    return sync_peers(
        node.engine,
        node.settings(peers, **overrides),
        metrics=node.metrics,
        page_limit=page_limit,
        max_pages=max_pages,
    )


def cursor_row(engine: Engine, peer: str) -> PeerCursor | None:
    with session_scope(engine) as session:
        return session.get(PeerCursor, peer)


def subject_minutes(node: Node) -> set[tuple[Any, ...]]:
    run_rollups(node.engine, node.settings([]))
    with session_scope(node.engine) as session:
        return {
            (m.chain_id, m.operator_id, m.minute, m.state, m.reasons, m.probes, m.samples)
            for m in session.scalars(select(SubjectMinute))
        }


def page(entries: list[dict[str, str]], next_: str, *, more: bool = False) -> bytes:
    return json.dumps({"batches": entries, "next": next_, "more": more}).encode()


def entry(body: bytes) -> dict[str, str]:
    return {"hash": batch_hash(body), "body": body.decode()}


# --- the same batches everywhere ----------------------------------------------------------------


def test_batches_posted_to_one_collector_reach_every_other(
    nodes: Nodes, probes: list[LocalAccount]
) -> None:
    a = nodes.start("a", "sqlite")
    b = nodes.start("b", "postgresql")
    c = nodes.start("c", "sqlite")
    targets = endpoints(a.engine)
    assert endpoints(b.engine) == endpoints(c.engine) == targets  # ids come from the registry
    bodies = [signed_body(probes[0], targets) for _ in range(3)]
    bodies.append(signed_body(probes[1], targets))
    bodies.append(signed_body(probes[1], targets, ago_s=600))  # late: an outbox catching up
    for body in bodies:
        post(a.url, body)

    [outcome] = sync(b, [a.url])
    assert (outcome.error, outcome.stored, outcome.refused) == (None, 5, Counter())
    assert b.hashes() == a.hashes() == {batch_hash(body) for body in bodies}
    assert b.results() == a.results() == 5 * len(targets)
    # C hears of them only through B: the bodies stay exact from hop to hop.
    [outcome] = sync(c, [b.url])
    assert (outcome.error, outcome.stored) == (None, 5)
    assert c.hashes() == a.hashes() and c.results() == a.results()
    stored = httpx.get(f"{c.url}/v1/batches/{batch_hash(bodies[-1])}", timeout=TIMEOUT)
    assert stored.content == bodies[-1]

    # Pulled batches count like posted ones: the same SLA minutes, the late one's included.
    minutes = subject_minutes(a)
    assert subject_minutes(b) == subject_minutes(c) == minutes
    assert len({m[2] for m in minutes}) >= 2

    # Nothing new: nothing pulled, the cursor stays.
    [again] = sync(b, [a.url])
    assert (again.error, again.pulled) == (None, 0)
    row = cursor_row(b.engine, a.url)
    assert row is not None and row.last_success_at is not None and row.last_error is None
    assert row.cursor == again.cursor != "0"
    stored_metric = "monitor_peer_batches_stored_total"
    assert b.sample(stored_metric, peer=a.url, outcome="accepted") == 5
    assert b.sample("monitor_peer_batches_pulled_total", peer=a.url) == 5
    assert b.sample("monitor_peer_last_success_timestamp_seconds", peer=a.url) > 0


def test_pages_are_followed_and_bounded_per_tick(nodes: Nodes, probes: list[LocalAccount]) -> None:
    a = nodes.start("a", "postgresql")
    b = nodes.start("b", "sqlite")
    targets = endpoints(a.engine)
    for i in range(7):
        post(a.url, signed_body(probes[i % 2], targets))

    [first] = sync(b, [a.url], page_limit=2, max_pages=2)
    assert (first.error, first.pages, first.stored) == (None, 2, 4)  # the rest next tick
    assert len(b.hashes()) == 4
    [second] = sync(b, [a.url], page_limit=2, max_pages=2)
    assert (second.error, second.pages, second.stored) == (None, 2, 3)
    assert b.hashes() == a.hashes() and b.results() == a.results()
    [third] = sync(b, [a.url], page_limit=2, max_pages=2)
    assert (third.pages, third.pulled) == (1, 0)


def test_a_partition_heals_into_the_union(nodes: Nodes, probes: list[LocalAccount]) -> None:
    a = nodes.start("a", "sqlite")
    b = nodes.start("b", "postgresql")
    targets = endpoints(a.engine)
    only_a = [signed_body(probes[0], targets) for _ in range(3)]
    only_b = [signed_body(probes[1], targets) for _ in range(2)]
    both = signed_body(probes[0], targets)  # a probe delivering to every collector
    for body in [*only_a, both]:
        post(a.url, body)
    for body in [*only_b, both]:
        post(b.url, body)

    # Partitioned: each one's peer is unreachable. Logged, counted, recorded; nothing stored.
    unreachable = closed_port_url()
    for node in (a, b):
        before = node.hashes()
        [outcome] = sync(node, [unreachable])
        assert outcome.error == "peer_unreachable"
        assert node.hashes() == before
        row = cursor_row(node.engine, unreachable)
        assert row is not None and row.last_error is not None
        assert row.last_error.startswith("peer_unreachable") and row.cursor == "0"
        failures = "monitor_peer_sync_failures_total"
        assert node.sample(failures, peer=unreachable, reason="peer_unreachable") == 1

    partial = subject_minutes(a)  # judged on A's half: to be re-judged with B's batches

    # Healed: one tick each way, and both hold the union.
    [pulled_by_a] = sync(a, [b.url])
    [pulled_by_b] = sync(b, [a.url])
    union = {batch_hash(body) for body in [*only_a, *only_b, both]}
    assert a.hashes() == b.hashes() == union
    assert a.results() == b.results() == len(union) * len(targets)
    assert (pulled_by_a.stored, pulled_by_a.duplicates) == (2, 1)
    # B also gets back from A what A took from B: already held, nothing written.
    assert (pulled_by_b.stored, pulled_by_b.duplicates) == (3, 3)
    [settled] = sync(a, [b.url])
    assert (settled.stored, settled.duplicates) == (0, 3)
    healed = subject_minutes(a)
    assert healed == subject_minutes(b) and healed != partial


# --- a peer is never trusted --------------------------------------------------------------------


def test_forged_batches_from_a_peer_are_refused_and_skipped(
    nodes: Nodes, probes: list[LocalAccount]
) -> None:
    b = nodes.start("b", "postgresql")
    targets = endpoints(b.engine)

    tampered = json.loads(signed_body(probes[0], targets))
    tampered["results"][0]["latency_us"] += 1  # altered after signing
    impostor = json.loads(signed_body(Account.create(), targets))
    impostor["message"]["probe"] = probes[0].address  # another key, claiming a probe
    unregistered = signed_body(Account.create(), targets)
    good = signed_body(probes[1], targets)
    misnamed = entry(signed_body(probes[0], targets))
    misnamed["hash"] = batch_hash(b"something else")
    forged = [
        entry(json.dumps(tampered).encode()),
        entry(json.dumps(impostor).encode()),
        entry(unregistered),
        misnamed,
        entry(b'{"message": {}}'),
        entry(good),  # after the bad ones: the sync goes on
    ]

    def answer(since: str, _: str) -> Answer:
        return (200, page(forged, "6")) if since == "0" else (200, page([], since))

    with FakePeer(answer) as peer:
        [outcome] = sync(b, [peer.url])
        assert outcome.error is None
        assert outcome.refused == Counter(
            {
                "results_hash_mismatch": 1,
                "bad_signature": 1,
                "unknown_probe": 1,
                "hash_mismatch": 1,
                "malformed_batch": 1,
            }
        )
        assert b.hashes() == {batch_hash(good)} and b.results() == len(targets)
        for code, count in outcome.refused.items():
            labels = {"peer": peer.url, "code": code}
            assert b.sample("monitor_peer_batches_refused_total", **labels) == count
        # Skipped for good: the cursor moved past them, and the next tick asks from there.
        assert outcome.cursor == "6"
        [again] = sync(b, [peer.url])
        assert (again.pulled, peer.asked) == (0, ["0", "6"])


GARBAGE = {
    "500": (500, b'{"error": {"code": "internal_error", "message": "boom"}}', "peer_http_status"),
    "not json": (200, b"<html>hello</html>", "peer_malformed"),
    "wrong shape": (200, b'{"batches": "none", "next": "1", "more": false}', "peer_malformed"),
    "hostile cursor": (200, b'{"batches": [], "next": "1; DROP", "more": false}', "peer_malformed"),
    "too large": (200, b" " * (9 * 1024 * 1024), "peer_too_large"),  # over the cap below
}


@pytest.mark.parametrize("case", GARBAGE)
def test_a_peer_answering_garbage_stops_only_its_own_tick(
    nodes: Nodes, probes: list[LocalAccount], case: str
) -> None:
    status, body, code = GARBAGE[case]
    b = nodes.start("b", "sqlite")
    good = signed_body(probes[0], endpoints(b.engine))
    answers = {"garbage": (status, body)}
    with (
        FakePeer(lambda since, _: answers["garbage"]) as bad,
        FakePeer(lambda since, _: (200, page([entry(good)] if since == "0" else [], "1"))) as fine,
    ):
        before = row_counts(b.engine)
        outcomes = sync(b, [bad.url, fine.url], max_body_bytes=64 * 1024)
        assert [o.error for o in outcomes] == [code, None], case
        after = row_counts(b.engine)
        assert after["batches"] == before["batches"] + 1, case  # the good peer's only
        assert b.hashes() == {batch_hash(good)}, case
        row = cursor_row(b.engine, bad.url)
        assert row is not None and row.cursor == "0", case
        assert row.last_error is not None and row.last_error.startswith(code), case
        assert b.sample("monitor_peer_sync_failures_total", peer=bad.url, reason=code) == 1

        # The peer recovers: its error is cleared by the next whole sync.
        answers["garbage"] = (200, page([], "0"))
        [recovered, _] = sync(b, [bad.url, fine.url])
        assert recovered.error is None, case
        row = cursor_row(b.engine, bad.url)
        assert row is not None and row.last_error is None and row.last_success_at is not None


def test_a_slow_or_stuck_peer_is_bounded(nodes: Nodes, probes: list[LocalAccount]) -> None:
    b = nodes.start("b", "sqlite")
    good = signed_body(probes[0], endpoints(b.engine))

    # A page that claims more but does not move the cursor: refused before anything is stored.
    with FakePeer(lambda since, _: (200, page([entry(good)], since, more=True))) as stuck:
        [outcome] = sync(b, [stuck.url])
        assert outcome.error == "peer_malformed" and b.hashes() == set()

    # A peer that always has more: MAX pages a tick, then the next tick goes on.
    with FakePeer(lambda since, _: (200, page([], str(int(since) + 1), more=True))) as endless:
        [outcome] = sync(b, [endless.url], max_pages=3)
        assert (outcome.error, outcome.pages, endless.asked) == (None, 3, ["0", "1", "2"])

    # Slower than the timeout: unreachable this tick.
    with FakePeer(lambda since, _: (200, page([], since)), delay_s=1.0) as slow:
        started = time.monotonic()
        [outcome] = sync(b, [slow.url], peer_timeout_s=0.3)
        assert outcome.error == "peer_unreachable"
        assert time.monotonic() - started < 1.0


# --- the scheduled job --------------------------------------------------------------------------


def test_the_scheduled_job_syncs_and_one_replica_at_a_time(
    nodes: Nodes, probes: list[LocalAccount]
) -> None:
    a = nodes.start("a", "sqlite")
    b = nodes.start("b", "postgresql", scheduler=True, peers=[a.url], sync_interval_s=0.2)
    for _ in range(2):
        post(a.url, signed_body(probes[0], endpoints(a.engine)))
    deadline = time.monotonic() + WAIT_S
    while b.hashes() != a.hashes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert b.hashes() == a.hashes()
    metrics = httpx.get(f"{b.url}/metrics", timeout=TIMEOUT).text
    assert f'monitor_peer_batches_stored_total{{outcome="accepted",peer="{a.url}"}} 2.0' in metrics

    # Another replica holds the job: this one skips its tick.
    while time.monotonic() < deadline + WAIT_S:
        with job_lock(b.engine, JOB) as mine:
            if mine:
                assert scheduled_sync(b.engine, b.settings([a.url])) is None
                break
        time.sleep(0.01)
    else:
        pytest.fail("the sync job's lock was never free")
