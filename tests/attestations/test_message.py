"""The signed Attestation message: its layout equals the published EIP-712 types, a figure not
measured is -1, parsing is strict, the documented type hash is the real one, and the digest a
Solidity contract computes by hand (docs/attestations.md) is eth-account's, recovering with
ecrecover's arithmetic to the signer."""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from eth_abi import encode
from eth_account import Account
from eth_account.messages import _hash_eip191_message, encode_typed_data
from eth_keys import keys
from eth_utils import keccak
from pydantic import BaseModel, ValidationError

from monitor.attestations import message as m
from monitor.attestations.evidence import evaluate_evidence
from monitor.signing.collector import (
    ATTESTATION_TYPE_HASH,
    ATTESTATION_TYPES,
    COLLECTOR_DOMAIN,
    attestation_typed_data,
    encode_type,
    published_types,
    recover_signer,
    sign_typed,
)
from monitor.sla.judge import SlaFigures
from monitor.sla.penalties import Recommendation, Violation
from tests.attestations.support import CHAIN, TARGETS, fake_fleet, scenario

DOC = Path(__file__).resolve().parents[2] / "docs" / "attestations.md"
DOCUMENTED_TYPE_HASH = "0xe3a3ce6ba21548216204f8a257836e4c1cbd45bbd7c068f52722a3c5b8a149bf"
START = datetime(2026, 11, 2, 10, 37, tzinfo=UTC)
END = START + timedelta(minutes=6)

STRUCTS: dict[str, type[BaseModel]] = {
    "Attestation": m.AttestationMessage,
    "Subject": m.Subject,
    "Period": m.Period,
    "Targets": m.Targets,
    "Figures": m.Figures,
    "Verdicts": m.Verdicts,
    "Recommendation": m.RecommendationStruct,
    "Violation": m.ViolationStruct,
}


def sample_message(**changes: Any) -> dict[str, Any]:
    fleet = fake_fleet()
    bodies, late = scenario(fleet, START, created=END + timedelta(minutes=5))
    evidence = evaluate_evidence(
        [*bodies, late],
        operator_id="alpha",
        chain_id=CHAIN,
        start=START,
        end=END,
        targets=TARGETS,
        probes=[a.address for a in fleet.probes],
    )
    fields: dict[str, Any] = {
        "chain_id": CHAIN,
        "operator_id": "alpha",
        "start": int(START.timestamp()),
        "end": int(END.timestamp()),
        "targets": TARGETS,
        "figures": evidence.figures,
        "longest_outage_minutes": evidence.longest_outage_minutes,
        "evidence_root": evidence.root,
        "batch_count": len(evidence.batch_hashes),
        "probes": [a.address.lower() for a in fleet.probes],
        "policy_hash": "0x" + keccak(text="policy").hex(),
        "recommendation": Recommendation(
            (Violation("availability", False, 100), Violation("lag", True, 150)), 250
        ),
        "issued_at": int(END.timestamp()) + 60,
        **changes,
    }
    return m.attestation_message(**fields)


def test_models_follow_the_published_types_field_by_field() -> None:
    assert set(STRUCTS) == set(ATTESTATION_TYPES)
    for name, model in STRUCTS.items():
        assert list(model.model_fields) == [f["name"] for f in ATTESTATION_TYPES[name]], name
    assert {"Attestation", "Figures", "Violation"} <= set(published_types())


def test_type_hash_is_the_documented_one() -> None:
    assert ATTESTATION_TYPE_HASH == DOCUMENTED_TYPE_HASH
    text = encode_type("Attestation", ATTESTATION_TYPES)
    assert text.startswith("Attestation(Subject subject,Period period,Targets targets,")
    assert "0x" + keccak(text=text).hex() == DOCUMENTED_TYPE_HASH


def test_docs_state_the_format_exactly() -> None:
    doc = DOC.read_text()
    assert DOCUMENTED_TYPE_HASH in doc
    assert encode_type("Attestation", ATTESTATION_TYPES) in doc.replace("\n", "")
    blocks = [json.loads(b) for b in re.findall(r"^```json\n(.*?)^```$", doc, flags=re.S | re.M)]
    types = [b for b in blocks if isinstance(b, dict) and "Attestation" in b]
    assert types == [{"EIP712Domain": published_types()["EIP712Domain"], **ATTESTATION_TYPES}]


def test_not_measured_is_minus_one_and_probes_are_sorted_checksummed() -> None:
    empty = SlaFigures(
        minutes=5,
        up=0,
        down=0,
        insufficient=5,
        down_by_reason={},
        availability_ppm=None,
        lag_compliance_ppm=None,
        correctness_ppm=None,
        latency_p50_ms=None,
        latency_p95_ms=None,
        latency_p99_ms=None,
        probes=0,
        samples=0,
        verdicts=dict.fromkeys(m.VERDICT_FIELDS, "insufficient_data"),  # type: ignore[arg-type]
    )
    f = m.figures_struct(empty, longest_outage_minutes=0)
    assert (f.availabilityPpm, f.correctnessPpm, f.latencyP95Ms, f.downLagging) == (-1, -1, -1, 0)
    message = sample_message()
    assert message["probes"] == sorted(message["probes"], key=str.lower)
    assert all(p != p.lower() for p in message["probes"])  # EIP-55


