"""EIP-712 batch signing and request authentication."""

from __future__ import annotations

from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from starlette.datastructures import Headers

from monitor.exceptions import BadSignature, ClockSkew, MalformedRequest
from monitor.ingest.schemas import ProbeResult, SignedBatch
from monitor.signing.canonical import results_hash
from monitor.signing.eip712 import (
    DOMAIN,
    auth_headers,
    recover_batch_signer,
    sign_batch,
    typed_data,
    verify_batch,
    verify_request_headers,
)

KEY = "0x" + "4c" * 32
OTHER_KEY = "0x" + "5d" * 32
NOW = 1_700_000_000_000
SKEW = 300_000


def _result(endpoint_id: int = 1, **over: Any) -> ProbeResult:
    data: dict[str, Any] = {
        "endpoint_id": endpoint_id,
        "operator_id": "acme",
        "chain_id": 1,
        "observed_at_ms": NOW,
        "ok": True,
        "error": None,
        "latency_us": 51234,
        "head": 100,
        "reference_head": 101,
        "lag_blocks": 1,
        "lag_ms": 12000,
        "check_height": 90,
        "block_hash": "0x" + "cd" * 32,
        "correct": True,
    }
    data.update(over)
    return ProbeResult.model_validate(data)


@pytest.fixture
def account() -> LocalAccount:
    return Account.from_key(KEY)


@pytest.fixture
def other() -> LocalAccount:
    return Account.from_key(OTHER_KEY)


@pytest.fixture
def batch(account: LocalAccount) -> SignedBatch:
    results = [
        _result(1),
        _result(2, ok=False, error="timeout", latency_us=None, lag_blocks=None, correct=None),
    ]
    return sign_batch(account, results, batch_id="0" * 31 + "1", created_at_ms=NOW)


# --- batches --------------------------------------------------------------------------------


def test_round_trip(account: LocalAccount, batch: SignedBatch) -> None:
    assert batch.message.probe == account.address
    assert batch.message.resultCount == 2
    assert batch.message.resultsHash == results_hash(batch.results)
    assert recover_batch_signer(batch) == account.address
    assert verify_batch(batch) == account.address


def test_round_trip_through_json(account: LocalAccount, batch: SignedBatch) -> None:
    again = SignedBatch.model_validate_json(batch.model_dump_json())
    assert verify_batch(again) == account.address


def test_defaults(account: LocalAccount) -> None:
    b = sign_batch(account, [])
    assert len(b.message.batchId) == 32
    assert b.message.batchId == b.message.batchId.lower()
    assert b.message.createdAt > NOW
    assert b.message.resultCount == 0
    assert verify_batch(b) == account.address
    assert sign_batch(account, []).message.batchId != b.message.batchId


def test_signature_made_without_monitor_helpers_verifies(account: LocalAccount) -> None:
    """A verifier/signer built from docs/signing.md alone interoperates with ours."""
    results = [_result(5)]
    message = {
        "probe": account.address,
        "batchId": "ab" * 16,
        "createdAt": NOW,
        "resultsHash": results_hash(results),
        "resultCount": 1,
    }
    full_message = {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
            ],
            "ProbeBatch": [
                {"name": "probe", "type": "address"},
                {"name": "batchId", "type": "string"},
                {"name": "createdAt", "type": "uint64"},
                {"name": "resultsHash", "type": "bytes32"},
                {"name": "resultCount", "type": "uint32"},
            ],
        },
        "primaryType": "ProbeBatch",
        "domain": {"name": "monitor-probe", "version": "1"},
        "message": message,
    }
    signed = Account.sign_message(encode_typed_data(full_message=full_message), KEY)
    batch = SignedBatch.model_validate(
        {
            "message": message,
            "results": [r.model_dump() for r in results],
            "signature": "0x" + bytes(signed.signature).hex(),
        }
    )
    assert verify_batch(batch) == account.address


def test_typed_data_matches_hex_and_bytes_forms(batch: SignedBatch) -> None:
    full = typed_data(batch.message.model_dump())
    assert full["domain"] == DOMAIN == {"name": "monitor-probe", "version": "1"}
    assert full["primaryType"] == "ProbeBatch"
    as_hex = {**full, "message": {**full["message"], "resultsHash": batch.message.resultsHash}}
    assert encode_typed_data(full_message=full) == encode_typed_data(full_message=as_hex)


