"""GET /v1/batches over real loopback HTTP, on SQLite and on PostgreSQL: the stored batches in
storage order, each exactly as received, a page at a time; bounded by count and bytes; only
batches that have settled; a bad cursor or limit is a 422 that changes nothing. It shares its
path with POST /v1/batches and its prefix with GET /v1/batches/{hash}, all three answering."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from sqlalchemy import Engine, select, update

from monitor.app import create_app
from monitor.db.models import Batch
from monitor.db.session import session_scope
from monitor.ingest.feed import batches_since
from monitor.ingest.service import batch_hash
from monitor.registry.apply import apply_registry
from monitor.registry.schema import load_registry
from monitor.serving import ServerThread
from monitor.settings import Settings
from tests.conftest import make_settings, row_counts
from tests.ingest.support import TIMEOUT, endpoints, post, signed_body, write_registry


@pytest.fixture
def settings(database_url: str) -> Settings:
    """The collector fixture's settings: batches served as soon as they are stored."""
    return make_settings(database_url, batches_settle_s=0)


@pytest.fixture
def probe(engine: Engine, tmp_path: Path) -> LocalAccount:
    account = Account.create()
    registry = write_registry(tmp_path / "registry.yaml", [account])
    with session_scope(engine) as session:
        apply_registry(session, registry=load_registry(registry))
    return account


def get(url: str, **params: Any) -> httpx.Response:
    return httpx.get(f"{url}/v1/batches", params=params, timeout=TIMEOUT)


def posted(url: str, engine: Engine, probe: LocalAccount, count: int) -> list[bytes]:
    bodies = [signed_body(probe, endpoints(engine)) for _ in range(count)]
    for body in bodies:
        post(url, body)
    return bodies


def test_pages_in_storage_order_with_exact_bodies(
    collector: ServerThread, engine: Engine, probe: LocalAccount
) -> None:
    bodies = posted(collector.url, engine, probe, 5)
    seen: list[str] = []
    cursor = "0"
    for _ in range(10):
        response = get(collector.url, since=cursor, limit=2)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        page = response.json()
        assert set(page) == {"batches", "next", "more"}
        for item in page["batches"]:
            raw = item["body"].encode()
            assert "0x" + keccak(raw).hex() == item["hash"]
            by_hash = httpx.get(f"{collector.url}/v1/batches/{item['hash']}", timeout=TIMEOUT)
            assert by_hash.content == raw  # the same bytes the attestation evidence hashes
            seen.append(item["hash"])
        assert len(page["batches"]) == (2 if page["more"] else 1)
        cursor = page["next"]
        if not page["more"]:
            break
    assert seen == [batch_hash(body) for body in bodies]  # in the order they were stored

    # Past the end: an empty page that keeps the cursor.
    assert get(collector.url, since=cursor).json() == {"batches": [], "next": cursor, "more": False}
    # Defaults: from the start, up to 100.
    everything = get(collector.url).json()
    assert [b["hash"] for b in everything["batches"]] == seen
    assert (everything["next"], everything["more"]) == (cursor, False)


BAD_QUERIES: list[tuple[dict[str, str], str]] = [
    ({"since": "abc"}, "malformed_cursor"),
    ({"since": "-1"}, "malformed_cursor"),
    ({"since": "1.5"}, "malformed_cursor"),
    ({"since": ""}, "malformed_cursor"),
    ({"since": "9223372036854775808"}, "malformed_cursor"),  # past a bigint
    ({"since": "9" * 65}, "invalid_request"),
    ({"limit": "0"}, "invalid_request"),
    ({"limit": "1001"}, "invalid_request"),
    ({"limit": "ten"}, "invalid_request"),
    ({"limit": "-5"}, "invalid_request"),
]


def test_bad_cursor_or_limit_is_422(
    collector: ServerThread, engine: Engine, probe: LocalAccount
) -> None:
    posted(collector.url, engine, probe, 1)
    before = row_counts(engine)
    for params, code in BAD_QUERIES:
        response = get(collector.url, **params)
        assert response.status_code == 422, (params, response.text)
        body = response.json()
        assert set(body) == {"error"} and body["error"]["code"] == code, (params, body)
        assert isinstance(body["error"]["message"], str) and body["error"]["message"], params
    assert row_counts(engine) == before


def test_pages_are_bounded_by_bytes_and_wait_for_settled_batches(
    collector: ServerThread, engine: Engine, probe: LocalAccount
) -> None:
    bodies = posted(collector.url, engine, probe, 3)
    now = datetime.now(UTC) + timedelta(seconds=1)
    with session_scope(engine) as session:
        ids = list(session.scalars(select(Batch.id).order_by(Batch.id)))
        # A page holds at least one batch, however small the byte bound.
        one = batches_since(session, since=0, limit=10, settled_before=now, max_bytes=1)
        assert ([b.hash for b in one.batches], one.next, one.more) == (
            [batch_hash(bodies[0])],
            str(ids[0]),
            True,
        )
        two = batches_since(
            session, since=0, limit=10, settled_before=now, max_bytes=len(bodies[0] + bodies[1])
        )
        assert [b.hash for b in two.batches] == [batch_hash(b) for b in bodies[:2]]
        # Nothing settled yet: an empty page, the cursor where it was.
        early = datetime.now(UTC) - timedelta(hours=1)
        none = batches_since(session, since=0, limit=10, settled_before=early)
        assert (none.batches, none.next, none.more) == ([], "0", False)

    # The second batch stored "later" than the third (an id taken before a slower commit): the
    # page stops before it, so the cursor can never pass a batch not yet visible.
    with session_scope(engine) as session:
        session.execute(
            update(Batch).where(Batch.id == ids[1]).values(received_at=now + timedelta(hours=1))
        )
    with session_scope(engine) as session:
        held = batches_since(session, since=0, limit=10, settled_before=now)
    assert ([b.hash for b in held.batches], held.next, held.more) == (
        [batch_hash(bodies[0])],
        str(ids[0]),
        False,
    )


def test_batches_settle_before_they_are_served(
    database_url: str, engine: Engine, probe: LocalAccount
) -> None:
    app = create_app(
        make_settings(database_url, batches_settle_s=3600), engine=engine, scoring=False
    )
    with ServerThread(app, name="settling") as server:
        posted(server.url, engine, probe, 1)
        assert get(server.url).json() == {"batches": [], "next": "0", "more": False}
