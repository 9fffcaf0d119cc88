"""Stalled-head detection, from what the probe saw in earlier rounds (no extra calls).

An endpoint whose head has not changed for longer than ``max(block_times x block time, min_s)``
while its reference head is above it has stopped following the chain: ``stalled``. That is
stale, not wrong (the endpoint answers, and its old blocks are still the chain's), so the result
stays ``ok`` and its correctness is whatever the other checks find; lag measures how far behind
it is, the flag says it is not catching up. An endpoint whose head moves again is clear at once;
a chain that halted (no reference above anyone's head) flags no one.
"""

from __future__ import annotations

import time

from pydantic import Field

from monitor.checks.base import ChainRound, CheckConfig, Replies, every_round

plan = every_round


class Config(CheckConfig):
    block_times: float = Field(5.0, ge=1, le=10_000)
    min_s: float = Field(30.0, ge=0, le=86_400)


def judge(round_: ChainRound, config: Config, plan: object, replies: Replies) -> None:
    now = time.monotonic()
    heads = round_.memory.heads
    listed = {obs.target.endpoint_id for obs in round_.observations}
    for endpoint_id in [e for e in heads if e not in listed]:
        del heads[endpoint_id]  # removed from the registry: forget it
    allowed_s = max(config.block_times * round_.chain.block_time_s, config.min_s)
    for obs in round_.observations:
        if not obs.ok or obs.head is None:
            continue  # no head this round: keep what we knew
        endpoint_id = obs.target.endpoint_id
        seen = heads.get(endpoint_id)
        if seen is None or seen[0] != obs.head:
            heads[endpoint_id] = (obs.head, now)
            continue
        frozen_s = now - seen[1]
        reference = obs.reference_head
        if (
            frozen_s > allowed_s
            and reference is not None
            and reference > obs.head
            and obs.error is None
        ):
            obs.error = "stalled"