def test_typed_data_rejects_unprefixed_hash(batch: SignedBatch) -> None:
    # eth-account would silently hash an unprefixed string as UTF-8 text.
    with pytest.raises(ValueError):
        typed_data({**batch.message.model_dump(), "resultsHash": "ab" * 32})


def test_tampered_result_is_hash_mismatch(batch: SignedBatch) -> None:
    data = batch.model_dump()
    data["results"][0]["latency_us"] += 1
    tampered = SignedBatch.model_validate(data)
    with pytest.raises(MalformedRequest) as exc:
        verify_batch(tampered)
    assert exc.value.code == "results_hash_mismatch"


def test_dropped_result_is_count_mismatch(batch: SignedBatch) -> None:
    data = batch.model_dump()
    data["results"].pop()
    with pytest.raises(MalformedRequest) as exc:
        verify_batch(SignedBatch.model_validate(data))
    assert exc.value.code == "result_count_mismatch"


def test_tampered_message_does_not_verify(account: LocalAccount, batch: SignedBatch) -> None:
    data = batch.model_dump()
    data["message"]["createdAt"] += 1
    tampered = SignedBatch.model_validate(data)
    # Recovers to some unrelated address, which is not the claimed probe.
    assert recover_batch_signer(tampered) != account.address
    with pytest.raises(BadSignature) as exc:
        verify_batch(tampered)
    assert exc.value.code == "bad_signature"


def test_signature_by_another_key(
    account: LocalAccount, other: LocalAccount, batch: SignedBatch
) -> None:
    forged = sign_batch(other, batch.results, batch_id=batch.message.batchId, created_at_ms=NOW)
    data = forged.model_dump()
    data["message"]["probe"] = account.address  # claims to be `account`
    with pytest.raises(BadSignature) as exc:
        verify_batch(SignedBatch.model_validate(data))
    assert exc.value.code == "bad_signature"


def test_probe_compared_case_insensitively(account: LocalAccount, batch: SignedBatch) -> None:
    data = batch.model_dump()
    data["message"]["probe"] = account.address.lower()
    assert verify_batch(SignedBatch.model_validate(data)) == account.address


@pytest.mark.parametrize(
    "signature",
    [
        "0x" + "00" * 65,
        "0x" + "ff" * 65,
        "0x" + "11" * 64 + "05",
    ],
)
def test_garbled_signature(batch: SignedBatch, signature: str) -> None:
    bad = batch.model_copy(update={"signature": signature})
    with pytest.raises(BadSignature):
        verify_batch(bad)


def test_high_s_twin_is_rejected(batch: SignedBatch) -> None:
    """The malleable twin (n - s, flipped v) recovers in eth-account; we accept only low s."""
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    raw = bytes.fromhex(batch.signature[2:])
    s = int.from_bytes(raw[32:64], "big")
    twin = raw[:32] + (n - s).to_bytes(32, "big") + bytes([55 - raw[64]])
    bad = batch.model_copy(update={"signature": "0x" + twin.hex()})
    with pytest.raises(BadSignature):
        verify_batch(bad)


def test_v_zero_one_is_rejected(batch: SignedBatch) -> None:
    raw = bytes.fromhex(batch.signature[2:])
    bad = batch.model_copy(update={"signature": "0x" + (raw[:64] + bytes([raw[64] - 27])).hex()})
    with pytest.raises(BadSignature):
        verify_batch(bad)


# --- request authentication -----------------------------------------------------------------


def _verify(headers: Any, *, path: str = "/v1/targets", now: int = NOW, method: str = "GET") -> str:
    return verify_request_headers(headers, method=method, path=path, now_ms=now, max_skew_ms=SKEW)


def test_request_round_trip(account: LocalAccount) -> None:
    headers = auth_headers(account, method="GET", path="/v1/targets", now_ms=NOW)
    assert set(headers) == {"X-Monitor-Probe", "X-Monitor-Timestamp", "X-Monitor-Signature"}
    assert headers["X-Monitor-Probe"] == account.address
    assert headers["X-Monitor-Timestamp"] == str(NOW)
    assert _verify(headers) == account.address
    # method case does not matter: it is signed upper-case
    assert _verify(headers, method="get") == account.address


