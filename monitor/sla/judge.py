"""How a minute and a period are judged against an SLA: pure functions, shared by the API (from
rollups), the attestation issuer and ``monitor verify`` (from raw signed batches), so that all
three reach the same figures to the last digit. Specified in docs/sla.md.

The subject is one operator on one chain (all of its endpoints there, as one service).

* A **probe-minute** is one probe's checks of the subject in one UTC minute (:class:`ProbeMinute`).
  The probe flags it ``unavailable`` when fewer than half of its checks were answered,
  ``lagging`` when more than half of the answers with a lag were more than ``max_lag_blocks``
  behind, ``incorrect`` when any answer was proven wrong.
* A **minute** is judged from the probes that checked it: with fewer than ``min_probes`` of them
  it is ``insufficient`` (not in the denominator, counted apart); otherwise each flag holds when
  more than half of those probes raised it (a minority of lying probes cannot raise or clear
  one), and the minute is ``down`` with the flags as reasons, or ``up`` when none holds.
* A **period** sums its minutes: availability = up / (up + down); lag compliance = 1 - lagging /
  (up + down); latency percentiles and correctness per probe over the period, then the lower
  median across probes. Fractions are integers in parts per million, rounded down.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from monitor.sla import histogram
from monitor.sla.histogram import Histogram

PPM = 1_000_000
MAX_LAG_TRACKED = 10_000  # lags are counted per value up to this; beyond, as this

REASONS = ("unavailable", "lagging", "incorrect")
Verdict = Literal["met", "breached", "insufficient_data"]
MinuteState = Literal["up", "down", "insufficient"]


@dataclass(frozen=True)
class SlaTargets:
    """An operator's targets on a chain (the chain's, with the operator's overrides)."""

    availability_ppm: int
    latency_p95_ms: int
    max_lag_blocks: int
    correctness_ppm: int
    min_probes: int = 2  # probes that must have checked a minute for it to be judged
    min_coverage_ppm: int = 500_000  # judged minutes / period minutes below this: no verdict

    def as_dict(self) -> dict[str, int]:
        return {
            "availability_ppm": self.availability_ppm,
            "latency_p95_ms": self.latency_p95_ms,
            "max_lag_blocks": self.max_lag_blocks,
            "correctness_ppm": self.correctness_ppm,
            "min_probes": self.min_probes,
            "min_coverage_ppm": self.min_coverage_ppm,
        }


def ppm(value: float) -> int:
    """A fraction from the registry (0.999) as parts per million, exactly as written."""
    return round(value * PPM)


@dataclass
class ProbeMinute:
    """What one probe saw of the subject in one minute (or, summed, over any span)."""

    samples: int = 0  # checks
    available: int = 0  # answered (ok)
    judged: int = 0  # answers whose correctness was decided by a vote
    incorrect: int = 0  # of those, proven wrong
    lags: dict[int, int] = field(default_factory=dict)  # lag blocks -> answers
    latency: Histogram = field(default_factory=dict)  # of the answers

    def add(
        self, *, ok: bool, correct: bool | None, lag_blocks: int | None, latency_us: int | None
    ) -> None:
        self.samples += 1
        if correct is not None:
            self.judged += 1
            self.incorrect += correct is False
        if not ok:
            return
        self.available += 1
        if lag_blocks is not None:
            lag = min(max(lag_blocks, 0), MAX_LAG_TRACKED)
            self.lags[lag] = self.lags.get(lag, 0) + 1
        if latency_us is not None:
            b = histogram.bucket(latency_us)
            self.latency[b] = self.latency.get(b, 0) + 1

    def merge(self, other: ProbeMinute) -> None:
        self.samples += other.samples
        self.available += other.available
        self.judged += other.judged
        self.incorrect += other.incorrect
        for lag, n in other.lags.items():
            self.lags[lag] = self.lags.get(lag, 0) + n
        self.latency = histogram.merge([self.latency, other.latency])

    def flags(self, targets: SlaTargets) -> tuple[str, ...]:
        out = []
        if self.available * 2 < self.samples:
            out.append("unavailable")
        with_lag = sum(self.lags.values())
        behind = sum(n for lag, n in self.lags.items() if lag > targets.max_lag_blocks)
        if behind * 2 > with_lag:
            out.append("lagging")
        if self.incorrect:
            out.append("incorrect")
        return tuple(out)


@dataclass(frozen=True)
class MinuteVerdict:
    state: MinuteState
    reasons: tuple[str, ...]  # for "down": the flags more than half of the probes raised
    probes: int
    samples: int


def judge_minute(by_probe: Iterable[ProbeMinute], targets: SlaTargets) -> MinuteVerdict:
    seen = [p for p in by_probe if p.samples > 0]
    samples = sum(p.samples for p in seen)
    if len(seen) < targets.min_probes:
        return MinuteVerdict("insufficient", (), len(seen), samples)
    raised = {reason: 0 for reason in REASONS}
    for p in seen:
        for reason in p.flags(targets):
            raised[reason] += 1
    reasons = tuple(r for r in REASONS if raised[r] * 2 > len(seen))
    return MinuteVerdict("down" if reasons else "up", reasons, len(seen), samples)


