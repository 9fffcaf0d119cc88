"""Probes that persistently disagree with the majority of probes: surfaced, not silently used.

TODO (issue 4): implementation. Interface:

* ``disagrees(probe, consensus, targets)``: does this probe's view of one endpoint differ from the
  cross-probe consensus by more than the tolerances?
* ``probe_outliers(per_endpoint, consensus, targets)``: per probe, how many endpoints it judged
  and on how many it disagreed; ``score = disagreements / endpoints`` (None when it judged none).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from monitor.scoring.aggregate import EndpointStats, ProbeStats
from monitor.scoring.policy import ChainTargets


@dataclass(frozen=True, slots=True)
class ProbeOutlier:
    probe_id: int
    endpoints: int  # endpoints this probe measured in the window
    disagreements: int  # of those, where its view differed from the consensus
    disagreement_kinds: Mapping[str, int]  # e.g. {"availability": 2, "latency": 1}

    @property
    def score(self) -> float | None:
        return self.disagreements / self.endpoints if self.endpoints else None


def disagrees(probe: ProbeStats, consensus: EndpointStats, targets: ChainTargets) -> list[str]:
    """The quantities (availability, latency, lag, correctness) on which ``probe`` disagrees."""
    return []


def probe_outliers(
    per_endpoint: Mapping[int, Mapping[int, ProbeStats]],
    consensus: Mapping[int, EndpointStats],
    targets: ChainTargets,
) -> dict[int, ProbeOutlier]:
    """``per_endpoint``: endpoint id -> probe id -> that probe's stats of the endpoint."""
    return {}
