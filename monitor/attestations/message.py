"""The signed ``Attestation`` message (EIP-712, docs/attestations.md), as strict models.

The field names and order are those of ``ATTESTATION_TYPES`` in monitor.signing.collector (a
test keeps the two equal). The models serve both ways: the issuer builds a message from the SLA
figures, and a verifier parses one strictly: a JSON integer only where an integer is signed (no
``"5"``, no ``5.0``, no ``true``, all of which eth-account would quietly encode), in the range of
its Solidity type, with no field missing or extra.

A figure that was not measured (``None``: no minute judged, no answer with a latency, ...) is
encoded as ``-1`` in its ``int64`` field; every measured figure is >= 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from eth_utils import to_checksum_address
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from monitor.sla.judge import REASONS, SlaFigures, SlaTargets
from monitor.sla.penalties import Recommendation

NOT_MEASURED = -1

U32 = Annotated[int, Field(ge=0, le=2**32 - 1)]
U64 = Annotated[int, Field(ge=0, le=2**64 - 1)]
Figure = Annotated[int, Field(ge=NOT_MEASURED, le=2**63 - 1)]  # int64, -1 = not measured
Bytes32 = Annotated[str, StringConstraints(pattern=r"^0x[0-9a-f]{64}$")]
Address = Annotated[str, StringConstraints(pattern=r"^0x[0-9a-fA-F]{40}$")]
VerdictText = Literal["met", "breached", "insufficient_data"]

# SlaFigures.verdicts keys -> Verdicts field names
VERDICT_FIELDS = {
    "availability": "availability",
    "latency_p95": "latencyP95",
    "lag": "lag",
    "correctness": "correctness",
}


class _Struct(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Subject(_Struct):
    chainId: U64
    operatorId: Annotated[str, StringConstraints(pattern=r"^[a-z0-9-]{1,64}$")]


class Period(_Struct):
    start: U64  # unix seconds, a whole minute
    end: U64  # exclusive


class Targets(_Struct):
    availabilityPpm: U32
    latencyP95Ms: U64
    maxLagBlocks: U64
    correctnessPpm: U32
    minProbes: U32
    minCoveragePpm: U32


class Figures(_Struct):
    totalMinutes: U32
    up: U32
    down: U32
    insufficient: U32
    downUnavailable: U32
    downLagging: U32
    downIncorrect: U32
    longestOutageMinutes: U32
    availabilityPpm: Figure
    lagCompliancePpm: Figure
    correctnessPpm: Figure
    latencyP50Ms: Figure
    latencyP95Ms: Figure
    latencyP99Ms: Figure
    probeCount: U32
    samples: U64


class Verdicts(_Struct):
    availability: VerdictText
    latencyP95: VerdictText
    lag: VerdictText
    correctness: VerdictText


class ViolationStruct(_Struct):
    kind: str
    repeated: bool
    penaltyBps: U32


class RecommendationStruct(_Struct):
    violations: list[ViolationStruct]
    penaltyBps: U32


class AttestationMessage(_Struct):
    subject: Subject
    period: Period
    targets: Targets
    figures: Figures
    verdicts: Verdicts
    evidenceRoot: Bytes32
    batchCount: U32
    probes: list[Address]  # EIP-55, sorted by address value
    policyHash: Bytes32
    recommendation: RecommendationStruct
    issuedAt: U64  # unix seconds


# --- from the SLA objects -----------------------------------------------------------------------


def _figure(value: int | None) -> int:
    return NOT_MEASURED if value is None else value


def targets_struct(targets: SlaTargets) -> Targets:
    return Targets(
        availabilityPpm=targets.availability_ppm,
        latencyP95Ms=targets.latency_p95_ms,
        maxLagBlocks=targets.max_lag_blocks,
        correctnessPpm=targets.correctness_ppm,
        minProbes=targets.min_probes,
        minCoveragePpm=targets.min_coverage_ppm,
    )


def figures_struct(figures: SlaFigures, *, longest_outage_minutes: int) -> Figures:
    down = {reason: figures.down_by_reason.get(reason, 0) for reason in REASONS}
    return Figures(
        totalMinutes=figures.minutes,
        up=figures.up,
        down=figures.down,
        insufficient=figures.insufficient,
        downUnavailable=down["unavailable"],
        downLagging=down["lagging"],
        downIncorrect=down["incorrect"],
        longestOutageMinutes=longest_outage_minutes,
        availabilityPpm=_figure(figures.availability_ppm),
        lagCompliancePpm=_figure(figures.lag_compliance_ppm),
        correctnessPpm=_figure(figures.correctness_ppm),
        latencyP50Ms=_figure(figures.latency_p50_ms),
        latencyP95Ms=_figure(figures.latency_p95_ms),
        latencyP99Ms=_figure(figures.latency_p99_ms),
        probeCount=figures.probes,
        samples=figures.samples,
    )


def verdicts_struct(verdicts: Mapping[str, str]) -> Verdicts:
    return Verdicts.model_validate({field: verdicts[key] for key, field in VERDICT_FIELDS.items()})


def recommendation_struct(recommendation: Recommendation) -> RecommendationStruct:
    return RecommendationStruct(
        violations=[
            ViolationStruct(kind=v.kind, repeated=v.repeated, penaltyBps=v.penalty_bps)
            for v in recommendation.violations
        ],
        penaltyBps=recommendation.penalty_bps,
    )


def sorted_probes(addresses: Sequence[str]) -> list[str]:
    """EIP-55 addresses, distinct, sorted by value (the order of their lowercase hex)."""
    return [to_checksum_address(a) for a in sorted({a.lower() for a in addresses})]


def attestation_message(
    *,
    chain_id: int,
    operator_id: str,
    start: int,
    end: int,
    targets: SlaTargets,
    figures: SlaFigures,
    longest_outage_minutes: int,
    evidence_root: str,
    batch_count: int,
    probes: Sequence[str],
    policy_hash: str,
    recommendation: Recommendation,
    issued_at: int,
) -> dict[str, Any]:
    """The message as plain JSON (what is stored, served and signed); ``start``, ``end`` and
    ``issued_at`` in unix seconds. ValueError (pydantic) if a value does not fit its type."""
    message = AttestationMessage(
        subject=Subject(chainId=chain_id, operatorId=operator_id),
        period=Period(start=start, end=end),
        targets=targets_struct(targets),
        figures=figures_struct(figures, longest_outage_minutes=longest_outage_minutes),
        verdicts=verdicts_struct(figures.verdicts),
        evidenceRoot=evidence_root,
        batchCount=batch_count,
        probes=sorted_probes(probes),
        policyHash=policy_hash,
        recommendation=recommendation_struct(recommendation),
        issuedAt=issued_at,
    )
    return message.model_dump(mode="json")


# --- back to the SLA objects (for a verifier) ---------------------------------------------------


def targets_of(targets: Targets) -> SlaTargets:
    return SlaTargets(
        availability_ppm=targets.availabilityPpm,
        latency_p95_ms=targets.latencyP95Ms,
        max_lag_blocks=targets.maxLagBlocks,
        correctness_ppm=targets.correctnessPpm,
        min_probes=targets.minProbes,
        min_coverage_ppm=targets.minCoveragePpm,
    )


def verdicts_of(verdicts: Verdicts) -> dict[str, str]:
    """Back to SlaFigures.verdicts keys (``latency_p95``), as monitor.sla.penalties reads them."""
    return {key: getattr(verdicts, field) for key, field in VERDICT_FIELDS.items()}
