"""What the collector itself signs (EIP-712, its own key): routing weights and SLA attestations.

A second domain, ``{"name": "monitor-collector", "version": "1"}``, separate from the probes'
``monitor-probe``: a signature made for one can never be replayed as the other. Like the probes'
domain it has no ``chainId`` or ``verifyingContract``: the weights are not bound to one chain's
contract, and the chain they are for is in the message.

Every primary type signed in this domain is listed in :data:`SIGNED_TYPES` with the struct types
it references; ``GET /v1/identity`` publishes them all. The layouts are specified in
docs/signing.md ("Signed weights") and docs/attestations.md (SLA attestations).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils import keccak

from monitor.signing.eip712 import EIP712_DOMAIN_TYPE, _recover, _sign
from monitor.signing.keys import generate_key, load_key

log = logging.getLogger("monitor.signing")

Types = dict[str, list[dict[str, str]]]

COLLECTOR_DOMAIN: dict[str, str] = {"name": "monitor-collector", "version": "1"}

WEIGHTS_TYPES: Types = {
    "Weights": [
        {"name": "chainId", "type": "uint64"},
        {"name": "window", "type": "string"},
        {"name": "asOf", "type": "uint64"},  # unix ms of the scoring run
        {"name": "weights", "type": "EndpointWeight[]"},
    ],
    "EndpointWeight": [
        {"name": "endpointId", "type": "uint64"},
        {"name": "operatorId", "type": "string"},
        {"name": "weightBps", "type": "uint16"},
    ],
}

# An SLA attestation (docs/attestations.md), laid out for a Solidity verifier: only fixed-size
# integers, bytes32, addresses, bools and strings; a figure that was not measured is -1 in its
# int64 field; times are unix seconds; fractions are parts per million.
ATTESTATION_TYPES: Types = {
    "Attestation": [
        {"name": "subject", "type": "Subject"},
        {"name": "period", "type": "Period"},
        {"name": "targets", "type": "Targets"},
        {"name": "figures", "type": "Figures"},
        {"name": "verdicts", "type": "Verdicts"},
        {"name": "evidenceRoot", "type": "bytes32"},
        {"name": "batchCount", "type": "uint32"},
        {"name": "probes", "type": "address[]"},
        {"name": "policyHash", "type": "bytes32"},
        {"name": "recommendation", "type": "Recommendation"},
        {"name": "issuedAt", "type": "uint64"},
    ],
    "Subject": [
        {"name": "chainId", "type": "uint64"},
        {"name": "operatorId", "type": "string"},
    ],
    "Period": [
        {"name": "start", "type": "uint64"},  # unix seconds, a whole minute
        {"name": "end", "type": "uint64"},  # exclusive
    ],
    "Targets": [
        {"name": "availabilityPpm", "type": "uint32"},
        {"name": "latencyP95Ms", "type": "uint64"},
        {"name": "maxLagBlocks", "type": "uint64"},
        {"name": "correctnessPpm", "type": "uint32"},
        {"name": "minProbes", "type": "uint32"},
        {"name": "minCoveragePpm", "type": "uint32"},
    ],
    "Figures": [
        {"name": "totalMinutes", "type": "uint32"},  # "minutes" is a Solidity keyword
        {"name": "up", "type": "uint32"},
        {"name": "down", "type": "uint32"},
        {"name": "insufficient", "type": "uint32"},
        {"name": "downUnavailable", "type": "uint32"},
        {"name": "downLagging", "type": "uint32"},
        {"name": "downIncorrect", "type": "uint32"},
        {"name": "longestOutageMinutes", "type": "uint32"},
        {"name": "availabilityPpm", "type": "int64"},  # -1: not measured
        {"name": "lagCompliancePpm", "type": "int64"},
        {"name": "correctnessPpm", "type": "int64"},
        {"name": "latencyP50Ms", "type": "int64"},
        {"name": "latencyP95Ms", "type": "int64"},
        {"name": "latencyP99Ms", "type": "int64"},
        {"name": "probeCount", "type": "uint32"},
        {"name": "samples", "type": "uint64"},
    ],
    "Verdicts": [  # "met" | "breached" | "insufficient_data"
        {"name": "availability", "type": "string"},
        {"name": "latencyP95", "type": "string"},
        {"name": "lag", "type": "string"},
        {"name": "correctness", "type": "string"},
    ],
    "Recommendation": [
        {"name": "violations", "type": "Violation[]"},
        {"name": "penaltyBps", "type": "uint32"},
    ],
    "Violation": [
        {"name": "kind", "type": "string"},
        {"name": "repeated", "type": "bool"},
        {"name": "penaltyBps", "type": "uint32"},
    ],
}

# Primary type -> the types a message of it needs (itself and what it references). eth-account
# derives the primary type from the ``types`` it is given and refuses a map with two roots, so a
# message is always built from its own entry, never from the union published at /v1/identity.
SIGNED_TYPES: dict[str, Types] = {"Weights": WEIGHTS_TYPES, "Attestation": ATTESTATION_TYPES}


def encode_type(primary: str, types: Types) -> str:
    """EIP-712 ``encodeType``: the primary type, then every struct type it references
    (transitively), sorted by name."""

    def one(name: str) -> str:
        return f"{name}(" + ",".join(f"{f['type']} {f['name']}" for f in types[name]) + ")"

    seen: set[str] = set()
    todo = [primary]
    while todo:
        name = todo.pop()
        for field in types[name]:
            ref = field["type"].split("[", 1)[0]
            if ref in types and ref != primary and ref not in seen:
                seen.add(ref)
                todo.append(ref)
    return one(primary) + "".join(one(name) for name in sorted(seen))


def type_hash(primary: str) -> str:
    """``keccak256(encodeType(primary))``, ``0x`` hex: what a Solidity verifier hard-codes."""
    return "0x" + keccak(text=encode_type(primary, SIGNED_TYPES[primary])).hex()


def published_types() -> Types:
    """Every type the collector signs with, plus ``EIP712Domain``: for ``GET /v1/identity``."""
    types: Types = {"EIP712Domain": EIP712_DOMAIN_TYPE}
    for own in SIGNED_TYPES.values():
        types.update(own)
    return types


def type_hashes() -> dict[str, str]:
    return {primary: type_hash(primary) for primary in SIGNED_TYPES}


WEIGHTS_TYPE_HASH = type_hash("Weights")
ATTESTATION_TYPE_HASH = type_hash("Attestation")


def _full_message(primary: str, message: dict[str, Any]) -> dict[str, Any]:
    return {
        "types": {"EIP712Domain": EIP712_DOMAIN_TYPE, **SIGNED_TYPES[primary]},
        "primaryType": primary,
        "domain": dict(COLLECTOR_DOMAIN),
        "message": message,
    }


def weights_typed_data(
    *, chain_id: int, window: str, as_of_ms: int, weights: Sequence[tuple[int, str, int]]
) -> dict[str, Any]:
    """The ``full_message`` for eth-account: ``weights`` as (endpoint id, operator id, bps), in
    the order of the response (endpoint id ascending). Only integers and strings: the float
    ``weight`` of the response is informative and not signed."""
    return _full_message(
        "Weights",
        {
            "chainId": chain_id,
            "window": window,
            "asOf": as_of_ms,
            "weights": [
                {"endpointId": e, "operatorId": o, "weightBps": bps} for e, o, bps in weights
            ],
        },
    )


def attestation_typed_data(message: dict[str, Any]) -> dict[str, Any]:
    """The ``full_message`` of an ``Attestation``; ``message`` as built by
    monitor.attestations.message (plain JSON: bytes32 as ``0x`` hex, addresses EIP-55)."""
    return _full_message("Attestation", message)


def sign_typed(account: LocalAccount, full_message: dict[str, Any]) -> str:
    """``0x`` + 130 hex digits; deterministic (RFC 6979), low-s, ``v`` in {27, 28}."""
    return _sign(account, full_message)


def recover_signer(full_message: dict[str, Any], signature: str) -> str:
    """Checksum address that signed ``full_message``; BadSignature on a malformed signature."""
    return _recover(encode_typed_data(full_message=full_message), signature)


def sign_weights(
    account: LocalAccount,
    *,
    chain_id: int,
    window: str,
    as_of_ms: int,
    weights: Sequence[tuple[int, str, int]],
) -> str:
    typed = weights_typed_data(chain_id=chain_id, window=window, as_of_ms=as_of_ms, weights=weights)
    return sign_typed(account, typed)


def recover_weights_signer(
    signature: str,
    *,
    chain_id: int,
    window: str,
    as_of_ms: int,
    weights: Sequence[tuple[int, str, int]],
) -> str:
    """Who signed these weights. Any change (a bps moved, an entry reordered or dropped, another
    run or window) recovers another address: compare it with the pinned collector address."""
    typed = weights_typed_data(chain_id=chain_id, window=window, as_of_ms=as_of_ms, weights=weights)
    return recover_signer(typed, signature)


def service_account(path: Path) -> LocalAccount:
    """The collector's key at ``path``, created (0600) on first start; its address is logged.

    Creating it is safe: the address is what routers and auditors pin, and it is published at
    ``GET /v1/identity``; a new key is a visible change of identity, never a silent one. A file
    that exists but is not a key is an error (ConfigError), never replaced.
    """
    path = Path(path)
    if not path.exists():
        address = generate_key(path)
        log.warning("created the collector's signing key %s: address %s", path, address)
    account = load_key(path)
    log.info("collector signing address %s (key %s)", account.address, path)
    return account
