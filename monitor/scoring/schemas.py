"""What /v1/scores and /v1/weights answer."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class Factor(BaseModel):
    value: float | None  # the measured quantity: fraction, p95 ms, lag blocks, fraction, age s
    sub_score: float  # the factor in [0, 1]
    weight: float  # its exponent in the score (the chain's policy)
    share: float  # its share of the score's shortfall; shares sum to 1 unless nothing is lost


class EndpointScore(BaseModel):
    endpoint_id: int
    operator_id: str
    endpoint: str  # scheme://host[:port]; never the full URL
    availability: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    lag_blocks: float | None
    lag_seconds: float | None
    correctness: float | None
    samples: int
    probes: int
    score: float | None  # None: insufficient data
    weight: float
    weight_bps: int
    status: str  # "ok" | "recovering" | "excluded"
    status_since: datetime | None  # when it entered this status (hysteresis, recovery ramp)
    reasons: list[str]  # exclusion codes first, then error kinds seen; see docs/scoring.md
    errors: dict[str, int]  # error kind -> count in the window
    factors: dict[str, Factor]  # availability, latency, lag, correctness, freshness


class ScoresOut(BaseModel):
    chain_id: int
    window: str
    as_of: datetime
    scores: list[EndpointScore]


class EndpointWeight(BaseModel):
    endpoint_id: int
    operator_id: str
    endpoint: str
    weight: float
    weight_bps: int


class WeightsOut(BaseModel):
    chain_id: int
    window: str
    as_of: datetime
    as_of_ms: int  # the same instant in unix ms, as signed
    total_bps: int  # 10000, or 0 when no endpoint may be routed to
    weights: list[EndpointWeight]
    # EIP-712 over (chainId, window, asOf, [(endpointId, operatorId, weightBps)]) in the
    # collector's domain; check it against GET /v1/identity (docs/signing.md, "Signed weights").
    signer: str
    signature: str


class ProbeAgreement(BaseModel):
    address: str
    name: str
    region: str
    endpoints: int  # endpoints it measured that at least 3 probes measured
    disagreements: int  # of those, where its view differed from the other probes'
    kinds: dict[str, int]  # quantity -> endpoints it disagreed on
    outlier_score: float | None  # disagreements / endpoints; None when it judged none


class ProbesOut(BaseModel):
    chain_id: int
    window: str
    as_of: datetime
    probes: list[ProbeAgreement]
