"""What the collector itself signs (EIP-712, its own key): the routing weights it serves.

A second domain, ``{"name": "monitor-collector", "version": "1"}``, separate from the probes'
``monitor-probe``: a signature made for one can never be replayed as the other. Like the probes'
domain it has no ``chainId`` or ``verifyingContract``: the weights are not bound to one chain's
contract, and the chain they are for is in the message. Attestations (issue 5) will be another
primary type in this domain. The layout is specified in docs/signing.md ("Signed weights").
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

COLLECTOR_DOMAIN: dict[str, str] = {"name": "monitor-collector", "version": "1"}

WEIGHTS_TYPES: dict[str, list[dict[str, str]]] = {
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


def encode_type(primary: str, types: dict[str, list[dict[str, str]]]) -> str:
    """EIP-712 ``encodeType``: the primary type, then referenced struct types by name."""

    def one(name: str) -> str:
        return f"{name}(" + ",".join(f"{f['type']} {f['name']}" for f in types[name]) + ")"

    referenced = sorted(
        {f["type"].removesuffix("[]") for f in types[primary]} & (set(types) - {primary})
    )
    return one(primary) + "".join(one(name) for name in referenced)


WEIGHTS_TYPE_HASH = "0x" + keccak(text=encode_type("Weights", WEIGHTS_TYPES)).hex()


def weights_typed_data(
    *, chain_id: int, window: str, as_of_ms: int, weights: Sequence[tuple[int, str, int]]
) -> dict[str, Any]:
    """The ``full_message`` for eth-account: ``weights`` as (endpoint id, operator id, bps)."""
    return {
        "types": {"EIP712Domain": EIP712_DOMAIN_TYPE, **WEIGHTS_TYPES},
        "primaryType": "Weights",
        "domain": dict(COLLECTOR_DOMAIN),
        "message": {
            "chainId": chain_id,
            "window": window,
            "asOf": as_of_ms,
            "weights": [
                {"endpointId": e, "operatorId": o, "weightBps": bps} for e, o, bps in weights
            ],
        },
    }


def sign_typed(account: LocalAccount, full_message: dict[str, Any]) -> str:
    return _sign(account, full_message)


def recover_signer(full_message: dict[str, Any], signature: str) -> str:
    """Checksum address that signed ``full_message``; BadSignature on a malformed signature."""
    return _recover(encode_typed_data(full_message=full_message), signature)


def service_account(path: Path) -> LocalAccount:
    """The collector's key at ``path``, created (0600) on first start.

    Creating it is safe: the address is what routers and auditors pin, and it is published at
    ``GET /v1/identity``; a new key is a visible change of identity, never a silent one.
    """
    if not Path(path).exists():
        address = generate_key(Path(path))
        log.warning("created the collector's signing key %s: address %s", path, address)
    return load_key(Path(path))
