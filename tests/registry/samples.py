"""A valid registry document shared by the registry tests."""

from __future__ import annotations

import copy
from typing import Any

PROBE_A = "0x52908400098527886E0F7030069857D2E4169EE7"
PROBE_B = "0x8617E340B3D01FA5F11F306F4090FD50E238070D"

SAMPLE: dict[str, Any] = {
    "chains": [
        {
            "chain_id": 1,
            "name": "mainnet",
            "block_time_s": 12,
            "confirmations": 3,
            "sla": {"availability": 0.99, "latency_p95_ms": 250, "max_lag_blocks": 2},
        },
        {"chain_id": 10, "name": "optimism", "block_time_s": 2, "confirmations": 10},
    ],
    "operators": [
        {
            "id": "alpha",
            "name": "Alpha",
            "endpoints": [
                {"chain_id": 1, "url": "https://alpha.example/eth?key=secret"},
                {"chain_id": 10, "url": "https://alpha.example/op"},
            ],
        },
        {"id": "bravo", "name": "Bravo", "endpoints": [{"chain_id": 1, "url": "http://b/"}]},
    ],
    "probes": [
        {"address": PROBE_A.lower(), "name": "probe-eu", "region": "eu-west"},
        {"address": PROBE_B, "name": "probe-us", "region": "us-east"},
    ],
}


def sample() -> dict[str, Any]:
    """A fresh deep copy of SAMPLE, free to modify."""
    return copy.deepcopy(SAMPLE)