@dataclass(frozen=True)
class SlaFigures:
    minutes: int  # in the period
    up: int
    down: int
    insufficient: int  # minutes - up - down: too few probes, or none
    down_by_reason: dict[str, int]  # a down minute counts once per reason
    availability_ppm: int | None
    lag_compliance_ppm: int | None
    correctness_ppm: int | None
    latency_p50_ms: int | None
    latency_p95_ms: int | None
    latency_p99_ms: int | None
    probes: int
    samples: int
    verdicts: dict[str, Verdict]

    def as_dict(self) -> dict[str, object]:
        return {
            "minutes": self.minutes,
            "up": self.up,
            "down": self.down,
            "insufficient": self.insufficient,
            "down_by_reason": dict(self.down_by_reason),
            "availability_ppm": self.availability_ppm,
            "lag_compliance_ppm": self.lag_compliance_ppm,
            "correctness_ppm": self.correctness_ppm,
            "latency_p50_ms": self.latency_p50_ms,
            "latency_p95_ms": self.latency_p95_ms,
            "latency_p99_ms": self.latency_p99_ms,
            "probes": self.probes,
            "samples": self.samples,
            "verdicts": dict(self.verdicts),
        }


def _lower_median(values: list[int]) -> int | None:
    if not values:
        return None
    values = sorted(values)
    return values[(len(values) - 1) // 2]


def figures(
    *,
    minutes: int,
    up: int,
    down: int,
    down_by_reason: Mapping[str, int],
    per_probe: Iterable[ProbeMinute],  # each probe's sums over the period
    targets: SlaTargets,
) -> SlaFigures:
    """A period's figures from its minute counts and each probe's sums over the period."""
    judged = up + down
    availability = up * PPM // judged if judged else None
    lagging = down_by_reason.get("lagging", 0)
    lag_compliance = (judged - lagging) * PPM // judged if judged else None
    probes = [p for p in per_probe if p.samples > 0]
    correctness = _lower_median(
        [(p.judged - p.incorrect) * PPM // p.judged for p in probes if p.judged]
    )
    latency = {
        q: _lower_median(
            [v for p in probes if (v := histogram.percentile(p.latency, q)) is not None]
        )
        for q in (50, 95, 99)
    }
    covered = minutes > 0 and judged * PPM >= targets.min_coverage_ppm * minutes

    def verdict(ok: bool | None) -> Verdict:
        if not covered or ok is None:
            return "insufficient_data"
        return "met" if ok else "breached"

    p95 = latency[95]
    verdicts: dict[str, Verdict] = {
        "availability": verdict(
            None if availability is None else availability >= targets.availability_ppm
        ),
        "latency_p95": verdict(None if p95 is None else p95 <= targets.latency_p95_ms),
        "lag": verdict(
            None if lag_compliance is None else lag_compliance >= targets.availability_ppm
        ),
        "correctness": verdict(
            None if correctness is None else correctness >= targets.correctness_ppm
        ),
    }
    return SlaFigures(
        minutes=minutes,
        up=up,
        down=down,
        insufficient=minutes - judged,
        down_by_reason={r: down_by_reason.get(r, 0) for r in REASONS},
        availability_ppm=availability,
        lag_compliance_ppm=lag_compliance,
        correctness_ppm=correctness,
        latency_p50_ms=latency[50],
        latency_p95_ms=p95,
        latency_p99_ms=latency[99],
        probes=len(probes),
        samples=sum(p.samples for p in probes),
        verdicts=verdicts,
    )


def evaluate(
    minutes_data: Mapping[int, Mapping[object, ProbeMinute]],
    *,
    minutes: int,
    targets: SlaTargets,
) -> tuple[SlaFigures, dict[int, MinuteVerdict]]:
    """A period from raw probe-minutes (minute index -> probe -> ProbeMinute): what a verifier
    recomputes from the evidence. Returns the figures and each minute's verdict."""
    verdicts = {m: judge_minute(by_probe.values(), targets) for m, by_probe in minutes_data.items()}
    per_probe: dict[object, ProbeMinute] = {}
    for by_probe in minutes_data.values():
        for probe, pm in by_probe.items():
            per_probe.setdefault(probe, ProbeMinute()).merge(pm)
    down_by_reason = {r: sum(r in v.reasons for v in verdicts.values()) for r in REASONS}
    return (
        figures(
            minutes=minutes,
            up=sum(v.state == "up" for v in verdicts.values()),
            down=sum(v.state == "down" for v in verdicts.values()),
            down_by_reason=down_by_reason,
            per_probe=per_probe.values(),
            targets=targets,
        ),
        verdicts,
    )
