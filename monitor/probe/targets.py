"""What a probe checks, as the collector's ``GET /v1/targets`` describes it."""

from __future__ import annotations

from pydantic import BaseModel


class EndpointTarget(BaseModel):
    endpoint_id: int
    operator_id: str
    url: str


class ChainTarget(BaseModel):
    chain_id: int
    name: str
    block_time_s: float
    confirmations: int
    endpoints: list[EndpointTarget]


class Targets(BaseModel):
    chains: list[ChainTarget]
