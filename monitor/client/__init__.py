"""Routers that trust no single collector: ask several for a chain's weights, keep the answers
their pinned keys signed, and combine them (docs/routers.md)::

    result = await fetch_weights(
        ["https://c1.example", "https://c2.example", "https://c3.example"],
        chain_id=1, signers=["0x…", "0x…", "0x…"],
    )
    result.weights  # CombinedWeight(endpoint_id, operator_id, weight, weight_bps), ...

QuorumNotReached (monitor.exceptions) when too few collectors gave valid, agreeing answers; its
``reports`` and ``result.collectors`` say what each collector did.
"""

from __future__ import annotations

from monitor.client.combine import (
    DEFAULT_MAX_SKEW_MS,
    DEFAULT_TOLERANCE_BPS,
    CollectorReport,
    CombinedWeight,
    CombinedWeights,
    Disagreement,
    combine,
    median,
    renormalise,
)
from monitor.client.fetch import DEFAULT_TIMEOUT_S, default_quorum, fetch_one, fetch_weights
from monitor.client.report import (
    failure_output,
    render_reports,
    render_weights,
    weights_output,
)
from monitor.client.verify import EndpointBps, SignedWeights, typed_data, verify_answer
from monitor.exceptions import AnswerRejected, QuorumNotReached

__all__ = [
    "DEFAULT_MAX_SKEW_MS",
    "DEFAULT_TIMEOUT_S",
    "DEFAULT_TOLERANCE_BPS",
    "AnswerRejected",
    "CollectorReport",
    "CombinedWeight",
    "CombinedWeights",
    "Disagreement",
    "EndpointBps",
    "QuorumNotReached",
    "SignedWeights",
    "combine",
    "default_quorum",
    "failure_output",
    "fetch_one",
    "fetch_weights",
    "median",
    "render_reports",
    "render_weights",
    "renormalise",
    "typed_data",
    "verify_answer",
    "weights_output",
]