def test_request_headers_case_insensitive(account: LocalAccount) -> None:
    headers = auth_headers(account, method="GET", path="/v1/targets", now_ms=NOW)
    lower = {k.lower(): v for k, v in headers.items()}
    upper = {k.upper(): v for k, v in headers.items()}
    assert _verify(lower) == account.address
    assert _verify(upper) == account.address
    starlette = Headers(raw=[(k.lower().encode(), v.encode()) for k, v in headers.items()])
    assert _verify(starlette) == account.address


def test_request_default_timestamp_is_now(account: LocalAccount) -> None:
    import time

    headers = auth_headers(account, method="GET", path="/v1/targets")
    now = time.time_ns() // 1_000_000
    assert _verify(headers, now=now) == account.address


def test_request_wrong_path(account: LocalAccount) -> None:
    headers = auth_headers(account, method="GET", path="/v1/targets", now_ms=NOW)
    with pytest.raises(BadSignature, match="X-Monitor-Signature"):
        _verify(headers, path="/v1/batches")


def test_request_wrong_method(account: LocalAccount) -> None:
    headers = auth_headers(account, method="GET", path="/v1/targets", now_ms=NOW)
    with pytest.raises(BadSignature):
        _verify(headers, method="POST")


def test_request_claimed_probe_differs(account: LocalAccount, other: LocalAccount) -> None:
    headers = auth_headers(other, method="GET", path="/v1/targets", now_ms=NOW)
    headers["X-Monitor-Probe"] = account.address
    with pytest.raises(BadSignature):
        _verify(headers)


@pytest.mark.parametrize("offset", [SKEW + 1, -(SKEW + 1), 10 * SKEW, -10 * SKEW])
def test_request_skew(account: LocalAccount, offset: int) -> None:
    headers = auth_headers(account, method="GET", path="/v1/targets", now_ms=NOW + offset)
    with pytest.raises(ClockSkew):
        _verify(headers)


@pytest.mark.parametrize("offset", [SKEW, -SKEW, 0])
def test_request_skew_boundary_is_allowed(account: LocalAccount, offset: int) -> None:
    headers = auth_headers(account, method="GET", path="/v1/targets", now_ms=NOW + offset)
    assert _verify(headers) == account.address


@pytest.mark.parametrize("name", ["X-Monitor-Probe", "X-Monitor-Timestamp", "X-Monitor-Signature"])
def test_request_missing_header(account: LocalAccount, name: str) -> None:
    headers = auth_headers(account, method="GET", path="/v1/targets", now_ms=NOW)
    del headers[name]
    with pytest.raises(BadSignature, match=name):
        _verify(headers)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("X-Monitor-Probe", "0x1234"),
        ("X-Monitor-Probe", "not an address"),
        ("X-Monitor-Timestamp", "-5"),
        ("X-Monitor-Timestamp", "1.7e12"),
        ("X-Monitor-Timestamp", "99999999999999999999"),
        ("X-Monitor-Signature", "0xzz"),
        ("X-Monitor-Signature", "0x" + "00" * 65),
    ],
)
def test_request_garbled_header(account: LocalAccount, name: str, value: str) -> None:
    headers = auth_headers(account, method="GET", path="/v1/targets", now_ms=NOW)
    headers[name] = value
    with pytest.raises(BadSignature, match=name):
        _verify(headers)


def test_request_tampered_timestamp(account: LocalAccount) -> None:
    headers = auth_headers(account, method="GET", path="/v1/targets", now_ms=NOW)
    headers["X-Monitor-Timestamp"] = str(NOW + 1)
    with pytest.raises(BadSignature):
        _verify(headers)


def test_request_duplicate_conflicting_header(account: LocalAccount) -> None:
    headers = auth_headers(account, method="GET", path="/v1/targets", now_ms=NOW)
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    raw.append((b"x-monitor-timestamp", str(NOW + 1).encode()))
    with pytest.raises(BadSignature, match="more than once"):
        _verify(Headers(raw=raw))


def test_batch_signature_is_not_a_request_signature(
    account: LocalAccount, batch: SignedBatch
) -> None:
    """Different primary types: a batch signature cannot be replayed as a request signature."""
    headers = {
        "X-Monitor-Probe": account.address,
        "X-Monitor-Timestamp": str(NOW),
        "X-Monitor-Signature": batch.signature,
    }
    with pytest.raises(BadSignature):
        _verify(headers)
