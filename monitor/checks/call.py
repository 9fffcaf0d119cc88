"""TODO: call check (issue 4)."""

from __future__ import annotations

from monitor.checks.base import ChainRound, ScheduledConfig


class Config(ScheduledConfig):
    pass


async def check(round_: ChainRound, config: Config) -> None:
    return None
