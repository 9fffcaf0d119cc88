"""Registry governance, on SQLite and PostgreSQL: k of n signatures over this file's hash apply
it; fewer are refused with an error naming the hash, who counted and why the others did not, and
nothing changes; the sidecar file; what is recorded; the documented verification script."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from eth_account import Account
from eth_account.signers.local import LocalAccount
from sqlalchemy import Engine, select

from monitor.db.models import Chain
from monitor.db.session import session_scope
from monitor.exceptions import ConfigError, GovernanceError, RegistryError
from monitor.registry.apply import ApplySummary, apply_registry
from monitor.registry.canonical import canonical_registry, registry_hash
from monitor.registry.governance import (
    MAX_SIDECAR_BYTES,
    Governance,
    RegistrySignature,
    load_signatures,
    sidecar_path,
    sign_registry_file,
)
from monitor.registry.schema import load_registry
from monitor.registry.state import RegistryInForce, registered_collectors, registry_in_force
from monitor.signing.governance import sign_registry_hash
from tests.conftest import row_counts
from tests.registry.samples import sample

DOC = Path(__file__).resolve().parents[2] / "docs" / "governance.md"
SIGNERS = [Account.from_key("0x" + f"{i:02x}" * 32) for i in (0x11, 0x22, 0x33)]
OUTSIDER = Account.from_key("0x" + "44" * 32)
GOVERNANCE = Governance(signers=tuple(a.address for a in SIGNERS), threshold=2)
COLLECTOR = "0xdcB6f58f1CbfF41B9A05A227db84A2CfD800a9C1"


def write(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text("# reviewed by governance\n" + yaml.safe_dump(doc))
    return path


def sign(path: Path, *accounts: LocalAccount) -> list[RegistrySignature]:
    for account in accounts:
        sign_registry_file(path, account)
    return load_signatures(sidecar_path(path))


def apply(engine: Engine, path: Path, governance: Governance | None = GOVERNANCE) -> ApplySummary:
    with session_scope(engine) as session:
        return apply_registry(
            session,
            registry=load_registry(path),
            governance=governance,
            signatures=load_signatures(sidecar_path(path)),
            source=str(path),
        )


def in_force(engine: Engine) -> RegistryInForce | None:
    with session_scope(engine) as session:
        return registry_in_force(session)


def refused(engine: Engine, path: Path) -> str:
    """Apply must fail and change nothing: every table's row count and the registry in force."""
    before, state = row_counts(engine), in_force(engine)
    with pytest.raises(GovernanceError) as info:
        apply(engine, path)
    assert isinstance(info.value, ConfigError)  # the CLI's exit 2
    assert row_counts(engine) == before
    assert in_force(engine) == state
    return info.value.message


# --- the sidecar ----------------------------------------------------------------------------------


def test_signing_adds_replaces_and_never_touches_the_yaml(tmp_path: Path) -> None:
    path = write(tmp_path / "registry.yaml", sample())
    text = path.read_text()
    digest = registry_hash(load_registry(path))
    outcome = sign_registry_file(path, SIGNERS[0])
    assert (
        outcome.registry_hash == digest and outcome.sidecar == tmp_path / "registry.yaml.sigs.json"
    )
    first = outcome.sidecar.read_bytes()
    assert sign_registry_file(path, SIGNERS[0]).entries == outcome.entries
    assert outcome.sidecar.read_bytes() == first  # idempotent: signing twice changes nothing
    sign_registry_file(path, SIGNERS[1])
    assert path.read_text() == text
    entries = load_signatures(outcome.sidecar)
    assert [e.signer for e in entries] == [SIGNERS[0].address, SIGNERS[1].address]
    assert {e.registry_hash for e in entries} == {digest}
    # The file changes: a new signature replaces the signer's old one in place; others are stale.
    doc = sample()
    doc["chains"][0]["confirmations"] = 9
    write(path, doc)
    outcome = sign_registry_file(path, SIGNERS[0])
    assert [e.signer for e in outcome.entries] == [SIGNERS[0].address, SIGNERS[1].address]
    assert [e.signer for e in outcome.stale] == [SIGNERS[1].address]
    assert outcome.entries[0].registry_hash == registry_hash(load_registry(path)) != digest


