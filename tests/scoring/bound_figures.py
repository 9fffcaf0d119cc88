"""Worst-case weight movement by f lying probes of 2f+1, for a few representative fleets.

    .venv/bin/python -m tests.scoring.bound_figures

Not a test: it prints the figures quoted in docs/scoring.md ("Threat model and bounds"), computed
with the current ``score_endpoint`` and the default ``Policy()``; rerun it when the policy changes.

For each endpoint the honest probes' values lie within a spread (availability within ``da`` below
the fleet's value, p95 within a factor ``1 + e`` or ``+ms`` above it, lag within ``dlag`` blocks
above it). By the bound (tests/scoring/test_bounds.py), whatever f liars report, the endpoint's
weight stays in ``[s_lo_i / (s_lo_i + sum_j s_hi_j), s_hi_i / (s_hi_i + sum_j s_lo_j)]``, where
s_lo and s_hi score the endpoint at the worst and best ends of the spread. The honest-only weight
is inside that interval too, so its width is the most the liars can move the weight. Printed:
the widest interval over the fleet's endpoints, in points of weight (of 100) and relative to the
endpoint's weight at the middle of the spread.
"""

from __future__ import annotations

from dataclasses import dataclass

from monitor.scoring.aggregate import EndpointStats
from monitor.scoring.policy import ChainTargets, Policy, score_endpoint, weights

TARGETS = ChainTargets(latency_p95_ms=250.0, max_lag_blocks=2, block_time_s=12.0)
POLICY = Policy()

# fleet name -> endpoints as (availability, p95 ms, lag blocks), their best honest values
FLEETS: dict[str, list[tuple[float, float, float]]] = {
    "mixed, 4 endpoints (80-300 ms, 99-99.9 %, lag 0-3)": [
        (0.999, 80.0, 0.0),
        (0.995, 150.0, 0.0),
        (0.99, 300.0, 1.0),
        (0.999, 100.0, 3.0),
    ],
    "even, 4 endpoints (120-150 ms, 99.7-99.9 %, lag 0)": [
        (0.999, 120.0, 0.0),
        (0.998, 130.0, 0.0),
        (0.999, 140.0, 0.0),
        (0.997, 150.0, 0.0),
    ],
    "even, 10 endpoints (100-190 ms, 99.5-99.9 %, lag 0)": [
        (0.999 - 0.001 * (i % 5), 100.0 + 10.0 * i, 0.0) for i in range(10)
    ],
}


@dataclass(frozen=True)
class Spread:
    name: str
    availability: float = 0.0  # absolute
    latency_factor: float = 0.0  # p95 up to x (1 + this)
    latency_ms: float = 0.0  # p95 up to + this
    lag_blocks: float = 0.0


SPREADS = [
    Spread("agree exactly"),
    Spread("a 0.2 pp, p95 x1.05", availability=0.002, latency_factor=0.05),
    Spread("a 1 pp, p95 x1.10", availability=0.01, latency_factor=0.10),
    Spread("a 1 pp, p95 x1.10, lag 1 block", availability=0.01, latency_factor=0.10, lag_blocks=1),
    Spread("a 1 pp, p95 +150 ms (continents)", availability=0.01, latency_ms=150.0),
]


def score(availability: float, p95_ms: float, lag_blocks: float) -> float:
    stats = EndpointStats(
        availability=availability,
        latency_p50_ms=p95_ms / 2,
        latency_p95_ms=p95_ms,
        lag_blocks=lag_blocks,
        correctness=1.0,
        samples=90,
        probes=3,
    )
    return score_endpoint(stats, TARGETS, POLICY).score or 0.0


def widest(fleet: list[tuple[float, float, float]], spread: Spread) -> tuple[float, float]:
    """(widest weight interval in points, widest relative to the mid weight) over the fleet."""
    hi = [score(a, p, g) for a, p, g in fleet]
    lo = [
        score(
            max(0.0, a - spread.availability),
            p * (1 + spread.latency_factor) + spread.latency_ms,
            g + spread.lag_blocks,
        )
        for a, p, g in fleet
    ]
    mid = weights(
        {
            i: score(
                max(0.0, a - spread.availability / 2),
                p * (1 + spread.latency_factor / 2) + spread.latency_ms / 2,
                g + spread.lag_blocks / 2,
            )
            for i, (a, p, g) in enumerate(fleet)
        }
    )
    points, relative = 0.0, 0.0
    for i in range(len(fleet)):
        w_min = lo[i] / (lo[i] + sum(hi) - hi[i])
        w_max = hi[i] / (hi[i] + sum(lo) - lo[i])
        points = max(points, (w_max - w_min) * 100)
        relative = max(relative, (w_max - w_min) / mid[i])
    return points, relative


def main() -> None:
    print(
        f"SLA p95 {TARGETS.latency_p95_ms:g} ms, max lag {TARGETS.max_lag_blocks} blocks, "
        "default Policy().\nWidest interval within which f liars of 2f+1 can move a weight:\n"
    )
    for name, fleet in FLEETS.items():
        print(name)
        for spread in SPREADS:
            points, relative = widest(fleet, spread)
            print(f"  {spread.name:<36} {points:5.1f} points  ({relative:6.1%} of its weight)")
        print()


if __name__ == "__main__":
    main()
