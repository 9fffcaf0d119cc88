"""The governance domain: a registry approval round trip, determinism, another hash or domain
recovering another address, malformed input refused, and the published type hash."""

from __future__ import annotations

from pathlib import Path

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak

from monitor.exceptions import BadSignature
from monitor.signing.collector import COLLECTOR_DOMAIN, encode_type
from monitor.signing.eip712 import DOMAIN
from monitor.signing.governance import (
    GOVERNANCE_DOMAIN,
    REGISTRY_APPROVAL_TYPE_HASH,
    REGISTRY_APPROVAL_TYPES,
    recover_registry_signer,
    registry_approval_typed_data,
    sign_registry_hash,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "governance.md"
HASH_A = "0x" + keccak(b"registry a").hex()
HASH_B = "0x" + keccak(b"registry b").hex()
SIGNER = Account.from_key("0x" + "4c" * 32)


def test_round_trip_and_determinism() -> None:
    signature = sign_registry_hash(SIGNER, HASH_A)
    assert signature == sign_registry_hash(SIGNER, HASH_A)  # RFC 6979: one signature per hash
    assert len(signature) == 132 and signature[-2:] in ("1b", "1c")
    assert recover_registry_signer(HASH_A, signature) == SIGNER.address
    # Over another hash, the same signature recovers to somebody else: never to the signer.
    assert recover_registry_signer(HASH_B, signature) != SIGNER.address


def test_the_layout_and_type_hash() -> None:
    assert GOVERNANCE_DOMAIN == {"name": "monitor-governance", "version": "1"}
    assert GOVERNANCE_DOMAIN["name"] not in (DOMAIN["name"], COLLECTOR_DOMAIN["name"])
    assert encode_type("RegistryApproval", REGISTRY_APPROVAL_TYPES) == (
        "RegistryApproval(bytes32 registryHash)"
    )
    # The value docs/governance.md gives, for a Solidity verifier.
    documented = "0xcd9d860d7bd6732959685a074e13d125ba7c1f355c60dadb8482c36f1024550d"
    assert documented == REGISTRY_APPROVAL_TYPE_HASH
    assert documented in DOC.read_text()


def test_a_signature_in_another_domain_does_not_count() -> None:
    typed = registry_approval_typed_data(HASH_A)
    typed["domain"] = dict(COLLECTOR_DOMAIN)
    signed = SIGNER.sign_message(encode_typed_data(full_message=typed))
    assert recover_registry_signer(HASH_A, "0x" + bytes(signed.signature).hex()) != SIGNER.address


def test_eth_account_alone_recovers_the_signer() -> None:
    full_message = {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
            ],
            "RegistryApproval": [{"name": "registryHash", "type": "bytes32"}],
        },
        "primaryType": "RegistryApproval",
        "domain": {"name": "monitor-governance", "version": "1"},
        "message": {"registryHash": HASH_A},
    }
    signature = sign_registry_hash(SIGNER, HASH_A)
    recovered = Account.recover_message(
        encode_typed_data(full_message=full_message), signature=signature
    )
    assert recovered == SIGNER.address


@pytest.mark.parametrize(
    "signature",
    ["0x1234", "0x" + "00" * 65, sign_registry_hash(SIGNER, HASH_A)[:-2] + "1d", 42],
    ids=["short", "zero", "bad-v", "not-a-string"],
)
def test_malformed_signatures_are_bad_signatures(signature: object) -> None:
    with pytest.raises(BadSignature):
        recover_registry_signer(HASH_A, signature)  # type: ignore[arg-type]


@pytest.mark.parametrize("digest", ["0x1234", HASH_A.upper().replace("0X", "0x"), HASH_A[2:]])
def test_a_malformed_hash_is_refused(digest: str) -> None:
    with pytest.raises(ValueError, match="not 0x \\+ 64 lowercase hex"):
        sign_registry_hash(SIGNER, digest)
    with pytest.raises(BadSignature):
        recover_registry_signer(digest, sign_registry_hash(SIGNER, HASH_A))
