"""The registry's ``chains[].scoring`` section: how one chain's endpoints are scored.

Validated when the registry is applied (errors name the chain and the field), stored with the
chain, turned into a :class:`monitor.scoring.policy.Policy` by the scoring job.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

FACTORS = ("availability", "latency", "lag", "correctness")


class FactorWeights(BaseModel):
    """Exponents of the factors in the score's product; 0 switches a factor off."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    availability: float = Field(1.0, ge=0, le=10)
    latency: float = Field(1.0, ge=0, le=10)
    lag: float = Field(1.0, ge=0, le=10)
    correctness: float = Field(1.0, ge=0, le=10)


PRESETS: dict[str, FactorWeights] = {
    "balanced": FactorWeights(),
    "prefer_fastest": FactorWeights(latency=2.0, lag=0.5),
    "prefer_freshest": FactorWeights(latency=0.5, lag=2.0),
}


class ScoringConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: Literal["balanced", "prefer_fastest", "prefer_freshest"] = "balanced"
    # Any factor named here replaces the preset's exponent for it.
    weights: dict[
        Literal["availability", "latency", "lag", "correctness"],
        Annotated[float, Field(ge=0, le=10)],
    ] = {}
    min_probes: int = Field(1, ge=1, le=1000)
    min_samples: int = Field(3, ge=1, le=100_000)
    min_availability: float = Field(0.5, ge=0, le=1)
    min_correctness: float = Field(0.95, ge=0, le=1)
    latency_ref_ms: float | None = Field(None, gt=0, le=600_000)
    lag_limit_factor: float = Field(4.0, gt=0, le=1000)
    stale_after_s: float = Field(60.0, gt=0, le=86_400)
    recovery_s: float = Field(60.0, gt=0, le=86_400)

    def factor_weights(self) -> FactorWeights:
        base = PRESETS[self.preset].model_dump()
        return FactorWeights.model_validate({**base, **self.weights})
