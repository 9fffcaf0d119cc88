"""Governance over the registry: k of n configured signers must approve a registry's hash.

The approvals live in a sidecar file next to the registry, ``FILE.sigs.json``: a JSON list of
``{"signer", "registry_hash", "signature"}``. ``monitor registry sign`` adds or replaces one
signer's entry and never touches the YAML; ``monitor registry apply`` counts the distinct
configured signers whose signature recovers over *this* file's hash (docs/governance.md).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from monitor.exceptions import BadSignature, GovernanceError, RegistryError
from monitor.registry.canonical import registry_hash
from monitor.registry.schema import checked_address, load_registry
from monitor.signing.governance import recover_registry_signer, sign_registry_hash

SIDECAR_SUFFIX = ".sigs.json"
MAX_SIDECAR_BYTES = 1024 * 1024  # a few thousand signatures; a bigger file is a mistake
_HASH_RE = re.compile(r"^0x[0-9a-f]{64}$")
_SIGNATURE_RE = re.compile(r"^0x[0-9a-fA-F]{130}$")


@dataclass(frozen=True)
class Governance:
    """The configured signers (EIP-55, distinct) and how many of them must approve."""

    signers: tuple[str, ...]
    threshold: int

    @classmethod
    def configured(cls, signers: Sequence[str], threshold: int | None) -> Governance | None:
        """None without signers: any registry applies (settings validated k and n already)."""
        if not signers or threshold is None:
            return None
        return cls(signers=tuple(signers), threshold=threshold)


class RegistrySignature(BaseModel):
    """One entry of the sidecar file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    signer: str
    registry_hash: str
    signature: str

    @field_validator("signer")
    @classmethod
    def _address(cls, value: str) -> str:
        return checked_address(value)

    @field_validator("registry_hash")
    @classmethod
    def _hash(cls, value: str) -> str:
        if not _HASH_RE.match(value):
            raise ValueError("not 0x followed by 64 lowercase hex digits")
        return value

    @field_validator("signature")
    @classmethod
    def _signature(cls, value: str) -> str:
        if not _SIGNATURE_RE.match(value):
            raise ValueError("not 0x followed by 130 hex digits")
        return value


@dataclass
class Approval:
    """What the check found: the signatures counted (one per signer, sorted by address) and why
    each other one was not."""

    registry_hash: str
    signatures: list[RegistrySignature]
    threshold: int | None
    governance_signers: list[str]
    not_counted: list[str] = field(default_factory=list)

    @property
    def signers(self) -> list[str]:
        return [s.signer for s in self.signatures]

    def describe(self) -> str:
        if self.threshold is None:
            who = ", ".join(self.signers) or "nobody"
            return f"registry {self.registry_hash} (no governance configured; signed by {who})"
        return (
            f"registry {self.registry_hash}, approved by {len(self.signers)} of "
            f"{len(self.governance_signers)} governance signers (threshold {self.threshold}): "
            + ", ".join(self.signers)
        )


def sidecar_path(registry_file: Path) -> Path:
    return registry_file.with_name(registry_file.name + SIDECAR_SUFFIX)


