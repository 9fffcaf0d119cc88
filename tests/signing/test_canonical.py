"""The canonical encoding of results is byte-exact, key-order independent and float-free."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.ingest.schemas import INCORRECT_ERRORS, UNAVAILABLE_ERRORS, ProbeResult
from monitor.signing.canonical import RESULT_FIELDS, canonical_results, results_hash

R1: dict[str, Any] = {
    "endpoint_id": 7,
    "operator_id": "acme-rpc",
    "chain_id": 1,
    "observed_at_ms": 1700000000123,
    "ok": True,
    "error": None,
    "latency_us": 48213,
    "head": 18500000,
    "reference_head": 18500002,
    "lag_blocks": 2,
    "lag_ms": 24000,
    "check_height": 18499990,
    "block_hash": "0x" + "ab" * 32,
    "correct": True,
}
R2: dict[str, Any] = {
    "endpoint_id": 8,
    "operator_id": "zeta-9",
    "chain_id": 137,
    "observed_at_ms": 1700000000456,
    "ok": False,
    "error": "timeout",
    "latency_us": None,
    "head": None,
    "reference_head": 50000000,
    "lag_blocks": None,
    "lag_ms": None,
    "check_height": 49999936,
    "block_hash": None,
    "correct": None,
}

# Written out by hand from the rules in docs/signing.md, not produced by the code under test.
EXPECTED_BYTES = (
    b'[{"block_hash":"0xabababababababababababababababababababababababababababababababab",'
    b'"chain_id":1,"check_height":18499990,"correct":true,"endpoint_id":7,"error":null,'
    b'"head":18500000,"lag_blocks":2,"lag_ms":24000,"latency_us":48213,'
    b'"observed_at_ms":1700000000123,"ok":true,"operator_id":"acme-rpc",'
    b'"reference_head":18500002},'
    b'{"block_hash":null,"chain_id":137,"check_height":49999936,"correct":null,'
    b'"endpoint_id":8,"error":"timeout","head":null,"lag_blocks":null,"lag_ms":null,'
    b'"latency_us":null,"observed_at_ms":1700000000456,"ok":false,"operator_id":"zeta-9",'
    b'"reference_head":50000000}]'
)
EXPECTED_HASH = "0x5cdcf5e2e661a8bb0c8187a58707de9130515e2f367ec2c064ae8b1ea29c54d3"


def test_fixed_example_is_byte_exact() -> None:
    assert canonical_results([R1, R2]) == EXPECTED_BYTES
    assert results_hash([R1, R2]) == EXPECTED_HASH


def test_models_and_dicts_encode_identically() -> None:
    models = [ProbeResult.model_validate(R1), ProbeResult.model_validate(R2)]
    assert canonical_results(models) == EXPECTED_BYTES
    assert results_hash(models) == EXPECTED_HASH


def test_empty_batch() -> None:
    assert canonical_results([]) == b"[]"
    # keccak256(b"[]")
    assert results_hash([]) == "0x518674ab2b227e5f11e9084f615d57663cde47bce1ba168b4c19c7ee22a73d70"


def test_key_order_does_not_matter() -> None:
    reversed_r1 = dict(reversed(list(R1.items())))
    assert list(reversed_r1) != list(R1)
    assert canonical_results([reversed_r1, R2]) == EXPECTED_BYTES


def test_result_order_does_matter() -> None:
    assert results_hash([R2, R1]) != EXPECTED_HASH


@pytest.mark.parametrize("value", [1.0, 0.5, float("nan"), float("inf")])
def test_float_is_rejected(value: float) -> None:
    with pytest.raises((TypeError, ValueError)):
        canonical_results([{**R1, "lag_ms": value}])


def test_other_types_are_rejected() -> None:
    from decimal import Decimal

    with pytest.raises((TypeError, ValueError)):
        canonical_results([{**R1, "lag_ms": Decimal(1)}])
    with pytest.raises((TypeError, ValueError)):
        canonical_results([{**R1, "error": ["timeout"]}])


def test_missing_or_extra_field_is_rejected() -> None:
    without = {k: v for k, v in R1.items() if k != "correct"}
    with pytest.raises(ValueError, match="missing"):
        canonical_results([without])
    with pytest.raises(ValueError, match="extra"):
        canonical_results([{**R1, "note": "x"}])


def test_non_ascii_is_escaped() -> None:
    # Not a valid operator_id, but the encoder must still be ASCII-only and deterministic.
    out = canonical_results([{**R1, "operator_id": "é"}])
    assert b'"operator_id":"\\u00e9"' in out
    out.decode("ascii")


# --- property-based -------------------------------------------------------------------------

uint = st.integers(min_value=0, max_value=2**63 - 1)
opt_uint = st.none() | uint
hash32 = st.binary(min_size=32, max_size=32).map(lambda b: "0x" + b.hex())


@st.composite
def probe_results(draw: st.DrawFn) -> ProbeResult:
    """Any result the schema accepts: random values, consistent with each other."""
    ok = draw(st.booleans())
    head, reference = draw(opt_uint), draw(opt_uint)
    if ok:
        correct = draw(st.none() | st.booleans())
        error = draw(st.sampled_from(sorted(INCORRECT_ERRORS))) if correct is False else None
        latency = draw(opt_uint)
        lagged = head is not None and reference is not None and draw(st.booleans())
        lag = max(0, reference - head) if lagged else None  # type: ignore[operator]
    else:
        error = draw(st.sampled_from(sorted(UNAVAILABLE_ERRORS)))
        correct = latency = lag = None
    return ProbeResult(
        endpoint_id=draw(uint),
        operator_id=draw(st.from_regex(r"\A[a-z0-9-]{1,64}\Z")),
        chain_id=draw(uint),
        observed_at_ms=draw(st.integers(0, 253_402_300_799_999)),
        ok=ok,
        error=error,
        latency_us=latency,
        head=head,
        reference_head=reference,
        lag_blocks=lag,
        lag_ms=draw(opt_uint),
        check_height=draw(opt_uint),
        block_hash=draw(st.none() | hash32),
        correct=correct,
    )


@settings(max_examples=200, deadline=None)
@given(results=st.lists(probe_results(), max_size=8), seed=st.integers(0, 2**32 - 1))
def test_hash_stable_under_key_reordering_and_round_trips(
    results: list[ProbeResult], seed: int
) -> None:
    rng = random.Random(seed)
    dicts = [r.model_dump(mode="python") for r in results]
    shuffled = []
    for d in dicts:
        items = list(d.items())
        rng.shuffle(items)
        shuffled.append(dict(items))

    canonical = canonical_results(results)
    assert canonical_results(shuffled) == canonical
    assert results_hash(shuffled) == results_hash(results)

    decoded = json.loads(canonical)
    assert decoded == dicts
    assert all(set(d) == RESULT_FIELDS for d in decoded)
    # And what the collector will parse back validates to the same models.
    assert [ProbeResult.model_validate(d) for d in decoded] == results
