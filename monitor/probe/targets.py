"""What a probe checks, as the collector's ``GET /v1/targets`` describes it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class EndpointTarget(BaseModel):
    endpoint_id: int
    operator_id: str
    url: str
    archive: bool = False  # serves historical state: asked by the archive check


class ChainTarget(BaseModel):
    chain_id: int
    name: str
    block_time_s: float
    confirmations: int
    quorum: int = 2  # agreeing answers a majority needs (monitor.probe.consensus)
    checks: dict[str, dict[str, Any]] = {}  # check name -> its registry section
    endpoints: list[EndpointTarget]


class Targets(BaseModel):
    chains: list[ChainTarget]