def load_signatures(path: Path) -> list[RegistrySignature]:
    """The entries of a sidecar file; none when it does not exist. RegistryError names the file
    and the entry when it is not a list of signature entries."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_SIDECAR_BYTES + 1)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise RegistryError(f"{path}: cannot read: {exc.strerror}") from None
    if len(raw) > MAX_SIDECAR_BYTES:
        raise RegistryError(f"{path}: larger than {MAX_SIDECAR_BYTES} bytes")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RegistryError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(data, list):
        raise RegistryError(f"{path}: must be a JSON list of {{signer, registry_hash, signature}}")
    entries = []
    for i, item in enumerate(data):
        try:
            entries.append(RegistrySignature.model_validate(item))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            where = f"[{i}].{where}" if where else f"[{i}]"
            raise RegistryError(f"{path}: {where}: {first['msg']}") from None
    return entries


def _write_atomically(path: Path, entries: Sequence[RegistrySignature]) -> None:
    """Replace ``path`` whole: a crash leaves the old file or the new one, never half of one."""
    text = json.dumps([e.model_dump() for e in entries], indent=2) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # signatures are public; mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass
class SignOutcome:
    registry_hash: str
    signer: str
    sidecar: Path
    entries: list[RegistrySignature]

    @property
    def stale(self) -> list[RegistrySignature]:
        """Entries over another version of the file: their signers must sign again."""
        return [e for e in self.entries if e.registry_hash != self.registry_hash]


def sign_registry_file(registry_file: Path, account: LocalAccount) -> SignOutcome:
    """Validate the registry, sign its hash and put the signature in its sidecar, replacing this
    signer's earlier entry (so signing twice changes nothing). The registry file is only read."""
    registry = load_registry(registry_file)  # an invalid registry is never signed
    digest = registry_hash(registry)
    sidecar = sidecar_path(registry_file)
    entries = load_signatures(sidecar)
    mine = RegistrySignature(
        signer=account.address,
        registry_hash=digest,
        signature=sign_registry_hash(account, digest),
    )
    others = [e for e in entries if e.signer != mine.signer]
    at = next((i for i, e in enumerate(entries) if e.signer == mine.signer), len(others))
    updated = [*others[:at], mine, *others[at:]]
    if updated != entries:
        _write_atomically(sidecar, updated)
    return SignOutcome(registry_hash=digest, signer=mine.signer, sidecar=sidecar, entries=updated)


def _recovers(entry: RegistrySignature, digest: str) -> str | None:
    """None when the entry is a valid signature of its signer over ``digest``, else why not."""
    if entry.registry_hash != digest:
        return (
            f"signed registry {entry.registry_hash}, not this one (the file changed since: "
            "ask for a new signature)"
        )
    try:
        recovered = recover_registry_signer(digest, entry.signature)
    except BadSignature as exc:
        return f"bad signature: {exc.message}"
    if recovered != entry.signer:
        return f"signature does not recover to its signer (it recovers to {recovered})"
    return None


def approve(
    digest: str,
    signatures: Sequence[RegistrySignature],
    *,
    governance: Governance | None,
    source: str,
) -> Approval:
    """Check the signatures over ``digest``. Without governance every valid one is recorded and
    nothing is required; with it, GovernanceError unless ``governance.threshold`` distinct
    configured signers approved this hash."""
    allowed = set(governance.signers) if governance is not None else None
    counted: dict[str, RegistrySignature] = {}
    not_counted: list[str] = []
    for entry in signatures:
        problem = _recovers(entry, digest)
        if problem is None and allowed is not None and entry.signer not in allowed:
            problem = "not a governance signer"
        if problem is not None:
            not_counted.append(f"{entry.signer}: {problem}")
        else:
            counted.setdefault(entry.signer, entry)
    approval = Approval(
        registry_hash=digest,
        signatures=[counted[s] for s in sorted(counted, key=str.lower)],
        threshold=governance.threshold if governance is not None else None,
        governance_signers=list(governance.signers) if governance is not None else [],
        not_counted=not_counted,
    )
    if governance is not None and len(counted) < governance.threshold:
        raise GovernanceError(_refusal(approval, governance, source))
    return approval


def _refusal(approval: Approval, governance: Governance, source: str) -> str:
    lines = [
        f"{source}: registry {approval.registry_hash} is not approved: "
        f"{len(approval.signers)} valid signature(s) of governance signers, "
        f"{governance.threshold} required ({governance.threshold} of "
        f"{len(governance.signers)}: {', '.join(governance.signers)})",
        f"  counted: {', '.join(approval.signers) or 'none'}",
    ]
    lines += [f"  not counted: {reason}" for reason in approval.not_counted]
    lines.append("nothing was applied: the registry in force is unchanged")
    return "\n".join(lines)


def summary_json(approval: Approval) -> dict[str, Any]:
    """The approval as stored and published: signatures as ``{signer, signature}``."""
    return {
        "registry_hash": approval.registry_hash,
        "signatures": [{"signer": s.signer, "signature": s.signature} for s in approval.signatures],
        "threshold": approval.threshold,
        "governance_signers": approval.governance_signers,
    }
