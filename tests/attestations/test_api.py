"""Attestations over real loopback HTTP, on SQLite and on PostgreSQL: probes post signed batches
of the hand-computed fixture (tests/attestations/support.py), an admin issues attestations, and
they are checked with a plain eth-account call and with ``monitor verify`` (a subprocess) on the
URL and on a saved bundle; then every refusal, with the error shape and nothing stored."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak
from sqlalchemy import Engine, delete

from monitor.app import create_app
from monitor.db.models import Result
from monitor.db.session import session_scope
from monitor.ingest.service import batch_hash
from monitor.serving import ServerThread
from monitor.settings import Settings
from monitor.signing.collector import ATTESTATION_TYPE_HASH
from monitor.sla.penalties import PenaltyPolicy, policy_hash
from tests.attestations.support import (
    BEFORE_LATE,
    CHAIN,
    FINAL,
    TOKEN,
    VERDICTS,
    Fleet,
    make_fleet,
    scenario,
)
from tests.conftest import make_settings, row_counts
from tests.test_api import assert_error
from tests.test_cli import monitor

TIMEOUT = 10.0


@pytest.fixture
def settings(database_url: str) -> Settings:
    """The suite's collector settings, with an admin token."""
    return make_settings(database_url, admin_token=TOKEN)


@dataclass
class World:
    url: str
    engine: Engine
    fleet: Fleet
    start: datetime
    end: datetime
    bodies: list[str]
    late: str


def post_batch(url: str, body: str) -> None:
    response = httpx.post(
        f"{url}/v1/batches",
        content=body.encode(),
        headers={"content-type": "application/json"},
        timeout=TIMEOUT,
    )
    assert response.status_code == 200, response.text


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def issue(
    url: str, start: datetime | str, end: datetime | str, *, token: str | None = TOKEN, **body: Any
) -> httpx.Response:
    payload = {
        "operator_id": "alpha",
        "chain_id": CHAIN,
        "start": iso(start) if isinstance(start, datetime) else start,
        "end": iso(end) if isinstance(end, datetime) else end,
        **body,
    }
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return httpx.post(f"{url}/v1/attestations", json=payload, headers=headers, timeout=TIMEOUT)


def get(url: str, path: str, **params: Any) -> Any:
    response = httpx.get(f"{url}{path}", params=params, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def world(collector: ServerThread, engine: Engine) -> World:
    """The registry applied and the three probes' batches posted; the late batch is not yet."""
    fleet = make_fleet(engine)
    now = datetime.now(UTC)
    start = now.replace(second=0, microsecond=0) - timedelta(minutes=9)
    bodies, late = scenario(fleet, start, created=now)
    for body in bodies:
        post_batch(collector.url, body)
    return World(collector.url, engine, fleet, start, start + timedelta(minutes=6), bodies, late)


def issued(world: World, start: datetime, end: datetime) -> dict[str, Any]:
    response = issue(world.url, start, end)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"id", "typed_data", "signature", "signer", "policy", "cosignatures"}
    assert body["cosignatures"] == []
    return body


