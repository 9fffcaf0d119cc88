"""POST /v1/batches over real loopback HTTP, on SQLite and on PostgreSQL: every refusal answers
{"error": {"code", "message"}} with a specific code and stores nothing; a valid batch is stored
once, verbatim, with exactly its results.

Ingest never contacts an endpoint, so these tests apply a registry without starting the simnet
(each server costs a fraction of a second to stop), and variants of one refusal are looped
inside one test, each case labelled in the assertion message."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from eth_account import Account
from eth_account.signers.local import LocalAccount
from sqlalchemy import Engine, select

from monitor.app import create_app
from monitor.db.models import Batch, Endpoint, Result
from monitor.db.session import session_scope
from monitor.ingest.schemas import ProbeResult, SignedBatch
from monitor.registry.apply import apply_registry
from monitor.registry.schema import load_registry
from monitor.serving import ServerThread
from monitor.settings import Settings
from monitor.signing.eip712 import sign_batch
from tests.conftest import make_settings, row_counts
from tests.ingest.support import write_registry

TIMEOUT = 10.0
HASH = "0x" + "ab" * 32
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
Body = bytes | Iterator[bytes]


# --- fixtures and helpers -----------------------------------------------------------------------


@dataclass
class Registered:
    probes: list[LocalAccount]
    registry_file: Path


@pytest.fixture
def registered(engine: Engine, tmp_path: Path) -> Registered:
    """The demo operators (URLs on a closed port: never contacted) and two probes, applied."""
    accounts = [Account.create() for _ in range(2)]
    registry_file = write_registry(tmp_path / "registry.yaml", accounts)
    with session_scope(engine) as session:
        apply_registry(session, registry=load_registry(registry_file))
    return Registered(accounts, registry_file)


@pytest.fixture
def probe(registered: Registered) -> LocalAccount:
    return registered.probes[0]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def endpoints(engine: Engine) -> list[tuple[int, str, int]]:
    """(endpoint_id, operator_id, chain_id) of every registered endpoint, by id."""
    with session_scope(engine) as session:
        rows = session.execute(
            select(Endpoint.id, Endpoint.operator_id, Endpoint.chain_id).order_by(Endpoint.id)
        ).all()
    return [(r.id, r.operator_id, r.chain_id) for r in rows]


def result(endpoint: tuple[int, str, int], observed_at_ms: int, **overrides: Any) -> ProbeResult:
    endpoint_id, operator_id, chain_id = endpoint
    fields: dict[str, Any] = {
        "endpoint_id": endpoint_id,
        "operator_id": operator_id,
        "chain_id": chain_id,
        "observed_at_ms": observed_at_ms,
        "ok": True,
        "error": None,
        "latency_us": 48_213,
        "head": 2_000,
        "reference_head": 2_001,
        "lag_blocks": 1,
        "lag_ms": 1_000,
        "check_height": 1_998,
        "block_hash": HASH,
        "correct": True,
    }
    fields.update(overrides)
    return ProbeResult(**fields)


def results_for(engine: Engine, observed_at_ms: int | None = None) -> list[ProbeResult]:
    """One result per registered endpoint (four)."""
    at = observed_at_ms if observed_at_ms is not None else now_ms() - 1_000
    return [result(e, at) for e in endpoints(engine)]


def encode(batch: SignedBatch | dict[str, Any]) -> bytes:
    if isinstance(batch, SignedBatch):
        return batch.model_dump_json().encode()
    return json.dumps(batch).encode()


def as_dict(batch: SignedBatch) -> dict[str, Any]:
    return json.loads(batch.model_dump_json())


def post(url: str, body: Body) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/batches",
        content=body,
        headers={"content-type": "application/json"},
        timeout=TIMEOUT,
    )


def assert_error(
    response: httpx.Response, status: int | tuple[int, ...], *codes: str, case: str = ""
) -> str:
    """The status, the JSON error shape and one of ``codes``; returns the code."""
    statuses = status if isinstance(status, tuple) else (status,)
    where = f"[{case}] " if case else ""
    assert response.status_code in statuses, f"{where}{response.status_code} {response.text}"
    assert response.headers["content-type"].startswith("application/json"), where
    body = response.json()
    assert set(body) == {"error"}, f"{where}{body}"
    assert {"code", "message"} <= set(body["error"]), f"{where}{body}"
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], where
    assert body["error"]["code"] in codes, f"{where}{body}"
    return body["error"]["code"]


def assert_refused(
    url: str,
    engine: Engine,
    body: Body,
    status: int | tuple[int, ...],
    *codes: str,
    case: str = "",
) -> httpx.Response:
    """Refused with ``status`` and one of ``codes``, and not a row written anywhere."""
    before = row_counts(engine)
    response = post(url, body)
    assert_error(response, status, *codes, case=case)
    assert row_counts(engine) == before, f"[{case}] rows were written"
    return response


def assert_accepted(url: str, body: Body, *, duplicate: bool = False) -> dict[str, Any]:
    response = post(url, body)
    assert response.status_code == 200, response.text
    ack = response.json()
    assert ack["duplicate"] is duplicate, ack
    return ack


# --- signature and identity ---------------------------------------------------------------------


def test_forged_signatures_are_401(
    collector: ServerThread, engine: Engine, probe: LocalAccount
) -> None:
    results = results_for(engine)

    # Signed by another key, claiming the registered probe.
    forged = as_dict(sign_batch(Account.create(), results))
    forged["message"]["probe"] = probe.address
    assert_refused(collector.url, engine, encode(forged), 401, "bad_signature", case="impostor")

    # The probe's own signature, moved onto another (self-consistent) batch.
    moved = as_dict(sign_batch(probe, results))
    moved["signature"] = sign_batch(probe, results).signature
    assert_refused(collector.url, engine, encode(moved), 401, "bad_signature", case="moved")

    # The probe's signature, with the message claiming another registered-looking address.
    other_claim = as_dict(sign_batch(probe, results))
    other_claim["message"]["probe"] = Account.create().address
    assert_refused(
        collector.url, engine, encode(other_claim), 401, "bad_signature", case="other claim"
    )


def _garble(signature: str, how: str) -> str:
    raw = bytearray(bytes.fromhex(signature[2:]))
    if how == "short":
        return signature[:-2]
    if how == "long":
        return signature + "00"
    if how == "not_hex":
        return "0x" + "zz" * 65
    if how == "no_prefix":
        return signature[2:] + "00"
    if how == "empty":
        return ""
    if how == "zeros":
        return "0x" + "00" * 65
    if how == "v_0":
        raw[64] = 0
    elif how == "v_29":
        raw[64] = 29
    elif how == "flip_r":
        raw[5] ^= 0xFF
    elif how == "high_s":  # the malleable twin (r, n - s, v ^ 1) recovers to the same key
        s = int.from_bytes(raw[32:64], "big")
        raw[32:64] = (SECP256K1_N - s).to_bytes(32, "big")
        raw[64] = 27 if raw[64] == 28 else 28
    elif how == "r_zero":
        raw[0:32] = bytes(32)
    elif how == "r_over_n":
        raw[0:32] = b"\xff" * 32
    else:
        raise AssertionError(how)
    return "0x" + bytes(raw).hex()


GARBLED = [
    "short",
    "long",
    "not_hex",
    "no_prefix",
    "empty",
    "zeros",
    "v_0",
    "v_29",
    "flip_r",
    "high_s",
    "r_zero",
    "r_over_n",
]


def test_garbled_signatures_are_refused(
    collector: ServerThread, engine: Engine, probe: LocalAccount
) -> None:
    valid = as_dict(sign_batch(probe, results_for(engine)))
    codes = {}
    for how in GARBLED:
        body = json.loads(json.dumps(valid))
        body["signature"] = _garble(valid["signature"], how)
        response = assert_refused(
            collector.url,
            engine,
            encode(body),
            (401, 422),
            "bad_signature",
            "malformed_batch",
            case=how,
        )
        codes[how] = response.status_code
    # Well formed (0x + 130 hex digits) but not a valid canonical signature: 401.
    assert all(codes[how] == 401 for how in GARBLED[5:]), codes
    # The untouched batch still goes through afterwards.
    assert_accepted(collector.url, encode(valid))


def test_unknown_probe_is_403(collector: ServerThread, engine: Engine, probe: LocalAccount) -> None:
    body = encode(sign_batch(Account.create(), results_for(engine)))
    response = assert_refused(collector.url, engine, body, 403, "unknown_probe")
    assert "not registered" in response.json()["error"]["message"]


def test_deactivated_probe_is_403(
    collector: ServerThread, engine: Engine, registered: Registered, tmp_path: Path
) -> None:
    gone, kept = registered.probes
    assert_accepted(collector.url, encode(sign_batch(gone, results_for(engine))))

    document = yaml.safe_load(registered.registry_file.read_text())
    document["probes"] = [p for p in document["probes"] if p["address"] != gone.address]
    without = tmp_path / "registry-without-probe-0.yaml"
    without.write_text(yaml.safe_dump(document, sort_keys=False))
    with session_scope(engine) as session:
        summary = apply_registry(session, registry=load_registry(without))
    assert summary.deactivated["probes"] == 1

    body = encode(sign_batch(gone, results_for(engine)))
    response = assert_refused(collector.url, engine, body, 403, "unknown_probe")
    assert "deactivated" in response.json()["error"]["message"]
    # The other probe still delivers.
    assert_accepted(collector.url, encode(sign_batch(kept, results_for(engine))))


# --- content checks -----------------------------------------------------------------------------


def test_tampered_results_are_422(
    collector: ServerThread, engine: Engine, probe: LocalAccount
) -> None:
    valid = as_dict(sign_batch(probe, results_for(engine)))
    tampers: dict[str, Callable[[list[dict[str, Any]]], object]] = {
        "latency": lambda rs: rs[1].update(latency_us=1),
        "ok": lambda rs: rs[1].update(
            ok=False, error="timeout", latency_us=None, lag_blocks=None, correct=None
        ),
        "block_hash": lambda rs: rs[1].update(block_hash="0x" + "cd" * 32),
        "error": lambda rs: rs[1].update(error="wrong_hash", correct=False),
        "correct_null": lambda rs: rs[1].update(correct=None),
        "reordered": lambda rs: rs.reverse(),
        "swapped_one": lambda rs: rs.__setitem__(0, dict(rs[1])),
    }
    for case, tamper in tampers.items():
        body = json.loads(json.dumps(valid))
        tamper(body["results"])
        assert_refused(collector.url, engine, encode(body), 422, "results_hash_mismatch", case=case)

    for case, edit in {
        "dropped": lambda b: b["results"].pop(),
        "added": lambda b: b["results"].append(b["results"][0]),
        "count_changed": lambda b: b["message"].update(resultCount=3),
    }.items():
        body = json.loads(json.dumps(valid))
        edit(body)
        assert_refused(collector.url, engine, encode(body), 422, "result_count_mismatch", case=case)

    # A changed resultsHash alone no longer matches the results.
    body = json.loads(json.dumps(valid))
    body["message"]["resultsHash"] = "0x" + "00" * 32
    assert_refused(
        collector.url, engine, encode(body), 422, "results_hash_mismatch", case="hash_changed"
    )


def test_batch_from_the_future(
    collector: ServerThread, engine: Engine, probe: LocalAccount, settings: Settings
) -> None:
    skew_ms = int(settings.clock_skew_s * 1000)
    future = now_ms() + skew_ms + 120_000
    batch = sign_batch(probe, results_for(engine, future - 1_000), created_at_ms=future)
    assert_refused(collector.url, engine, encode(batch), 422, "batch_from_future")

    # Ahead by less than the allowed skew: accepted.
    ahead = now_ms() + skew_ms // 3
    batch = sign_batch(probe, results_for(engine, ahead - 1_000), created_at_ms=ahead)
    assert_accepted(collector.url, encode(batch))


def test_late_batch_from_an_outbox_is_counted_at_its_observation_times(
    collector: ServerThread, engine: Engine, probe: LocalAccount
) -> None:
    created = now_ms() - 2 * 3_600_000  # signed two hours ago, delivered now
    batch = sign_batch(probe, results_for(engine, created - 5_000), created_at_ms=created)
    assert_accepted(collector.url, encode(batch))
    with session_scope(engine) as session:
        observed = {r.observed_at for r in session.scalars(select(Result))}
        stored = session.scalars(select(Batch)).one()
        received_at, created_at = stored.received_at, stored.created_at
    assert observed == {datetime.fromtimestamp((created - 5_000) / 1000, UTC)}
    assert created_at == datetime.fromtimestamp(created / 1000, UTC)
    assert received_at - created_at > timedelta(hours=1, minutes=59)


def test_unknown_or_mismatched_endpoint_is_422(
    collector: ServerThread, engine: Engine, probe: LocalAccount
) -> None:
    known = endpoints(engine)
    (first_id, operator_id, chain_id), second = known[0], known[1]
    at = now_ms() - 1_000
    for case, endpoint in {
        "unknown": (999_999, operator_id, chain_id),
        "max_uint63": (2**63 - 1, operator_id, chain_id),
    }.items():
        results = [*results_for(engine, at), result(endpoint, at)]
        batch = sign_batch(probe, results)
        assert_refused(collector.url, engine, encode(batch), 422, "unknown_endpoint", case=case)

    for case, endpoint in {
        "other_operator": (first_id, second[1], chain_id),
        "other_chain": (first_id, operator_id, chain_id + 1),
    }.items():
        results = [*results_for(engine, at), result(endpoint, at)]
        batch = sign_batch(probe, results)
        assert_refused(collector.url, engine, encode(batch), 422, "endpoint_mismatch", case=case)


def test_observed_at_inconsistent_with_created_at_is_422(
    collector: ServerThread, engine: Engine, probe: LocalAccount
) -> None:
    created = now_ms()
    for case, offset_ms in {
        "days_before": -3 * 86_400_000,
        "two_hours_before": -2 * 3_600_000,
        "just_over_an_hour_before": -3_600_000 - 1_000,
        "ten_seconds_after": 10_000,
        "epoch": -created,
    }.items():
        results = results_for(engine, created - 1_000)
        results[-1] = results[-1].model_copy(update={"observed_at_ms": created + offset_ms})
        batch = sign_batch(probe, results, created_at_ms=created)
        assert_refused(
            collector.url, engine, encode(batch), 422, "observed_at_inconsistent", case=case
        )

    # Within the hour before createdAt (and a second after it): accepted.
    results = results_for(engine, created - 3_500_000)
    results[-1] = results[-1].model_copy(update={"observed_at_ms": created + 1_000})
    assert_accepted(collector.url, encode(sign_batch(probe, results, created_at_ms=created)))


# --- malformed bodies ---------------------------------------------------------------------------


RAW_BODIES: dict[str, bytes] = {
    "not_json": b"this is not json",
    "empty": b"",
    "invalid_utf8": b'{"message": "\xff\xfe"}',
    "json_array": b"[]",
    "json_null": b"null",
    "json_string": b'"batch"',
    "json_number": b"12",
    "empty_object": b"{}",
    "nan": b'{"message": NaN}',
    "deeply_nested": b"[" * 5_000 + b"]" * 5_000,
}


def _edit(how: str) -> Callable[[dict[str, Any]], None]:
    def result0(**values: object) -> Callable[[dict[str, Any]], None]:
        return lambda b: b["results"][0].update(values)

    def message(**values: object) -> Callable[[dict[str, Any]], None]:
        return lambda b: b["message"].update(values)

    edits: dict[str, Callable[[dict[str, Any]], Any]] = {
        "missing_signature": lambda b: b.pop("signature"),
        "missing_message": lambda b: b.pop("message"),
        "missing_results": lambda b: b.pop("results"),
        "missing_message_field": lambda b: b["message"].pop("createdAt"),
        "missing_result_field": lambda b: b["results"][0].pop("correct"),
        "extra_top_level": lambda b: b.update(note="hello"),
        "extra_message_field": message(chainId=1),
        "extra_result_field": result0(latency_ms=48),
        "string_for_int_created_at": lambda b: b["message"].update(
            createdAt=str(b["message"]["createdAt"])
        ),
        "string_for_int_endpoint": lambda b: b["results"][0].update(
            endpoint_id=str(b["results"][0]["endpoint_id"])
        ),
        "string_for_int_count": message(resultCount="4"),
        "float_for_int": result0(latency_us=48213.5),
        "integral_float_for_int": result0(head=2000.0),
        "bool_for_int": result0(head=True),
        "int_for_bool": result0(ok=1),
        "string_for_bool": result0(ok="true"),
        "negative_int": result0(head=-1),
        "int_over_uint63": result0(endpoint_id=2**63),
        "int_over_uint64": message(createdAt=2**64),
        "huge_int": result0(head=10**40),
        "count_over_uint32": message(resultCount=2**32),
        "unknown_error_kind": result0(error="exploded"),
        "results_not_list": lambda b: b.update(results={"0": b["results"][0]}),
        "result_not_object": lambda b: b["results"].__setitem__(0, "hello"),
        "message_not_object": lambda b: b.update(message="hello"),
        "bad_batch_id": message(batchId="NOT-A-UUID"),
        "uppercase_batch_id": lambda b: b["message"].update(
            batchId=b["message"]["batchId"].upper()
        ),
        "bad_probe_address": message(probe="0x1234"),
        "uppercase_block_hash": lambda b: b["results"][0].update(
            block_hash=b["results"][0]["block_hash"].upper()
        ),
        "signature_int": lambda b: b.update(signature=12345),
        "signature_null": lambda b: b.update(signature=None),
        "bad_operator_id": result0(operator_id="Alpha!"),
    }
    return edits[how]


EDITS = [
    "missing_signature",
    "missing_message",
    "missing_results",
    "missing_message_field",
    "missing_result_field",
    "extra_top_level",
    "extra_message_field",
    "extra_result_field",
    "string_for_int_created_at",
    "string_for_int_endpoint",
    "string_for_int_count",
    "float_for_int",
    "integral_float_for_int",
    "bool_for_int",
    "int_for_bool",
    "string_for_bool",
    "negative_int",
    "int_over_uint63",
    "int_over_uint64",
    "huge_int",
    "count_over_uint32",
    "unknown_error_kind",
    "results_not_list",
    "result_not_object",
    "message_not_object",
    "bad_batch_id",
    "uppercase_batch_id",
    "bad_probe_address",
    "uppercase_block_hash",
    "signature_int",
    "signature_null",
    "bad_operator_id",
]


def test_malformed_bodies_are_422_never_500(
    collector: ServerThread, engine: Engine, probe: LocalAccount
) -> None:
    valid = as_dict(sign_batch(probe, results_for(engine)))
    cases: dict[str, bytes] = dict(RAW_BODIES)
    cases["truncated"] = encode(valid)[:-10]
    for how in EDITS:
        body = json.loads(json.dumps(valid))
        _edit(how)(body)
        cases[how] = json.dumps(body).encode()

    before = row_counts(engine)
    with httpx.Client(timeout=TIMEOUT) as client:
        for case, body in cases.items():
            response = client.post(
                f"{collector.url}/v1/batches",
                content=body,
                headers={"content-type": "application/json"},
            )
            assert_error(response, 422, "malformed_batch", case=case)
    assert row_counts(engine) == before
    # Form-encoded or without a content type: the body is still just bytes that are not a batch.
    response = httpx.post(f"{collector.url}/v1/batches", data={"a": "b"}, timeout=TIMEOUT)
    assert_error(response, 422, "malformed_batch", case="form")
    assert row_counts(engine) == before


# --- size limits --------------------------------------------------------------------------------


@pytest.fixture
def small_collector(engine: Engine, database_url: str) -> Iterator[ServerThread]:
    settings = make_settings(database_url, max_body_bytes=2048, max_results_per_batch=3)
    server = ServerThread(
        create_app(settings, engine=engine, scoring=False), name="small-collector"
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _chunks(body: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(body), size):
        yield body[i : i + size]


def test_size_limits(small_collector: ServerThread, engine: Engine, probe: LocalAccount) -> None:
    url = small_collector.url
    at = now_ms() - 1_000
    big = encode(sign_batch(probe, [result(e, at) for e in endpoints(engine)] * 3))  # 12 results
    assert len(big) > 2048

    # An honest Content-Length over the limit.
    assert_refused(url, engine, big, 413, "payload_too_large", case="content-length")

    # Chunked transfer (a generator body, so no Content-Length): counted as it streams.
    request = httpx.Request("POST", f"{url}/v1/batches", content=_chunks(big, 512))
    assert "content-length" not in request.headers
    assert request.headers["transfer-encoding"] == "chunked"
    before = row_counts(engine)
    with httpx.Client(timeout=TIMEOUT) as client:
        assert_error(client.send(request), 413, "payload_too_large", case="chunked")
    assert row_counts(engine) == before

    # Under the byte limit but over max_results_per_batch (4 > 3).
    body = encode(sign_batch(probe, [result(e, at) for e in endpoints(engine)]))
    assert len(body) < 2048
    assert_refused(url, engine, body, 413, "payload_too_large", case="too many results")

    # Under both limits, chunked or not: accepted.
    one = encode(sign_batch(probe, [result(endpoints(engine)[0], at)]))
    assert assert_accepted(url, one)["results"] == 1
    two = encode(sign_batch(probe, [result(e, at) for e in endpoints(engine)[:2]]))
    assert assert_accepted(url, _chunks(two, 100))["results"] == 2


# --- accepted batches ---------------------------------------------------------------------------


def test_valid_batch_is_stored_verbatim(
    collector: ServerThread, engine: Engine, probe: LocalAccount
) -> None:
    results = results_for(engine)
    results[2] = results[2].model_copy(
        update={
            "ok": False,
            "error": "timeout",
            "latency_us": None,
            "head": None,
            "lag_blocks": None,
            "lag_ms": None,
            "block_hash": None,
            "correct": None,
        }
    )
    batch = sign_batch(probe, results)
    # Pretty-printed, keys in another order: the stored body must be these exact bytes.
    wire = as_dict(batch)
    body = json.dumps(
        {"signature": wire["signature"], "results": wire["results"], "message": wire["message"]},
        indent=2,
    ).encode()
    before = row_counts(engine)

    response = post(collector.url, body)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "batch_id": batch.message.batchId,
        "probe": probe.address,
        "results": len(results),
        "duplicate": False,
    }
    expected = {
        **before,
        "batches": before["batches"] + 1,
        "results": before["results"] + len(results),
    }
    assert row_counts(engine) == expected

    with session_scope(engine) as session:
        stored = session.scalars(select(Batch)).one()
        assert stored.body == body.decode()
        assert stored.batch_id == batch.message.batchId
        assert stored.signature == batch.signature
        assert stored.results_hash == batch.message.resultsHash
        assert stored.result_count == len(results)
        assert stored.created_at == datetime.fromtimestamp(batch.message.createdAt / 1000, UTC)
        rows = session.scalars(select(Result).where(Result.batch_id == stored.id)).all()
    by_endpoint = {r.endpoint_id: r for r in rows}
    assert sorted(by_endpoint) == sorted(r.endpoint_id for r in results)
    sent = results[0]
    row = by_endpoint[sent.endpoint_id]
    assert row.latency_ms == pytest.approx(48.213)
    assert row.lag_seconds == pytest.approx(1.0)
    assert row.observed_at == datetime.fromtimestamp(sent.observed_at_ms / 1000, UTC)
    assert (row.operator_id, row.chain_id) == (sent.operator_id, sent.chain_id)
    assert (row.ok, row.head, row.reference_head, row.block_hash, row.correct) == (
        True,
        2_000,
        2_001,
        HASH,
        True,
    )
    failed = by_endpoint[results[2].endpoint_id]
    assert (failed.ok, failed.error, failed.latency_ms, failed.head, failed.correct) == (
        False,
        "timeout",
        None,
        None,
        None,
    )


def test_empty_batch_is_accepted(
    collector: ServerThread, engine: Engine, probe: LocalAccount
) -> None:
    assert assert_accepted(collector.url, encode(sign_batch(probe, [])))["results"] == 0
    counts = row_counts(engine)
    assert (counts["batches"], counts["results"]) == (1, 0)


def test_replay_is_acknowledged_as_duplicate(
    collector: ServerThread, engine: Engine, probe: LocalAccount
) -> None:
    body = encode(sign_batch(probe, results_for(engine)))
    first = assert_accepted(collector.url, body, duplicate=False)
    stored = row_counts(engine)
    for _ in range(2):
        again = assert_accepted(collector.url, body, duplicate=True)
        assert again == {**first, "duplicate": True}
        assert row_counts(engine) == stored


def test_same_batch_id_from_another_probe_is_a_new_batch(
    collector: ServerThread, engine: Engine, registered: Registered
) -> None:
    """Batch ids are each probe's own: two probes may pick the same one."""
    results = results_for(engine)
    for account in registered.probes:
        assert_accepted(collector.url, encode(sign_batch(account, results, batch_id="0" * 32)))
    assert row_counts(engine)["batches"] == 2


