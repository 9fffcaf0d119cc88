"""What /v1/scores and /v1/weights answer."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


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
    status: str  # "ok" | "excluded"
    reasons: list[str]  # see docs/scoring.md
    errors: dict[str, int]  # error kind -> count in the window


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
    total_bps: int  # 10000, or 0 when no endpoint may be routed to
    weights: list[EndpointWeight]