@pytest.mark.parametrize(
    "path, value",
    [
        (("figures", "up"), "2"),  # eth-account would encode the string "2" as 2
        (("figures", "up"), 2.0),
        (("figures", "up"), True),
        (("figures", "availabilityPpm"), -2),
        (("batchCount",), 2**32),
        (("verdicts", "lag"), "fine"),
        (("evidenceRoot",), "0x" + "AB" * 32),
        (("subject", "extra"), 1),
    ],
)
def test_parsing_is_strict(path: tuple[str, ...], value: Any) -> None:
    message = sample_message()
    m.AttestationMessage.model_validate(message)
    target = message
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ValidationError):
        m.AttestationMessage.model_validate(message)


# --- what a Solidity verifier computes ----------------------------------------------------------


def th(name: str) -> bytes:
    return keccak(text=encode_type(name, ATTESTATION_TYPES))


def h(text: str) -> bytes:
    return keccak(text=text)


def hash_of(name: str, types: list[str], values: list[Any]) -> bytes:
    """keccak256(abi.encode(TYPEHASH, values...))."""
    return keccak(encode(["bytes32", *types], [th(name), *values]))


def field_types(name: str) -> list[str]:
    return [f["type"] for f in ATTESTATION_TYPES[name]]


def struct_hash(message: dict[str, Any]) -> bytes:
    """hashStruct(Attestation) by hand, as the Solidity sketch of docs/attestations.md does:
    strings as keccak256 of their bytes, arrays as keccak256 of their 32-byte encoded elements
    (abi.encodePacked of an array pads each element), nested structs as their hashStruct."""
    s, p, t, f, v, r = (
        message[k]
        for k in ("subject", "period", "targets", "figures", "verdicts", "recommendation")
    )
    subject = hash_of("Subject", ["uint64", "bytes32"], [s["chainId"], h(s["operatorId"])])
    period = hash_of("Period", field_types("Period"), list(p.values()))
    targets = hash_of("Targets", field_types("Targets"), list(t.values()))
    figures = hash_of("Figures", field_types("Figures"), list(f.values()))
    verdicts = hash_of("Verdicts", ["bytes32"] * 4, [h(x) for x in v.values()])
    violations = b"".join(
        hash_of(
            "Violation",
            ["bytes32", "bool", "uint32"],
            [h(x["kind"]), x["repeated"], x["penaltyBps"]],
        )
        for x in r["violations"]
    )
    recommendation = hash_of(
        "Recommendation", ["bytes32", "uint32"], [keccak(violations), r["penaltyBps"]]
    )
    probes = keccak(b"".join(bytes(12) + bytes.fromhex(a[2:]) for a in message["probes"]))
    return hash_of(
        "Attestation",
        ["bytes32"] * 5 + ["bytes32", "uint32", "bytes32", "bytes32", "bytes32", "uint64"],
        [
            subject,
            period,
            targets,
            figures,
            verdicts,
            bytes.fromhex(message["evidenceRoot"][2:]),
            message["batchCount"],
            probes,
            bytes.fromhex(message["policyHash"][2:]),
            recommendation,
            message["issuedAt"],
        ],
    )


def test_the_solidity_recipe_gives_eth_accounts_digest_and_ecrecover_finds_the_signer() -> None:
    account = Account.create()
    message = sample_message()
    typed = attestation_typed_data(message)
    signature = sign_typed(account, typed)
    assert recover_signer(json.loads(json.dumps(typed)), signature) == account.address

    domain_separator = keccak(
        encode(
            ["bytes32", "bytes32", "bytes32"],
            [
                h("EIP712Domain(string name,string version)"),
                h(COLLECTOR_DOMAIN["name"]),
                h(COLLECTOR_DOMAIN["version"]),
            ],
        )
    )
    signable = encode_typed_data(full_message=typed)
    assert signable.header == domain_separator
    assert signable.body == struct_hash(message)
    digest = keccak(b"\x19\x01" + domain_separator + struct_hash(message))
    assert digest == _hash_eip191_message(signable)

    raw = bytes.fromhex(signature[2:])
    r, s, v = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:64], "big"), raw[64]
    recovered = keys.Signature(vrs=(v - 27, r, s)).recover_public_key_from_msg_hash(digest)
    assert recovered.to_checksum_address() == account.address


def test_any_change_recovers_another_address() -> None:
    account = Account.create()
    typed = attestation_typed_data(sample_message())
    signature = sign_typed(account, typed)
    for path, value in [
        (("figures", "up"), 3),
        (("figures", "latencyP95Ms"), -1),
        (("verdicts", "lag"), "met"),
        (("recommendation", "penaltyBps"), 0),
        (("period", "end"), typed["message"]["period"]["end"] + 60),
        (("subject", "operatorId"), "bravo"),
    ]:
        changed = copy.deepcopy(typed)
        target = changed["message"]
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        assert recover_signer(changed, signature) != account.address, path
    dropped = copy.deepcopy(typed)
    dropped["message"]["probes"] = dropped["message"]["probes"][1:]
    assert recover_signer(dropped, signature) != account.address