def test_reused_batch_id_with_other_content_is_409(
    collector: ServerThread, engine: Engine, probe: LocalAccount
) -> None:
    results = results_for(engine)
    changes: dict[str, Callable[[str, int], SignedBatch]] = {
        "results": lambda bid, created: sign_batch(
            probe,
            [r.model_copy(update={"latency_us": 1}) for r in results],
            batch_id=bid,
            created_at_ms=created,
        ),
        "created_at": lambda bid, created: sign_batch(
            probe, results, batch_id=bid, created_at_ms=created + 1
        ),
        "fewer_results": lambda bid, created: sign_batch(
            probe, results[:1], batch_id=bid, created_at_ms=created
        ),
        "no_results": lambda bid, created: sign_batch(
            probe, [], batch_id=bid, created_at_ms=created
        ),
    }
    for case, change in changes.items():
        first = sign_batch(probe, results)
        assert_accepted(collector.url, encode(first))
        second = change(first.message.batchId, first.message.createdAt)
        assert_refused(collector.url, engine, encode(second), 409, "batch_conflict", case=case)
        # The original is still acknowledged as a duplicate afterwards.
        assert_accepted(collector.url, encode(first), duplicate=True)


# --- concurrency --------------------------------------------------------------------------------


def test_same_batch_posted_concurrently_is_stored_once(
    collector: ServerThread, engine: Engine, probe: LocalAccount
) -> None:
    results = results_for(engine)
    body = encode(sign_batch(probe, results))
    before = row_counts(engine)

    def send(_: int) -> httpx.Response:
        # One client (one connection) per request, so the eight really run side by side.
        with httpx.Client(timeout=TIMEOUT) as client:
            return client.post(
                f"{collector.url}/v1/batches",
                content=body,
                headers={"content-type": "application/json"},
            )

    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(send, range(8)))

    assert [r.status_code for r in responses] == [200] * 8, [r.text for r in responses]
    acks = [r.json() for r in responses]
    assert sorted(a["duplicate"] for a in acks) == [False] + [True] * 7
    assert all(a["results"] == len(results) for a in acks)
    assert row_counts(engine) == {
        **before,
        "batches": before["batches"] + 1,
        "results": before["results"] + len(results),
    }


