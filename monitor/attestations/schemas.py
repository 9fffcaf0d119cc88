"""The attestation API's request and answers (docs/api.md, "Attestations")."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

BUNDLE_FORMAT = "monitor-attestation-bundle/1"


class IssueRequest(BaseModel):
    """The body of ``POST /v1/attestations``."""

    model_config = ConfigDict(extra="forbid")

    operator_id: Annotated[str, StringConstraints(pattern=r"^[a-z0-9-]{1,64}$")]
    chain_id: int = Field(gt=0, le=2**63 - 1)
    start: AwareDatetime = Field(description="ISO 8601 with a zone, a whole minute")
    end: AwareDatetime = Field(description="ISO 8601 with a zone, a whole minute, exclusive")

    @field_validator("start", "end")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        try:
            return value.astimezone(UTC)
        except OverflowError:  # 0001-01-01T00:00+01:00 is before the first UTC datetime
            raise ValueError("out of range once converted to UTC") from None


class Cosignature(BaseModel):
    """Another collector's signature over exactly the attestation's ``typed_data``."""

    model_config = ConfigDict(extra="forbid")

    signer: str = Field(
        pattern=r"^0x[0-9a-fA-F]{40}$",
        description="the countersigning collector's address: the signature must recover to it",
    )
    signature: str = Field(
        pattern=r"^0x[0-9a-fA-F]{130}$", description="EIP-712, over the attestation's typed_data"
    )


class AttestationOut(BaseModel):
    """One attestation: everything needed to check its signature with eth-account alone."""

    id: int
    typed_data: dict[str, Any] = Field(
        description="the full EIP-712 typed data: types, primaryType, domain, message"
    )
    signature: str = Field(description="the collector's signature over typed_data (65 bytes)")
    signer: str = Field(
        description="informative: compare the address the signature recovers to with the one "
        "you pinned from GET /v1/identity"
    )
    policy: dict[str, Any] = Field(
        description="the penalty policy in force, whose keccak256 of its canonical JSON is the "
        "signed policyHash"
    )
    cosignatures: list[Cosignature] = Field(
        default_factory=list,
        description="other collectors' signatures over the same typed_data: each recomputed the "
        "attestation from its own copy of the evidence (docs/attestations.md)",
    )


class CosignRequest(BaseModel):
    """The body of ``POST /v1/attestations/cosign``: an attestation as another collector serves
    it at ``GET /v1/attestations/{id}``. Only ``typed_data`` and ``signature`` are used; ``id``,
    ``policy`` and ``cosignatures`` are accepted so that the answer can be posted unchanged."""

    model_config = ConfigDict(extra="forbid")

    typed_data: dict[str, Any]
    signature: str = Field(pattern=r"^0x[0-9a-fA-F]{130}$")
    signer: str | None = Field(None, pattern=r"^0x[0-9a-fA-F]{40}$")
    id: int | None = None
    policy: dict[str, Any] | None = None
    cosignatures: list[Cosignature] | None = None


class Countersigned(BaseModel):
    """This collector's answer to ``POST /v1/attestations/cosign``."""

    signer: str = Field(description="this collector's address (GET /v1/identity)")
    signature: str = Field(description="its signature over the attestation's typed_data")
    attestation_id: int = Field(
        description="the id under which this collector now serves the attestation (ids are "
        "local to each collector)"
    )


class AttestationSummary(BaseModel):
    id: int
    operator_id: str
    chain_id: int
    start: datetime
    end: datetime
    issued_at: datetime
    evidence_root: str
    batch_count: int
    violations: list[str] = Field(description="the violation kinds of the recommendation")
    signer: str


class EvidenceOut(BaseModel):
    root: str = Field(description="the Merkle root over batch_hashes (the signed evidenceRoot)")
    batch_hashes: list[str] = Field(description="keccak256 of each raw batch body, sorted")


class BundleOut(BaseModel):
    """``GET /v1/attestations/{id}/bundle``: what ``monitor verify`` checks offline."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["monitor-attestation-bundle/1"]
    attestation: AttestationOut
    batches: list[str] = Field(description="every raw batch body, exactly as received, by hash")