def test_round_trip_verified_by_eth_account_and_monitor_verify(
    world: World, tmp_path: Path
) -> None:
    identity = get(world.url, "/v1/identity")
    assert identity["eip712"]["type_hashes"]["Attestation"] == ATTESTATION_TYPE_HASH
    assert "Attestation" in identity["eip712"]["types"]

    before = issued(world, world.start, world.end)
    assert before["typed_data"]["message"]["figures"] == BEFORE_LATE
    assert before["typed_data"]["message"]["batchCount"] == 3
    post_batch(world.url, world.late)  # from P1's outbox: minute 2 now has a quorum
    after = issued(world, world.start, world.end)
    typed, signature = after["typed_data"], after["signature"]
    message = typed["message"]
    assert message["figures"] == FINAL
    assert message["verdicts"] == VERDICTS
    assert message["subject"] == {"chainId": CHAIN, "operatorId": "alpha"}
    assert message["period"] == {
        "start": int(world.start.timestamp()),
        "end": int(world.end.timestamp()),
    }
    assert message["probes"] == sorted((a.address for a in world.fleet.probes), key=str.lower)
    assert message["recommendation"] == {
        "violations": [
            {"kind": "availability", "repeated": False, "penaltyBps": 100},
            {"kind": "lag", "repeated": False, "penaltyBps": 50},
        ],
        "penaltyBps": 150,
    }
    assert after["policy"] == PenaltyPolicy().model_dump(mode="json")
    assert message["policyHash"] == policy_hash(PenaltyPolicy())

    # (a) a plain eth-account call recovers the collector's published address
    recovered = Account.recover_message(encode_typed_data(full_message=typed), signature=signature)
    assert recovered == identity["address"] == after["signer"]

    # Served as issued; the evidence and every raw batch, byte for byte.
    assert get(world.url, f"/v1/attestations/{after['id']}") == after
    evidence = get(world.url, f"/v1/attestations/{after['id']}/evidence")
    raw = {batch_hash(b.encode()): b for b in [*world.bodies, world.late]}
    assert evidence == {"root": message["evidenceRoot"], "batch_hashes": sorted(raw)}
    for digest, body in raw.items():
        response = httpx.get(f"{world.url}/v1/batches/{digest}", timeout=TIMEOUT)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.content == body.encode()
        assert "0x" + keccak(response.content).hex() == digest

    # The next minute, attested later: availability again breached, now a repeated offence.
    following = issued(world, world.end, world.end + timedelta(minutes=1))
    assert following["typed_data"]["message"]["recommendation"] == {
        "violations": [{"kind": "availability", "repeated": True, "penaltyBps": 300}],
        "penaltyBps": 300,
    }
    listed = get(world.url, "/v1/attestations", operator_id="alpha", chain_id=CHAIN)
    assert [a["id"] for a in listed] == [following["id"], after["id"], before["id"]]
    assert listed[1]["violations"] == ["availability", "lag"]
    assert listed[1]["batch_count"] == 4
    assert get(world.url, "/v1/attestations", operator_id="bravo") == []
    assert len(get(world.url, "/v1/attestations", limit=1)) == 1

    # (b) monitor verify, as a user runs it: on the URL, and on a saved bundle
    url = f"{world.url}/v1/attestations/{after['id']}"
    proc = monitor("verify", url, "--signer", identity["address"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[-1] == "VERIFIED"
    assert not [line for line in lines if line.startswith("FAIL")]
    assert any(line.startswith("ok figures recomputed") for line in lines)
    bundle = httpx.get(f"{url}/bundle", timeout=TIMEOUT)
    assert bundle.headers["content-type"] == "application/json"
    assert sorted(bundle.json()["batches"]) == sorted(raw.values())
    saved = tmp_path / "bundle.json"
    saved.write_bytes(bundle.content)
    proc = monitor("verify", str(saved))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "VERIFIED"
    for attestation in (before, following):
        bundle_of = get(world.url, f"/v1/attestations/{attestation['id']}/bundle")
        assert bundle_of["attestation"] == attestation


def test_refusals_have_the_error_shape_and_store_nothing(
    world: World, engine: Engine, database_url: str
) -> None:
    url, start, end = world.url, world.start, world.end
    now = datetime.now(UTC)
    counts = row_counts(engine)

    assert_error(issue(url, start, end, token=None), 401, "unauthorized")
    assert_error(issue(url, start, end, token="wrong"), 401, "unauthorized")
    basic = httpx.post(
        f"{url}/v1/attestations", json={}, headers={"Authorization": f"Basic {TOKEN}"}
    )
    assert_error(basic, 401, "unauthorized")
    assert_error(issue(url, start, end, operator_id="nobody"), 404, "unknown_operator")
    assert_error(issue(url, start, end, chain_id=999), 404, "unknown_chain")
    minute = timedelta(minutes=1)
    for bad_start, bad_end in [
        (end, start),  # reversed
        (start, start),  # empty
        (start - timedelta(days=401), start),  # too long
        (start, now + 2 * minute),  # not over yet
        (start + timedelta(seconds=30), end),  # not a whole minute
    ]:
        assert_error(issue(url, bad_start, bad_end), 422, "bad_period")
    assert_error(issue(url, "2026-11-02T10:00:00", iso(end)), 422, "invalid_request")  # no zone
    assert_error(issue(url, start, end, extra=1), 422, "invalid_request")
    before_1970 = issue(url, "1969-12-31T23:00:00Z", "1969-12-31T23:01:00Z")
    assert_error(before_1970, 422, "bad_period")
    year_0 = issue(url, "0001-01-01T00:00:00+01:00", "0001-01-01T00:01:00+01:00")  # in UTC
    assert_error(year_0, 422, "invalid_request")
    garbage = httpx.post(
        f"{url}/v1/attestations",
        content=b"{not json",
        headers={"Authorization": f"Bearer {TOKEN}", "content-type": "application/json"},
    )
    assert_error(garbage, 422, "invalid_request")
    quiet = issue(url, start - 30 * minute, start - 20 * minute)  # no batch then
    assert "kept for 14 days" in assert_error(quiet, 409, "no_evidence")["message"]
    old = issue(url, start - timedelta(days=20), start - timedelta(days=19))
    assert "14 days" in assert_error(old, 409, "no_evidence")["message"]

    assert_error(httpx.get(f"{url}/v1/attestations/987654"), 404, "unknown_attestation")
    assert_error(httpx.get(f"{url}/v1/attestations/987654/evidence"), 404, "unknown_attestation")
    assert_error(httpx.get(f"{url}/v1/attestations/987654/bundle"), 404, "unknown_attestation")
    assert_error(httpx.get(f"{url}/v1/attestations/0"), 422, "invalid_request")
    assert_error(httpx.get(f"{url}/v1/batches/0x" + "ab" * 32), 404, "unknown_batch")
    assert_error(httpx.get(f"{url}/v1/batches/0x1234"), 422, "malformed_hash")
    assert_error(httpx.get(f"{url}/v1/attestations?limit=0"), 422, "invalid_request")

    # Without a token configured, issuing is disabled for everyone.
    plain = ServerThread(
        create_app(make_settings(database_url), engine=engine, scoring=False), name="no-admin"
    )
    plain.start()
    try:
        assert_error(issue(plain.url, start, end), 403, "admin_disabled")
        assert_error(issue(plain.url, start, end, token=None), 403, "admin_disabled")
    finally:
        plain.stop()
    assert row_counts(engine) == counts

    # Raw results purged (retention): the batches alone are not evidence of the period.
    with session_scope(engine) as session:
        session.execute(delete(Result).where(Result.operator_id == "alpha"))
    counts = row_counts(engine)
    assert_error(issue(url, start, end), 409, "no_evidence")
    assert row_counts(engine) == counts