def test_signature_hex_case_does_not_make_another_batch(
    collector: ServerThread, engine: Engine, probe: LocalAccount
) -> None:
    """Hex case carries no meaning: a resend with the signature in upper case is the same batch
    (a duplicate, not a 409 conflict), and a batch first sent in upper case is stored lower-case."""
    body = as_dict(sign_batch(probe, results_for(engine)))
    assert_accepted(collector.url, encode(body))
    stored = row_counts(engine)
    upper = {**body, "signature": "0x" + body["signature"][2:].upper()}
    assert_accepted(collector.url, encode(upper), duplicate=True)
    assert row_counts(engine) == stored

    first_upper = as_dict(sign_batch(probe, results_for(engine)))
    signature = first_upper["signature"]
    first_upper["signature"] = "0x" + signature[2:].upper()
    assert_accepted(collector.url, encode(first_upper))
    assert_accepted(collector.url, encode({**first_upper, "signature": signature}), duplicate=True)
    with session_scope(engine) as session:
        kept = session.scalars(
            select(Batch.signature).where(Batch.batch_id == first_upper["message"]["batchId"])
        ).one()
    assert kept == signature


def test_results_that_contradict_themselves_are_422(
    collector: ServerThread, engine: Engine, probe: LocalAccount
) -> None:
    """Validly signed, but self-contradictory: refused before anything is stored."""
    contradictions: dict[str, dict[str, Any]] = {
        "down_without_error": {
            "ok": False,
            "error": None,
            "latency_us": None,
            "lag_blocks": None,
            "correct": None,
        },
        "down_with_latency": {"ok": False, "error": "timeout", "lag_blocks": None, "correct": None},
        "up_with_timeout": {"error": "timeout"},
        "incorrect_without_reason": {"correct": False, "error": None},
        "reason_but_correct": {"correct": True, "error": "wrong_hash"},
        "lag_not_from_heads": {"lag_blocks": 7},
    }
    for case, update in contradictions.items():
        results = [r.model_dump() for r in results_for(engine)]
        results[0].update(update)
        body = as_dict(sign_batch(probe, results_for(engine)))
        body["results"] = results  # the schema refuses before the hash is even checked
        assert_refused(collector.url, engine, encode(body), 422, "malformed_batch", case=case)


def test_timestamps_beyond_year_9999_are_422(
    collector: ServerThread, engine: Engine, probe: LocalAccount
) -> None:
    for case, where in {"createdAt": "message", "observed_at_ms": "result"}.items():
        body = as_dict(sign_batch(probe, results_for(engine)))
        if where == "message":
            body["message"]["createdAt"] = 10**15
        else:
            body["results"][0]["observed_at_ms"] = 10**15
        assert_refused(collector.url, engine, encode(body), 422, "malformed_batch", case=case)
