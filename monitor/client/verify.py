"""One collector's ``GET /v1/weights`` answer: its shape checked, its EIP-712 signature recovered.

Rebuilt from docs/signing.md ("Signed weights") with eth-account alone, on purpose without the
server's code (monitor.signing.collector): a router checks the specification, not our
implementation of it, and a test compares the two.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.messages import encode_typed_data

from monitor.exceptions import AnswerRejected

DOMAIN = {"name": "monitor-collector", "version": "1"}
TYPES: dict[str, list[dict[str, str]]] = {
    "EIP712Domain": [{"name": "name", "type": "string"}, {"name": "version", "type": "string"}],
    "Weights": [
        {"name": "chainId", "type": "uint64"},
        {"name": "window", "type": "string"},
        {"name": "asOf", "type": "uint64"},
        {"name": "weights", "type": "EndpointWeight[]"},
    ],
    "EndpointWeight": [
        {"name": "endpointId", "type": "uint64"},
        {"name": "operatorId", "type": "string"},
        {"name": "weightBps", "type": "uint16"},
    ],
}
TOTAL_BPS = 10_000
_UINT64 = 2**64 - 1


@dataclass(frozen=True)
class EndpointBps:
    """One signed entry: an endpoint (registry id), its operator and its weight in basis points."""

    endpoint_id: int
    operator_id: str
    weight_bps: int


@dataclass(frozen=True)
class SignedWeights:
    """A collector's answer whose signature recovered to ``signer`` (not yet compared with the
    addresses a router trusts: that is the caller's decision)."""

    chain_id: int
    window: str
    as_of_ms: int
    weights: tuple[EndpointBps, ...]  # endpoint id ascending, as signed
    signature: str
    signer: str  # EIP-55, recovered from the signature; never the answer's own `signer` field
    # The hash of the registry the collector applied, from its /v1/identity (not signed: it
    # tells a router which collectors count the same probes and operators). None: not told.
    registry_hash: str | None = None

    def bps(self) -> dict[int, int]:
        return {w.endpoint_id: w.weight_bps for w in self.weights}


def typed_data(
    *, chain_id: int, window: str, as_of_ms: int, weights: tuple[EndpointBps, ...]
) -> dict[str, Any]:
    """The ``full_message`` for eth-account's ``encode_typed_data``, exactly as docs/signing.md
    builds it from the response's fields, in the response's order."""
    return {
        "types": TYPES,
        "primaryType": "Weights",
        "domain": dict(DOMAIN),
        "message": {
            "chainId": chain_id,
            "window": window,
            "asOf": as_of_ms,
            "weights": [
                {
                    "endpointId": w.endpoint_id,
                    "operatorId": w.operator_id,
                    "weightBps": w.weight_bps,
                }
                for w in weights
            ],
        },
    }


def _int(value: object, name: str, high: int = _UINT64) -> int:
    # bool is an int in Python, never in JSON's sense here.
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        raise AnswerRejected(f"{name} is not an integer in 0..{high}: {value!r:.40}")
    return value


def _str(value: object, name: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 256:
        raise AnswerRejected(f"{name} is not a short non-empty string: {value!r:.40}")
    return value


def _entries(raw: object) -> tuple[EndpointBps, ...]:
    if not isinstance(raw, list):
        raise AnswerRejected("weights is not a list")
    entries: list[EndpointBps] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise AnswerRejected(f"weights[{i}] is not an object")
        entries.append(
            EndpointBps(
                endpoint_id=_int(item.get("endpoint_id"), f"weights[{i}].endpoint_id"),
                operator_id=_str(item.get("operator_id"), f"weights[{i}].operator_id"),
                weight_bps=_int(item.get("weight_bps"), f"weights[{i}].weight_bps", TOTAL_BPS),
            )
        )
    ids = [e.endpoint_id for e in entries]
    if ids != sorted(set(ids)):
        raise AnswerRejected("weights are not in ascending endpoint id order, or repeat one")
    total = sum(e.weight_bps for e in entries)
    if total not in (0, TOTAL_BPS):
        raise AnswerRejected(f"weight_bps sum to {total}, not {TOTAL_BPS} (or 0)")
    return tuple(entries)


def verify_answer(body: object, *, chain_id: int, window: str | None) -> SignedWeights:
    """The answer's fields and the address its signature recovers to. AnswerRejected (code
    ``malformed``, ``wrong_chain``, ``wrong_window`` or ``bad_signature``) otherwise.

    A signed answer is also checked for sense (ids ascending and unique, basis points summing to
    10000 or 0): a collector's key signing nonsense is a broken collector, not a vote."""
    if not isinstance(body, dict):
        raise AnswerRejected("the answer is not a JSON object")
    answer_chain = _int(body.get("chain_id"), "chain_id")
    answer_window = _str(body.get("window"), "window")
    as_of_ms = _int(body.get("as_of_ms"), "as_of_ms")
    weights = _entries(body.get("weights"))
    signature = body.get("signature")
    if answer_chain != chain_id:
        raise AnswerRejected(
            f"weights for chain {answer_chain}, not {chain_id}", code="wrong_chain"
        )
    if window is not None and answer_window != window:
        raise AnswerRejected(
            f"weights for window {answer_window}, not {window}", code="wrong_window"
        )
    if not isinstance(signature, str):
        raise AnswerRejected("no signature", code="bad_signature")
    typed = typed_data(
        chain_id=answer_chain, window=answer_window, as_of_ms=as_of_ms, weights=weights
    )
    try:
        signer = Account.recover_message(encode_typed_data(full_message=typed), signature=signature)
    except Exception as exc:  # eth-account raises several types for a garbled signature
        raise AnswerRejected(
            f"signature does not recover: {type(exc).__name__}", code="bad_signature"
        ) from None
    return SignedWeights(
        chain_id=answer_chain,
        window=answer_window,
        as_of_ms=as_of_ms,
        weights=weights,
        signature=signature,
        signer=signer,
    )
