"""From a period's verdicts to a recommended action: the penalty policy (docs/sla.md).

The registry's ``penalties`` section (or the defaults here) is a table of violation kinds with a
penalty for a first offence and for a repeated one (the same kind in an attestation of the same
operator and chain whose period ended within ``lookback_days`` before this period's start), in
basis points of whatever the network's governance applies them to (stake, rewards). The policy
is identified by :func:`policy_hash`, which attestations carry.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from eth_utils import keccak
from pydantic import BaseModel, ConfigDict, Field, field_validator

# violation kind -> the SLA verdict that raises it (outage is raised by a run of down minutes)
VIOLATION_OF_VERDICT = {
    "availability": "availability",
    "latency": "latency_p95",
    "lag": "lag",
    "invalid_data": "correctness",
}
KINDS = ("availability", "latency", "lag", "invalid_data", "outage")
MAX_BPS = 10_000


class Penalty(BaseModel):
    model_config = ConfigDict(extra="forbid")
    first: int = Field(ge=0, le=MAX_BPS)
    repeat: int = Field(ge=0, le=MAX_BPS)


def _default_violations() -> dict[str, Penalty]:
    return {
        "availability": Penalty(first=100, repeat=300),
        "latency": Penalty(first=50, repeat=150),
        "lag": Penalty(first=50, repeat=150),
        "invalid_data": Penalty(first=500, repeat=2000),
        "outage": Penalty(first=1000, repeat=3000),
    }


class PenaltyPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lookback_days: int = Field(90, ge=0, le=3650)
    # A run of at least this many consecutive minutes down for "unavailable" is a complete outage.
    outage_minutes: int = Field(30, ge=1, le=100_000)
    violations: dict[str, Penalty] = Field(default_factory=_default_violations)

    @field_validator("violations")
    @classmethod
    def _known_kinds(cls, value: dict[str, Penalty]) -> dict[str, Penalty]:
        unknown = set(value) - set(KINDS)
        if unknown:
            raise ValueError(
                f"unknown violation kind(s) {sorted(unknown)}; known: {', '.join(KINDS)}"
            )
        return value

    def canonical(self) -> str:
        """The policy as canonical JSON (sorted keys, no spaces): what its hash is taken of."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


def policy_hash(policy: PenaltyPolicy) -> str:
    return "0x" + keccak(text=policy.canonical()).hex()


@dataclass(frozen=True)
class Violation:
    kind: str
    repeated: bool
    penalty_bps: int


@dataclass(frozen=True)
class Recommendation:
    violations: tuple[Violation, ...]
    penalty_bps: int  # the sum, capped at 10000

    def as_dict(self) -> dict[str, object]:
        return {
            "violations": [
                {"kind": v.kind, "repeated": v.repeated, "penalty_bps": v.penalty_bps}
                for v in self.violations
            ],
            "penalty_bps": self.penalty_bps,
        }


def recommend(
    *,
    verdicts: Mapping[str, str],
    longest_outage_minutes: int,
    previous: Collection[str],
    policy: PenaltyPolicy,
) -> Recommendation:
    """``previous``: the violation kinds of the subject within the look-back."""
    kinds = [
        k for k, verdict in VIOLATION_OF_VERDICT.items() if verdicts.get(verdict) == "breached"
    ]
    if longest_outage_minutes >= policy.outage_minutes:
        kinds.append("outage")
    out = []
    for kind in KINDS:
        if kind not in kinds or kind not in policy.violations:
            continue
        penalty = policy.violations[kind]
        repeated = kind in previous
        out.append(Violation(kind, repeated, penalty.repeat if repeated else penalty.first))
    return Recommendation(tuple(out), min(MAX_BPS, sum(v.penalty_bps for v in out)))
