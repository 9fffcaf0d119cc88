"""A fixed latency histogram: mergeable across minutes, hours and probes, and exact to recompute.

Percentiles of a long period cannot be merged from per-minute percentiles, so rollups keep counts
per bucket. The buckets are fixed (part of the attestation format, docs/attestations.md): a
latency of ``us`` microseconds falls in the first bucket whose upper bound ``b`` (ms) has
``us <= b * 1000``; beyond the last bound it falls in the overflow bucket, reported as
``OVERFLOW_MS``. A percentile is reported as the **upper bound** of the bucket holding it, so a
figure is never better than the truth and a target on a bound is judged exactly.

A histogram is a ``dict[int, int]`` (bucket index -> count) without zero entries; stored as JSON
with string keys.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping

LATENCY_BOUNDS_MS: tuple[int, ...] = (
    5, 10, 20, 30, 40, 50, 75, 100, 125, 150, 175, 200, 250, 300, 350, 400, 500, 600, 750,
    1000, 1250, 1500, 2000, 2500, 3000, 4000, 5000, 7500, 10000, 15000, 30000,
)  # fmt: skip
OVERFLOW_MS = 60_000  # no probe waits longer than this for an answer

Histogram = dict[int, int]


def bucket(latency_us: int) -> int:
    for i, bound in enumerate(LATENCY_BOUNDS_MS):
        if latency_us <= bound * 1000:
            return i
    return len(LATENCY_BOUNDS_MS)


def upper_ms(index: int) -> int:
    return LATENCY_BOUNDS_MS[index] if index < len(LATENCY_BOUNDS_MS) else OVERFLOW_MS


def merge(histograms: Iterable[Mapping[int, int]]) -> Histogram:
    out: Histogram = {}
    for h in histograms:
        for index, count in h.items():
            if count:
                out[index] = out.get(index, 0) + count
    return out


def percentile(histogram: Mapping[int, int], q: float) -> int | None:
    """The upper bound (ms) of the bucket holding the ``q``-th percentile (nearest rank: the
    smallest value with at least ``q`` % of the samples at or below it); None if empty."""
    total = sum(histogram.values())
    if total == 0:
        return None
    rank = max(1, math.ceil(q * total / 100))
    seen = 0
    for index in sorted(histogram):
        seen += histogram[index]
        if seen >= rank:
            return upper_ms(index)
    raise AssertionError("unreachable: rank <= total")


def dumps(histogram: Mapping[int, int]) -> str:
    return json.dumps({str(k): v for k, v in sorted(histogram.items()) if v}, separators=(",", ":"))


def loads(text: str | None) -> Histogram:
    return {int(k): int(v) for k, v in json.loads(text or "{}").items()}
