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


def test_a_liar_adding_two_seconds_to_every_latency_stands_out() -> None:
    honest_p95 = [40.0, 90.0, 150.0, 300.0, 700.0]  # endpoints of very different speeds
    per_endpoint = {
        e: {
            1: stats(p95=p95),
            2: stats(p95=p95 * 1.1),
            3: stats(p95=p95 + 150.0),  # another continent
            4: stats(p95=p95 + 2_000.0),
        }
        for e, p95 in enumerate(honest_p95)
    }
    assert outliers(per_endpoint) == {1: 0.0, 2: 0.0, 3: 0.0, 4: 1.0}


def test_geography_either_way_is_not_a_disagreement() -> None:
    # A fast endpoint near one probe, the two others a continent away: the near probe sees 15 ms
    # against a median of 180 ms, less than a third of it but by less than 500 ms.
    per_endpoint = {
        e: {1: stats(p95=15.0), 2: stats(p95=180.0), 3: stats(p95=210.0)} for e in (0, 1)
    }
    assert outliers(per_endpoint) == {1: 0.0, 2: 0.0, 3: 0.0}


def test_a_liar_calling_everything_incorrect_is_counted_per_kind() -> None:
    per_endpoint = fleet(stats(c=0.0), endpoints=4)
    per_endpoint[4] = {1: stats(), 2: stats(), 3: stats(), 4: stats(a=0.0)}  # and one down
    consensus = {e: across_probes(list(s.values())) for e, s in per_endpoint.items()}
    liar = probe_outliers(per_endpoint, consensus, MAINNET)[4]
    assert (liar.endpoints, liar.disagreements, liar.score) == (5, 5, 1.0)
    assert dict(liar.disagreement_kinds) == {"correctness": 4, "availability": 1}


def test_tolerances() -> None:
    base = across_probes([stats(a=0.8, p95=100.0, lag=1.0, c=0.8)] * 3)
    slow = across_probes([stats(p95=1_000.0)] * 3)
    assert disagrees(stats(a=0.71, p95=100.0, lag=1.0, c=0.89), base, MAINNET) == []
    assert disagrees(stats(a=0.69, p95=100.0, lag=1.0, c=0.91), base, MAINNET) == [
        "availability",
        "correctness",
    ]
    assert disagrees(stats(a=0.8, p95=600.0, lag=3.0, c=0.8), base, MAINNET) == []  # +500, +2
    assert disagrees(stats(a=0.8, p95=601.0, lag=3.5, c=0.8), base, MAINNET) == ["latency", "lag"]
    assert disagrees(stats(p95=3_000.0), slow, MAINNET) == []  # 3x a slow consensus
    assert disagrees(stats(p95=3_001.0), slow, MAINNET) == ["latency"]
    assert disagrees(stats(a=0.8, p95=0.0, lag=1.0, c=0.8), base, MAINNET) == []  # 100 ms below
    assert disagrees(stats(p95=334.0), slow, MAINNET) == []  # above a third of it
    assert disagrees(stats(p95=300.0), slow, MAINNET) == ["latency"]


def test_unmeasured_quantities_and_silent_probes_are_not_judged() -> None:
    silent = ProbeStats(None, None, None, None, None, samples=0)
    down = ProbeStats(0.0, None, None, None, None, samples=30)  # no latency, lag or correctness
    per_endpoint = {e: {1: stats(), 2: stats(), 3: stats(a=0.05), 4: silent} for e in (0, 1)}
    per_endpoint[2] = {1: stats(), 2: stats(), 3: down, 4: silent}
    per_endpoint[3] = {1: stats(), 2: stats(), 4: silent}  # two probes: no majority
    consensus = {e: across_probes(list(s.values())) for e, s in per_endpoint.items()}
    result = probe_outliers(per_endpoint, consensus, MAINNET)
    assert {p: (o.endpoints, o.disagreements) for p, o in result.items()} == {
        1: (3, 0),
        2: (3, 0),
        3: (3, 3),
        4: (0, 0),
    }
    assert result[4].score is None
    assert disagrees(down, consensus[2], MAINNET) == ["availability"]
