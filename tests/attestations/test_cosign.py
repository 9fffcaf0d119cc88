"""Co-signed attestations between two independently operated collectors over real loopback HTTP:
A on SQLite, B on PostgreSQL, each with its own key, database and admin token, the same registry
(which lists both as collectors), and the same signed batches posted to both.

A issues; B countersigns from its own copy of the batches; A stores B's cosignature; the bundle
verifies with ``--threshold 2`` over both registered collectors and fails with 3. B holding one
batch less refuses with a 409 that names the difference; forged, misplaced or outsider
signatures are refused and store nothing; an outsider checks a cosignature with eth-account
alone; ``monitor attest cosign`` does the whole flow in one command."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from sqlalchemy import Engine, select

from monitor.app import create_app
from monitor.attestations.cosign import MAX_COSIGNATURES, add_cosignature, differences
from monitor.attestations.schemas import Cosignature
from monitor.attestations.service import attestation_out, get_attestation, issue_attestation
from monitor.cli import main
from monitor.db.models import Endpoint
from monitor.db.session import make_engine, session_scope
from monitor.exceptions import TooManyCosignatures
from monitor.ingest.service import store_batch
from monitor.registry.apply import apply_registry
from monitor.registry.schema import parse_registry
from monitor.serving import ServerThread
from monitor.signing.collector import sign_typed
from monitor.signing.keys import load_key
from tests.attestations.support import Fleet, make_fleet, registry, scenario
from tests.attestations.test_api import iso, post_batch
from tests.conftest import TEMPLATE_DB, make_settings, row_counts
from tests.support.postgres import PostgresCluster
from tests.test_api import assert_error
from tests.test_cli import monitor

pytestmark = pytest.mark.postgres

TIMEOUT = 10.0
TOKEN_A, TOKEN_B = "token-of-collector-a", "token-of-collector-b"


@dataclass
class Collector:
    url: str
    engine: Engine
    account: LocalAccount  # its signing key (read back from its key file: forgeries need it)
    token: str


@dataclass
class Pair:
    a: Collector
    b: Collector
    outsider: LocalAccount  # a key no registry lists
    full: datetime  # a period whose batches both collectors hold
    partial: datetime  # a period of which B lacks the late batch


@pytest.fixture(scope="module")
def pair(
    sqlite_template: Path, pg_cluster: PostgresCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pair]:
    tmp = tmp_path_factory.mktemp("cosign")
    shutil.copy(sqlite_template, tmp / "a.db")
    database = f"cosign_{os.getpid()}"
    pg_cluster.create_database(database, template=TEMPLATE_DB)
    urls = {"a": f"sqlite:///{tmp / 'a.db'}", "b": pg_cluster.url(database)}
    engines = {name: make_engine(url) for name, url in urls.items()}
    servers: list[ServerThread] = []
    try:
        apps = {
            name: create_app(
                make_settings(urls[name], admin_token=token, service_key_file=tmp / f"{name}.key"),
                engine=engines[name],
                scoring=False,
            )
            for name, token in (("a", TOKEN_A), ("b", TOKEN_B))
        }
        probes = [Account.create() for _ in range(3)]
        document = registry(probes)
        document["collectors"] = [
            {"address": apps[n].state.service_account.address, "name": f"collector {n}"}
            for n in ("a", "b")
        ]
        for engine in engines.values():
            with session_scope(engine) as session:
                apply_registry(
                    session, registry=parse_registry(yaml.safe_dump(document), source="test")
                )
        ids: list[dict[str, int]] = []
        for engine in engines.values():
            with session_scope(engine) as session:
                ids.append(
                    {o: e for o, e in session.execute(select(Endpoint.operator_id, Endpoint.id))}
                )
        assert ids[0] == ids[1]  # registry-derived: the same on every collector
        fleet = Fleet(probes, ids[0])
        for name in ("a", "b"):
            servers.append(ServerThread(apps[name], name=f"collector-{name}"))
            servers[-1].start()
        a, b = (
            Collector(s.url, engines[n], load_key(tmp / f"{n}.key"), t)
            for s, n, t in zip(servers, ("a", "b"), (TOKEN_A, TOKEN_B), strict=True)
        )
        now = datetime.now(UTC)
        full = now.replace(second=0, microsecond=0) - timedelta(minutes=20)
        partial = full + timedelta(minutes=10)
        for start, to_b in ((full, True), (partial, False)):
            bodies, late = scenario(fleet, start, created=now)
            for body in bodies:
                post_batch(a.url, body)
                post_batch(b.url, body)
            post_batch(a.url, late)
            if to_b:
                post_batch(b.url, late)
        yield Pair(a, b, Account.create(), full, partial)
    finally:
        for server in servers:
            server.stop()
        for engine in engines.values():
            engine.dispose()
        pg_cluster.drop_database(database)


def issue(c: Collector, start: datetime, minutes: int = 6) -> dict[str, Any]:
    payload = {
        "operator_id": "alpha",
        "chain_id": 1,
        "start": iso(start),
        "end": iso(start + timedelta(minutes=minutes)),
    }
    headers = {"Authorization": f"Bearer {c.token}"}
    response = httpx.post(f"{c.url}/v1/attestations", json=payload, headers=headers)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def countersign(c: Collector, attestation: dict[str, Any], token: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token or c.token}"}
    return httpx.post(
        f"{c.url}/v1/attestations/cosign", json=attestation, headers=headers, timeout=TIMEOUT
    )


def add(c: Collector, attestation_id: int, **body: Any) -> httpx.Response:
    return httpx.post(
        f"{c.url}/v1/attestations/{attestation_id}/cosign", json=body, timeout=TIMEOUT
    )


def get(c: Collector, path: str) -> Any:
    response = httpx.get(f"{c.url}{path}", timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    return response.json()


def verify(capsys: pytest.CaptureFixture[str], path: Path, *args: str) -> tuple[int, list[str]]:
    """``monitor verify`` in this process; ``monitor attest cosign`` below runs as a process."""
    with pytest.raises(SystemExit) as exit_info:
        main(["verify", str(path), *args])
    return int(exit_info.value.code or 0), capsys.readouterr().out.strip().splitlines()


def test_issued_countersigned_stored_and_verified_with_a_threshold(
    pair: Pair, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    a, b = pair.a, pair.b
    issued = issue(a, pair.full)
    assert issued["cosignatures"] == []
    served = get(a, f"/v1/attestations/{issued['id']}")

    # B countersigns the attestation exactly as A serves it.
    response = countersign(b, served)
    assert response.status_code == 201, response.text
    signed = response.json()
    assert signed["signer"] == b.account.address != a.account.address
    # An outsider checks the cosignature with eth-account alone, over A's typed data.
    recovered = Account.recover_message(
        encode_typed_data(full_message=served["typed_data"]), signature=signed["signature"]
    )
    assert recovered == b.account.address

    # B now serves the same attestation (its own id), A's signature where it was, its own beside.
    at_b = get(b, f"/v1/attestations/{signed['attestation_id']}")
    assert at_b["typed_data"] == served["typed_data"]
    assert (at_b["signer"], at_b["signature"]) == (served["signer"], served["signature"])
    assert at_b["policy"] == served["policy"]
    assert at_b["cosignatures"] == [{"signer": signed["signer"], "signature": signed["signature"]}]
    bundle_b = get(b, f"/v1/attestations/{signed['attestation_id']}/bundle")
    bundle_a = get(a, f"/v1/attestations/{issued['id']}/bundle")
    assert sorted(bundle_b["batches"]) == sorted(bundle_a["batches"])

    # Asking again: the same signature, nothing stored.
    counts_b = row_counts(b.engine)
    again = countersign(b, served)
    assert (again.status_code, again.json()) == (200, signed)
    assert row_counts(b.engine) == counts_b

    # A stores B's cosignature (public: it proves itself), once.
    cosignature = {"signer": signed["signer"], "signature": signed["signature"]}
    stored = add(a, issued["id"], **cosignature)
    assert (stored.status_code, stored.json()) == (201, cosignature)
    counts_a = row_counts(a.engine)
    assert add(a, issued["id"], **cosignature).status_code == 200
    assert row_counts(a.engine) == counts_a
    served = get(a, f"/v1/attestations/{issued['id']}")
    assert served["cosignatures"] == [cosignature]
    assert served["signature"] == issued["signature"]

    saved = tmp_path / "bundle.json"
    saved.write_bytes(httpx.get(f"{a.url}/v1/attestations/{issued['id']}/bundle").content)
    both = ("--collector", a.account.address, "--collector", b.account.address.lower())
    code, lines = verify(capsys, saved, "--signer", a.account.address, *both, "--threshold", "2")
    assert code == 0, lines
    assert lines[-1] == "VERIFIED"
    signers = next(line for line in lines if line.startswith("ok signers:"))
    assert "2 distinct collectors signed" in signers and "2 of them registered" in signers
    assert "ok threshold: 2 distinct registered collectors signed, 2 required" in lines

    code, lines = verify(capsys, saved, *both, "--threshold", "3")
    assert code == 1, lines
    assert "FAIL threshold: 2 distinct registered collectors signed, 3 required" in lines
    assert lines[-1] == "NOT VERIFIED (1 problem)"

    code, lines = verify(capsys, saved, "--collector", b.account.address, "--threshold", "2")
    assert code == 1 and "1 of them registered" in "\n".join(lines), lines
    code, lines = verify(capsys, saved, "--threshold", "1")
    assert code == 1 and "none counted as registered (no --collector given)" in "\n".join(lines)

    # A forged cosignature in a saved bundle: B's name, the outsider's signature.
    bundle = json.loads(saved.read_text())
    forged = sign_typed(pair.outsider, bundle["attestation"]["typed_data"])
    bundle["attestation"]["cosignatures"] = [{"signer": b.account.address, "signature": forged}]
    saved.write_text(json.dumps(bundle))
    code, lines = verify(capsys, saved, *both)
    assert code == 1, lines
    assert any(
        line.startswith(f"FAIL cosignature of {b.account.address}: it recovers to")
        for line in lines
    ), lines


def test_a_collector_with_other_evidence_refuses_and_nothing_is_stored(pair: Pair) -> None:
    a, b = pair.a, pair.b
    issued = issue(a, pair.partial)
    assert issued["typed_data"]["message"]["batchCount"] == 4
    counts_b = row_counts(b.engine)
    error = assert_error(countersign(b, issued), 409, "attestation_mismatch")
    assert (
        "this collector holds 3 batches of alpha on chain 1 for the period, the attestation 4"
        in (error["message"])
    )
    assert "figures.down: the attestation says 3, recomputed here 2" in error["message"]
    assert row_counts(b.engine) == counts_b


def test_forged_misplaced_and_outsider_signatures_are_refused(pair: Pair) -> None:
    a, b, outsider = pair.a, pair.b, pair.outsider
    issued = issue(a, pair.partial, minutes=2)
    typed = issued["typed_data"]
    other = json.loads(json.dumps(typed))
    other["message"]["issuedAt"] += 1
    own_b = issue(b, pair.full, minutes=3)
    counts_a, counts_b = row_counts(a.engine), row_counts(b.engine)

    # At the issuer: every cosignature must recover to its signer over exactly this typed data.
    b_address = b.account.address
    cases = [
        ({"signer": b_address, "signature": sign_typed(outsider, typed)}, 401, "bad_signature"),
        ({"signer": b_address, "signature": sign_typed(b.account, other)}, 401, "bad_signature"),
        (
            {"signer": outsider.address, "signature": sign_typed(outsider, typed)},
            403,
            "unknown_collector",
        ),
        ({"signer": a.account.address, "signature": issued["signature"]}, 422, "issuer_signature"),
        ({"signer": b_address, "signature": "0x1234"}, 422, "invalid_request"),
        ({"signature": sign_typed(b.account, typed)}, 422, "invalid_request"),  # signer required
    ]
    for body, status, code in cases:
        assert_error(add(a, issued["id"], **body), status, code)
    assert_error(add(a, 987654, **cases[0][0]), 404, "unknown_attestation")

    # At the countersigning collector: admin only, and only a genuine, registered issuer's.
    assert_error(countersign(b, issued, token="wrong"), 401, "unauthorized")
    tampered = json.loads(json.dumps(issued))
    tampered["typed_data"]["message"]["figures"]["up"] += 1
    assert_error(countersign(b, tampered), 401, "bad_signature")
    stranger = {"typed_data": typed, "signature": sign_typed(outsider, typed)}
    assert_error(countersign(b, stranger), 403, "unknown_collector")
    assert_error(countersign(b, own_b), 422, "own_attestation")
    renamed = json.loads(json.dumps(issued))
    renamed["typed_data"]["domain"]["name"] = "someone-else"
    assert_error(countersign(b, renamed), 422, "invalid_attestation")
    assert_error(countersign(b, {"typed_data": typed}), 422, "invalid_request")
    assert row_counts(a.engine) == counts_a
    assert row_counts(b.engine) == counts_b


def test_monitor_attest_cosign_does_the_flow_in_one_command(pair: Pair) -> None:
    a, b = pair.a, pair.b
    issued = issue(a, pair.full, minutes=4)
    source = f"{a.url}/v1/attestations/{issued['id']}"
    env = {"MONITOR_ADMIN_TOKEN": b.token}
    proc = monitor("attest", "cosign", "--from", source, "--collector", b.url, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith(f"countersigned by {b.account.address}: 0x")
    assert f"stored at {source}" in proc.stdout
    assert [c["signer"] for c in get(a, f"/v1/attestations/{issued['id']}")["cosignatures"]] == [
        b.account.address
    ]

    refused = issue(a, pair.partial, minutes=5)
    proc = monitor(
        "attest",
        "cosign",
        "--from",
        f"{a.url}/v1/attestations/{refused['id']}/bundle",
        "--collector",
        b.url,
        "--admin-token",
        b.token,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "countersigning" in proc.stderr and "attestation_mismatch" in proc.stderr
    assert "this collector holds 3 batches" in proc.stderr
    proc = monitor(
        "attest", "cosign", "--from", "not-a-url", "--collector", b.url, "--admin-token", "x"
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr


def test_differences_name_the_evidence_first() -> None:
    ours = {
        "subject": {"chainId": 1, "operatorId": "alpha"},
        "figures": {"up": 2, "down": 1},
        "evidenceRoot": "0x" + "11" * 32,
        "batchCount": 3,
    }
    same_count = {**ours, "evidenceRoot": "0x" + "22" * 32}
    assert differences(same_count, ours) == [
        f"evidenceRoot: this collector's 3 batches of alpha on chain 1 for the period hash to "
        f"{ours['evidenceRoot']}, the attestation says {same_count['evidenceRoot']} (as many "
        "batches, not the same ones)"
    ]
    assert differences(ours, ours) == []


def test_without_collectors_in_the_registry_any_key_may_cosign_up_to_the_bound(
    sqlite_template: Path, tmp_path: Path
) -> None:
    """The service alone (no HTTP): a registry that lists no collectors leaves the count to the
    verifier, so any key's valid cosignature is kept, at most MAX_COSIGNATURES of them."""
    shutil.copy(sqlite_template, tmp_path / "monitor.db")
    engine = make_engine(f"sqlite:///{tmp_path / 'monitor.db'}")
    try:
        fleet = make_fleet(engine)
        now = datetime.now(UTC)
        start = now.replace(second=0, microsecond=0) - timedelta(minutes=9)
        bodies, _ = scenario(fleet, start, created=now)
        with session_scope(engine) as session:
            for body in bodies:
                store_batch(
                    session,
                    body=body.encode(),
                    now=now,
                    clock_skew=timedelta(minutes=1),
                    max_results=1000,
                )
        issuer = Account.create()
        with session_scope(engine) as session:
            row = issue_attestation(
                session,
                account=issuer,
                operator_id="alpha",
                chain_id=1,
                start=start,
                end=start + timedelta(minutes=6),
                now=now,
            )
            typed = json.loads(row.typed_data)
        keys = [Account.create() for _ in range(MAX_COSIGNATURES + 1)]
        with session_scope(engine) as session:
            for key in keys[:MAX_COSIGNATURES]:
                cosignature = Cosignature(signer=key.address, signature=sign_typed(key, typed))
                assert add_cosignature(session, row.id, cosignature=cosignature, now=now)[1]
        last = keys[-1]
        with pytest.raises(TooManyCosignatures), session_scope(engine) as session:
            add_cosignature(
                session,
                row.id,
                cosignature=Cosignature(signer=last.address, signature=sign_typed(last, typed)),
                now=now,
            )
        with session_scope(engine) as session:
            out = attestation_out(session, get_attestation(session, row.id))
        # The same added_at for all: then by signer.
        assert [c.signer for c in out.cosignatures] == sorted(k.address for k in keys[:-1])
    finally:
        engine.dispose()
