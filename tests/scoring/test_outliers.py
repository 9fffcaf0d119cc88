"""Probe outlier scores: a probe that sees what the others see scores 0; one that reports every
endpoint down, perfect or slow scores high; geography and thin evidence do not count."""

from __future__ import annotations

from monitor.scoring.aggregate import ProbeStats, across_probes
from monitor.scoring.outliers import disagrees, probe_outliers
from tests.scoring.test_policy import MAINNET


def stats(a: float = 1.0, p95: float = 50.0, lag: float = 0.0, c: float = 1.0) -> ProbeStats:
    return ProbeStats(
        availability=a,
        latency_p50_ms=p95 / 2,
        latency_p95_ms=p95,
        lag_blocks=lag,
        correctness=c,
        samples=30,
    )


def fleet(liar: ProbeStats | None, endpoints: int = 5) -> dict[int, dict[int, ProbeStats]]:
    """Probes 1-3 honest (one of them 150 ms further away), probe 4 the liar if given."""
    out: dict[int, dict[int, ProbeStats]] = {}
    for e in range(endpoints):
        by_probe = {1: stats(), 2: stats(p95=55.0), 3: stats(p95=200.0)}
        if liar is not None:
            by_probe[4] = liar
        out[e] = by_probe
    return out


def outliers(per_endpoint: dict[int, dict[int, ProbeStats]]) -> dict[int, float | None]:
    consensus = {e: across_probes(list(s.values())) for e, s in per_endpoint.items()}
    return {p: o.score for p, o in probe_outliers(per_endpoint, consensus, MAINNET).items()}


def test_an_honest_fleet_has_no_outlier_even_across_continents() -> None:
    assert outliers(fleet(None)) == {1: 0.0, 2: 0.0, 3: 0.0}


def test_liars_stand_out() -> None:
    for liar, kind in (
        (stats(a=0.0, c=0.0), "availability"),  # everything down and wrong
        (stats(p95=2_500.0), "latency"),  # everything slow
        (stats(lag=12.0), "lag"),  # everything late
    ):
        scores = outliers(fleet(liar))
        assert scores[4] == 1.0, kind
        assert scores[1] == scores[2] == scores[3] == 0.0, kind
        consensus = across_probes([stats(), stats(p95=55.0), stats(p95=200.0), liar])
        assert kind in disagrees(liar, consensus, MAINNET)


def test_a_liar_calling_a_broken_endpoint_perfect_stands_out() -> None:
    broken = {1: stats(a=0.2), 2: stats(a=0.25), 3: stats(a=0.2), 4: stats(a=1.0)}
    per_endpoint = {0: broken, 1: {p: stats() for p in (1, 2, 3, 4)}}
    scores = outliers(per_endpoint)
    assert scores == {1: 0.0, 2: 0.0, 3: 0.0, 4: 0.5}  # wrong on one endpoint of two


def test_with_fewer_than_three_probes_nobody_is_judged() -> None:
    per_endpoint = {0: {1: stats(), 2: stats(a=0.0)}}
    consensus = {0: across_probes(list(per_endpoint[0].values()))}
    result = probe_outliers(per_endpoint, consensus, MAINNET)
    assert {p: (o.endpoints, o.score) for p, o in result.items()} == {1: (0, None), 2: (0, None)}
