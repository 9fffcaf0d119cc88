"""The SLA API's answers: fractions as floats (0..1) for readers, exact ppm where it is attested."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from monitor.sla.judge import PPM, SlaFigures, SlaTargets
from monitor.sla.service import SlaReport


def _fraction(value_ppm: int | None) -> float | None:
    return None if value_ppm is None else value_ppm / PPM


class TargetsOut(BaseModel):
    availability: float
    latency_p95_ms: int
    max_lag_blocks: int
    correctness: float
    min_probes: int
    min_coverage: float

    @classmethod
    def of(cls, t: SlaTargets) -> TargetsOut:
        return cls(
            availability=t.availability_ppm / PPM,
            latency_p95_ms=t.latency_p95_ms,
            max_lag_blocks=t.max_lag_blocks,
            correctness=t.correctness_ppm / PPM,
            min_probes=t.min_probes,
            min_coverage=t.min_coverage_ppm / PPM,
        )


class MinutesOut(BaseModel):
    total: int
    up: int
    down: int
    insufficient: int = Field(description="too few probes (or none): not in the denominator")
    down_by_reason: dict[str, int]


class LatencyOut(BaseModel):
    p50: int | None
    p95: int | None
    p99: int | None


class FiguresOut(BaseModel):
    minutes: MinutesOut
    availability: float | None = Field(description="up / (up + down)")
    lag_compliance: float | None
    correctness: float | None
    latency_ms: LatencyOut = Field(description="upper bounds of the histogram buckets")
    probes: int
    samples: int
    verdicts: dict[str, str] = Field(description="target -> met | breached | insufficient_data")

    @classmethod
    def of(cls, f: SlaFigures) -> FiguresOut:
        return cls(
            minutes=MinutesOut(
                total=f.minutes,
                up=f.up,
                down=f.down,
                insufficient=f.insufficient,
                down_by_reason=f.down_by_reason,
            ),
            availability=_fraction(f.availability_ppm),
            lag_compliance=_fraction(f.lag_compliance_ppm),
            correctness=_fraction(f.correctness_ppm),
            latency_ms=LatencyOut(p50=f.latency_p50_ms, p95=f.latency_p95_ms, p99=f.latency_p99_ms),
            probes=f.probes,
            samples=f.samples,
            verdicts=dict(f.verdicts),
        )


class BreachOut(BaseModel):
    start: datetime
    end: datetime
    minutes: int
    reasons: list[str]


class ViolationOut(BaseModel):
    kind: str
    repeated: bool
    penalty_bps: int


class RecommendationOut(BaseModel):
    violations: list[ViolationOut]
    penalty_bps: int = Field(description="sum of the violations' penalties, at most 10000")
    policy_hash: str = Field(description="keccak256 of the penalty policy's canonical JSON")


class SlaReportOut(BaseModel):
    operator_id: str
    chain_id: int
    start: datetime
    end: datetime
    targets: TargetsOut
    figures: FiguresOut
    longest_outage_minutes: int
    breaches: list[BreachOut] = Field(description="down minutes, merged into ranges")
    breaches_truncated: bool
    recommendation: RecommendationOut

    @classmethod
    def of(cls, r: SlaReport) -> SlaReportOut:
        return cls(
            operator_id=r.operator_id,
            chain_id=r.chain_id,
            start=r.start,
            end=r.end,
            targets=TargetsOut.of(r.targets),
            figures=FiguresOut.of(r.figures),
            longest_outage_minutes=r.longest_outage_minutes,
            breaches=[
                BreachOut(
                    start=b.start,
                    end=b.end,
                    minutes=int((b.end - b.start).total_seconds()) // 60,
                    reasons=list(b.reasons),
                )
                for b in r.breaches
            ],
            breaches_truncated=r.breaches_truncated,
            recommendation=RecommendationOut(
                violations=[
                    ViolationOut(kind=v.kind, repeated=v.repeated, penalty_bps=v.penalty_bps)
                    for v in r.recommendation.violations
                ],
                penalty_bps=r.recommendation.penalty_bps,
                policy_hash=r.policy_hash,
            ),
        )


class UptimeWindowOut(BaseModel):
    uptime: float | None = Field(description="up / (up + down) minutes; None without data")
    up: int
    down: int
    insufficient: int
    verdict: str = Field(description="against the availability target")


class UptimeOut(BaseModel):
    operator_id: str
    chain_id: int
    as_of: datetime
    target: float
    windows: dict[str, UptimeWindowOut]


class EventOut(BaseModel):
    id: int
    operator_id: str
    chain_id: int
    target: str
    started_at: datetime
    ended_at: datetime | None
    reason: str
    figure: int | None
    threshold: int
