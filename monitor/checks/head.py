"""The head: each endpoint's reference head, and heads no one else confirms.

Every endpoint's head, the hash of its head block and the latency every result reports come
from the round's timed call, ``eth_getBlockByNumber("latest", false)`` (monitor.probe.visit),
made before any check asks anything. This check judges them: the reference is a height enough
endpoints reach (monitor.probe.consensus), so one operator that claims a huge head cannot make
the honest ones look lagging; a head more than a minute of blocks above it is incorrect
(``head_ahead``). In a paced round each endpoint is judged against the heads seen up to its own
visit, so an endpoint visited early in the interval is not found lagging behind blocks made
after it answered.
"""

from __future__ import annotations

from monitor.checks.base import ChainRound, CheckConfig, Replies, every_round
from monitor.probe.consensus import head_ahead_tolerance

plan = every_round


def judge(round_: ChainRound, config: CheckConfig, plan: object, replies: Replies) -> None:
    round_.set_references()
    tolerance = head_ahead_tolerance(round_.chain.confirmations, round_.chain.block_time_s)
    for obs in round_.usable():
        reference = obs.reference_head
        if obs.head is not None and reference is not None and obs.head > reference + tolerance:
            obs.mark_incorrect("head_ahead")
    round_.set_references()  # without the heads found out
