"""What the governance signers sign (EIP-712, their own keys): approval of one registry.

A third domain, ``{"name": "monitor-governance", "version": "1"}``, apart from the probes'
``monitor-probe`` and the collectors' ``monitor-collector``: an approval can never be replayed as
a batch or a weights answer, nor the other way round. No ``chainId`` or ``verifyingContract``: a
registry is not bound to one chain, and the message is only the registry's hash
(monitor.registry.canonical; docs/governance.md).
"""

from __future__ import annotations

import re
from typing import Any

from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils import keccak

from monitor.exceptions import BadSignature
from monitor.signing.eip712 import EIP712_DOMAIN_TYPE, _recover, _sign

GOVERNANCE_DOMAIN: dict[str, str] = {"name": "monitor-governance", "version": "1"}

REGISTRY_APPROVAL_TYPES: dict[str, list[dict[str, str]]] = {
    "RegistryApproval": [{"name": "registryHash", "type": "bytes32"}],
}

# keccak256("RegistryApproval(bytes32 registryHash)"): what an on-chain verifier hard-codes.
REGISTRY_APPROVAL_TYPE_HASH = "0x" + keccak(text="RegistryApproval(bytes32 registryHash)").hex()

_HASH_RE = re.compile(r"^0x[0-9a-f]{64}$")


def registry_approval_typed_data(registry_hash: str) -> dict[str, Any]:
    """The ``full_message`` for eth-account: ``registry_hash`` is ``0x`` + 64 lowercase hex."""
    if not isinstance(registry_hash, str) or not _HASH_RE.match(registry_hash):
        raise ValueError(f"registry hash {registry_hash!r} is not 0x + 64 lowercase hex digits")
    return {
        "types": {"EIP712Domain": EIP712_DOMAIN_TYPE, **REGISTRY_APPROVAL_TYPES},
        "primaryType": "RegistryApproval",
        "domain": dict(GOVERNANCE_DOMAIN),
        "message": {"registryHash": registry_hash},
    }


def sign_registry_hash(account: LocalAccount, registry_hash: str) -> str:
    """``0x`` + 130 hex digits; deterministic (RFC 6979): signing twice gives the same string."""
    return _sign(account, registry_approval_typed_data(registry_hash))


def recover_registry_signer(registry_hash: str, signature: str) -> str:
    """Checksum address that approved ``registry_hash``; BadSignature on a malformed signature.

    A signature over another hash recovers to some other address, never an error: compare the
    result with the claimed signer."""
    try:
        signable = encode_typed_data(full_message=registry_approval_typed_data(registry_hash))
    except ValueError as exc:
        raise BadSignature(str(exc)) from exc
    return _recover(signable, signature)
