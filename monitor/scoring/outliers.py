"""Probes that persistently disagree with the other probes: surfaced, not silently used.

The median across probes already keeps a minority of probes from moving any score; this says
*which* probes are in that minority, so that an operator of the network can look at them (a
broken probe host, a bad route, or a dishonest probe). Per run and chain, for every endpoint that
at least ``MIN_PROBES_TO_JUDGE`` probes measured, each probe's statistics are compared with the
consensus (the medians): a probe disagrees on an endpoint when, on a quantity both measured,

* availability differs by more than 0.1 (absolute),
* correctness differs by more than 0.1,
* latency p95 is off by more than a factor 3 *and* by more than 500 ms, either way: above
  ``max(3 x consensus, consensus + 500 ms)`` or below ``min(consensus / 3, consensus - 500 ms)``
  (wide on purpose: a probe on another continent legitimately sees 100-200 ms more, or, when the
  other probes are far away, 100-200 ms less),
* lag differs by more than the chain's SLA max lag (blocks).

``score = disagreements / endpoints judged``: 0 for a probe that sees what the others see, near 1
for one that reports every endpoint down, perfect, or slow. None when it judged nothing.

Only endpoints that at least ``MIN_PROBES_TO_JUDGE`` probes measured (with at least one sample)
are judged, for every probe: with one or two probes there is no majority to disagree with (of two
probes that differ, either may be the wrong one), so such endpoints count for no one's score,
neither as judged nor as disagreed on. A probe with no sample of an endpoint is not judged on it.
A quantity only some probes measured is compared only for those; a quantity that only liars
measured is their own median and goes unnoticed here (docs/scoring.md, "Threat model and bounds").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from monitor.scoring.aggregate import EndpointStats, ProbeStats
from monitor.scoring.policy import ChainTargets

MIN_PROBES_TO_JUDGE = 3  # with one or two probes there is no majority to disagree with
RATE_TOLERANCE = 0.1
LATENCY_FACTOR = 3.0
LATENCY_SLACK_MS = 500.0


@dataclass(frozen=True, slots=True)
class ProbeOutlier:
    probe_id: int
    endpoints: int  # endpoints this probe measured that enough probes measured
    disagreements: int  # of those, where its view differed from the consensus
    disagreement_kinds: Mapping[str, int] = field(default_factory=dict)  # quantity -> endpoints

    @property
    def score(self) -> float | None:
        return self.disagreements / self.endpoints if self.endpoints else None


def _latency_differs(mine: float, consensus: float) -> bool:
    # Symmetric: off by more than the factor *and* the slack. A ratio alone would flag the one
    # probe near a fast endpoint whose other probes are a continent away (15 ms vs 180 ms).
    high = max(LATENCY_FACTOR * consensus, consensus + LATENCY_SLACK_MS)
    low = min(consensus / LATENCY_FACTOR, consensus - LATENCY_SLACK_MS)
    return mine > high or mine < low


def disagrees(probe: ProbeStats, consensus: EndpointStats, targets: ChainTargets) -> list[str]:
    """The quantities (availability, latency, lag, correctness) on which ``probe`` disagrees."""
    out: list[str] = []
    a, ca = probe.availability, consensus.availability
    if a is not None and ca is not None and abs(a - ca) > RATE_TOLERANCE:
        out.append("availability")
    p95, cp95 = probe.latency_p95_ms, consensus.latency_p95_ms
    if p95 is not None and cp95 is not None and _latency_differs(p95, cp95):
        out.append("latency")
    lag, clag = probe.lag_blocks, consensus.lag_blocks
    if lag is not None and clag is not None and abs(lag - clag) > targets.max_lag_blocks:
        out.append("lag")
    c, cc = probe.correctness, consensus.correctness
    if c is not None and cc is not None and abs(c - cc) > RATE_TOLERANCE:
        out.append("correctness")
    return out


def probe_outliers(
    per_endpoint: Mapping[int, Mapping[int, ProbeStats]],
    consensus: Mapping[int, EndpointStats],
    targets: ChainTargets,
) -> dict[int, ProbeOutlier]:
    """``per_endpoint``: endpoint id -> probe id -> that probe's stats of the endpoint."""
    judged: dict[int, int] = {}
    differing: dict[int, int] = {}
    kinds: dict[int, dict[str, int]] = {}
    for endpoint_id, by_probe in per_endpoint.items():
        measured = {pid: s for pid, s in by_probe.items() if s.samples > 0}
        if len(measured) < MIN_PROBES_TO_JUDGE or endpoint_id not in consensus:
            continue
        for probe_id, stats in measured.items():
            judged[probe_id] = judged.get(probe_id, 0) + 1
            quantities = disagrees(stats, consensus[endpoint_id], targets)
            if quantities:
                differing[probe_id] = differing.get(probe_id, 0) + 1
                per_kind = kinds.setdefault(probe_id, {})
                for q in quantities:
                    per_kind[q] = per_kind.get(q, 0) + 1
    probes = {pid for by_probe in per_endpoint.values() for pid in by_probe}
    return {
        pid: ProbeOutlier(pid, judged.get(pid, 0), differing.get(pid, 0), kinds.get(pid, {}))
        for pid in sorted(probes)
    }