def test_an_invalid_registry_is_never_signed(tmp_path: Path) -> None:
    doc = sample()
    doc["chains"][0]["confirmations"] = -1
    path = write(tmp_path / "registry.yaml", doc)
    with pytest.raises(RegistryError, match="confirmations"):
        sign_registry_file(path, SIGNERS[0])
    assert not sidecar_path(path).exists()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"signer": "0x"}', "must be a JSON list"),
        (b'[{"signer": "0x12", "registry_hash": "0x", "signature": "0x"}]', "[0].signer"),
        (
            json.dumps([{"signer": COLLECTOR, "registry_hash": "0x" + "ab" * 32}]).encode(),
            "[0].signature: Field required",
        ),
        (
            json.dumps(
                [{"signer": COLLECTOR, "registry_hash": "0x" + "AB" * 32, "signature": "0x"}]
            ).encode(),
            "[0].registry_hash",
        ),
        (b"[" + b" " * MAX_SIDECAR_BYTES + b"]", "larger than"),
    ],
    ids=["not-json", "not-list", "bad-signer", "missing", "upper-hash", "too-large"],
)
def test_a_malformed_sidecar_is_an_error_naming_file_and_entry(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    path = tmp_path / "registry.yaml.sigs.json"
    path.write_bytes(content)
    with pytest.raises(RegistryError) as info:
        load_signatures(path)
    assert info.value.message.startswith(f"{path}: ")
    assert expected in info.value.message


def test_no_sidecar_is_no_signatures(tmp_path: Path) -> None:
    assert load_signatures(tmp_path / "none.sigs.json") == []


# --- applying -------------------------------------------------------------------------------------


def test_two_of_three_apply_and_are_recorded(engine: Engine, tmp_path: Path) -> None:
    doc = sample()
    doc["collectors"] = [{"address": COLLECTOR, "name": "c1", "url": "https://c1.example"}]
    path = write(tmp_path / "registry.yaml", doc)
    sign(path, SIGNERS[2], SIGNERS[0])
    summary = apply(engine, path)
    digest = registry_hash(load_registry(path))
    assert summary.approval is not None and summary.approval.registry_hash == digest
    assert "approved by 2 of 3 governance signers (threshold 2)" in summary.approval.describe()
    state = in_force(engine)
    assert state is not None
    assert state.hash == digest
    assert state.signers == sorted([SIGNERS[0].address, SIGNERS[2].address], key=str.lower)
    assert state.threshold == 2 and state.governance_signers == list(GOVERNANCE.signers)
    assert [c.address for c in state.collectors] == [COLLECTOR]
    with session_scope(engine) as session:
        assert [c.name for c in registered_collectors(session)] == ["c1"]
        assert {c.chain_id for c in session.scalars(select(Chain))} == {1, 10}
    # Applied again with the third signature: same hash, same time in force, three signers.
    sign(path, SIGNERS[1])
    apply(engine, path)
    again = in_force(engine)
    assert again is not None and again.applied_at == state.applied_at
    assert len(again.signers) == 3


def test_one_of_three_is_refused_and_nothing_changes(engine: Engine, tmp_path: Path) -> None:
    first = write(tmp_path / "first.yaml", sample())
    sign(first, *SIGNERS[:2])
    apply(engine, first)
    kept = registry_hash(load_registry(first))

    doc = sample()
    doc["probes"].append({"address": OUTSIDER.address, "name": "mine", "region": "x"})
    path = write(tmp_path / "registry.yaml", doc)
    sign(path, SIGNERS[1])
    message = refused(engine, path)
    digest = registry_hash(load_registry(path))
    assert message.splitlines() == [
        f"{path}: registry {digest} is not approved: 1 valid signature(s) of governance signers, "
        f"2 required (2 of 3: {', '.join(GOVERNANCE.signers)})",
        f"  counted: {SIGNERS[1].address}",
        f"nothing was applied: the registry in force is unchanged: {kept}",
    ]


def test_no_signature_at_all_on_an_empty_database(engine: Engine, tmp_path: Path) -> None:
    path = write(tmp_path / "registry.yaml", sample())
    message = refused(engine, path)
    assert "0 valid signature(s)" in message and "counted: none" in message
    assert message.endswith("unchanged: none applied yet")


def test_a_non_governance_signature_is_not_counted(engine: Engine, tmp_path: Path) -> None:
    path = write(tmp_path / "registry.yaml", sample())
    sign(path, SIGNERS[0], OUTSIDER)
    message = refused(engine, path)
    assert f"  not counted: {OUTSIDER.address}: not a governance signer" in message.splitlines()


def test_a_signature_over_another_hash_is_not_counted(engine: Engine, tmp_path: Path) -> None:
    path = write(tmp_path / "registry.yaml", sample())
    sign(path, SIGNERS[0], SIGNERS[1])
    old = registry_hash(load_registry(path))
    doc = sample()
    doc["chains"][0]["confirmations"] = 9  # changed after they signed
    write(path, doc)
    sign(path, SIGNERS[2])
    message = refused(engine, path)
    assert (
        f"  not counted: {SIGNERS[0].address}: signed registry {old}, not this one (the file "
        "changed since: ask for a new signature)"
    ) in message.splitlines()
    assert f"  counted: {SIGNERS[2].address}" in message.splitlines()

    # An entry that claims this hash but carries a signature over the old one: recovers to
    # somebody else, so it does not count either.
    digest = registry_hash(load_registry(path))
    forged = RegistrySignature(
        signer=SIGNERS[0].address,
        registry_hash=digest,
        signature=sign_registry_hash(SIGNERS[0], old),
    )
    entries = [*load_signatures(sidecar_path(path)), forged]
    sidecar_path(path).write_text(json.dumps([e.model_dump() for e in entries]))
    message = refused(engine, path)
    assert f"  not counted: {SIGNERS[0].address}: signature does not recover to its signer" in (
        message
    )


def test_a_signer_listed_twice_counts_once(engine: Engine, tmp_path: Path) -> None:
    path = write(tmp_path / "registry.yaml", sample())
    (entry,) = sign(path, SIGNERS[0])
    sidecar_path(path).write_text(json.dumps([entry.model_dump()] * 2))
    assert "1 valid signature(s)" in refused(engine, path)


def test_without_governance_any_registry_applies_and_its_hash_is_recorded(
    engine: Engine, tmp_path: Path
) -> None:
    path = write(tmp_path / "registry.yaml", sample())
    sign(path, OUTSIDER)
    summary = apply(engine, path, governance=None)
    assert summary.approval is not None
    assert "no governance configured; signed by" in summary.approval.describe()
    state = in_force(engine)
    assert state is not None
    assert state.hash == registry_hash(load_registry(path))
    assert state.signers == [OUTSIDER.address] and state.threshold is None
    assert state.governance_signers == []
    # The plain call every other caller uses records the hash too.
    doc = sample()
    doc["chains"].pop()
    doc["operators"][0]["endpoints"].pop()
    with session_scope(engine) as session:
        registry = load_registry(write(tmp_path / "other.yaml", doc))
        apply_registry(session, registry=registry)
    other = in_force(engine)
    assert other is not None and other.hash == registry_hash(registry) != state.hash
    assert other.signers == [] and other.applied_at > state.applied_at


# --- the documented script ------------------------------------------------------------------------


def test_the_documented_script_verifies_with_eth_account_alone(tmp_path: Path) -> None:
    blocks = re.findall(r"^```python\n(.*?)^```$", DOC.read_text(), flags=re.S | re.M)
    (script,) = [b for b in blocks if b.startswith("# verify_registry.py")]
    (tmp_path / "verify_registry.py").write_text(script)
    path = write(tmp_path / "registry.yaml", sample())
    (tmp_path / "registry.json").write_bytes(canonical_registry(load_registry(path)))
    sign(path, SIGNERS[0], SIGNERS[1])

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-I", "verify_registry.py", "registry.json", sidecar_path(path).name],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    proc = run()
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        f"registry {registry_hash(load_registry(path))}",
        f"OK: {SIGNERS[0].address}",
        f"OK: {SIGNERS[1].address}",
    ]
    # One value changed in the reviewed JSON: no signature is over it any more.
    value = json.loads((tmp_path / "registry.json").read_text())
    value["chains"][0]["confirmations"] = 9
    (tmp_path / "registry.json").write_text(json.dumps(value, indent=1))
    proc = run()
    assert proc.returncode == 1
    assert proc.stdout.count("NOT THIS REGISTRY") == 2
