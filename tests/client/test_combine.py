"""Combining verified answers (monitor.client.combine): median, renormalisation, asOf, quorum
and the report, on plain data (the signatures are checked in test_verify, over HTTP in
test_fetch)."""

from __future__ import annotations

import dataclasses
import random
from fractions import Fraction

import pytest

from monitor.client import (
    AnswerRejected,
    CombinedWeights,
    EndpointBps,
    QuorumNotReached,
    SignedWeights,
    combine,
    median,
    renormalise,
)
from monitor.client.combine import CollectorReport, Outcome

T = 1_800_000_000_000  # a scoring run's asOf, unix ms
HONEST = {1: ("alpha", 6_000), 2: ("bravo", 3_000), 3: ("charlie", 1_000)}


def answer(
    signer: str,
    weights: dict[int, tuple[str, int]] = HONEST,
    *,
    as_of_ms: int = T,
    window: str = "5m",
) -> SignedWeights:
    entries = tuple(EndpointBps(e, op, bps) for e, (op, bps) in sorted(weights.items()))
    return SignedWeights(1, window, as_of_ms, entries, "0x", signer)


def run(*outcomes: Outcome, quorum: int | None = None, **kwargs: object) -> CombinedWeights:
    pairs = [(f"http://c{i}", o) for i, o in enumerate(outcomes)]
    return combine(
        pairs,
        chain_id=1,
        window=kwargs.pop("window", None),  # type: ignore[arg-type]
        quorum=quorum or len(pairs) // 2 + 1,
        **kwargs,  # type: ignore[arg-type]
    )


def bps(result: CombinedWeights) -> dict[int, int]:
    return {w.endpoint_id: w.weight_bps for w in result.weights}


def statuses(reports: tuple[object, ...]) -> list[tuple[str, str | None]]:
    return [(r.status, r.reason) for r in reports if isinstance(r, CollectorReport)]


def test_median_is_exact() -> None:
    assert median([5, 1, 3]) == 3
    assert median([4, 1, 2, 3]) == Fraction(5, 2)
    assert median([7]) == 7


def test_renormalise_sums_to_one_and_10000_deterministically() -> None:
    unchanged = {1: Fraction(6_000), 2: Fraction(3_000), 3: Fraction(1_000)}
    assert {e: b for e, (_, b) in renormalise(unchanged).items()} == {1: 6_000, 2: 3_000, 3: 1_000}
    thirds = renormalise({9: Fraction(1), 4: Fraction(1), 7: Fraction(1)})
    assert {e: b for e, (_, b) in thirds.items()} == {4: 3_334, 7: 3_333, 9: 3_333}
    assert sum(s for s, _ in thirds.values()) == 1
    assert renormalise({1: Fraction(0), 2: Fraction(0)}) == {1: (0, 0), 2: (0, 0)}
    rng = random.Random(8)
    for _ in range(200):  # bounded: 200 random cases
        values = {e: Fraction(rng.randrange(0, 10_001), 2) for e in range(rng.randrange(1, 30))}
        if not any(values.values()):
            continue
        out = renormalise(values)
        assert sum(b for _, b in out.values()) == 10_000
        assert sum(s for s, _ in out.values()) == 1
        for share, b in out.values():
            assert abs(b - share * 10_000) < 1  # each off by less than one basis point
        assert out == renormalise(dict(reversed(list(values.items()))))  # order-free


def test_identical_answers_are_accepted_as_is() -> None:
    result = run(answer("0xA"), answer("0xB"), answer("0xC"))
    assert result.unanimous and result.as_of_ms == T and result.counted == 3
    assert bps(result) == {1: 6_000, 2: 3_000, 3: 1_000}
    assert [w.weight for w in result.weights] == [0.6, 0.3, 0.1]
    assert [(r.status, r.detail) for r in result.collectors] == [
        ("ok", "identical to the combined weights")
    ] * 3


def test_a_liar_is_outvoted_and_named_with_each_endpoint_it_moved() -> None:
    lie = {1: ("alpha", 1_000), 2: ("bravo", 3_000), 3: ("charlie", 6_000)}
    result = run(answer("0xA"), answer("0xL", lie), answer("0xC"))
    assert not result.unanimous
    assert bps(result) == {1: 6_000, 2: 3_000, 3: 1_000}
    liar = result.collectors[1]
    assert (liar.status, liar.signer) == ("disagreed", "0xL")
    assert [(d.endpoint_id, d.weight_bps, d.combined_bps) for d in liar.disagreements] == [
        (1, 1_000, 6_000),
        (3, 6_000, 1_000),
    ]
    assert [r.status for r in result.collectors] == ["ok", "disagreed", "ok"]


def test_medians_are_renormalised_to_10000() -> None:
    result = run(
        answer("0xA", {1: ("alpha", 6_000), 2: ("bravo", 4_000), 3: ("charlie", 0)}),
        answer("0xB", {1: ("alpha", 5_000), 2: ("bravo", 2_000), 3: ("charlie", 3_000)}),
        answer("0xC", {1: ("alpha", 4_000), 2: ("bravo", 3_000), 3: ("charlie", 3_000)}),
        quorum=1,
        tolerance_bps=2_000,
    )
    # Medians 5000, 3000, 3000 (sum 11000) -> 4545.45, 2727.27, 2727.27 -> largest remainder.
    assert bps(result) == {1: 4_546, 2: 2_727, 3: 2_727} and result.total_bps == 10_000
    assert [w.weight for w in result.weights] == [5 / 11, 3 / 11, 3 / 11]
    # An even count: the two middle values are averaged.
    result = run(
        answer("0xA", {1: ("alpha", 7_000), 2: ("bravo", 3_000)}),
        answer("0xB", {1: ("alpha", 6_000), 2: ("bravo", 4_000)}),
        quorum=2,
        tolerance_bps=500,
    )
    assert bps(result) == {1: 6_500, 2: 3_500}
    assert [r.status for r in result.collectors] == ["ok", "ok"]
    # Nothing routable anywhere: all 0, as a collector says it.
    none = {1: ("alpha", 0), 2: ("bravo", 0)}
    result = run(answer("0xA", none), answer("0xB", none), answer("0xC", HONEST))
    assert bps(result) == {1: 0, 2: 0} and result.total_bps == 0


def test_an_endpoint_missing_from_an_answer_counts_as_0() -> None:
    two = {1: ("alpha", 7_500), 2: ("bravo", 2_500)}
    three = {1: ("alpha", 6_000), 2: ("bravo", 2_000), 3: ("charlie", 2_000)}
    result = run(answer("0xA", two), answer("0xB", two), answer("0xC", three), quorum=2)
    # charlie's median is 0 (two of three would not route there), and only one lists it.
    assert bps(result) == {1: 7_500, 2: 2_500}
    extra = result.collectors[2]
    assert extra.status == "disagreed"
    assert (3, 2_000, 0) in [
        (d.endpoint_id, d.weight_bps, d.combined_bps) for d in extra.disagreements
    ]
    # An endpoint only a minority lists is dropped; another operator id for an id is not it.
    padded = {**HONEST, 99: ("mallory", 0)}
    renamed = {1: ("mallory", 6_000), 2: ("bravo", 3_000), 3: ("charlie", 1_000)}
    result = run(answer("0xA"), answer("0xB", padded), answer("0xC", renamed), answer("0xD"))
    assert [(w.endpoint_id, w.operator_id) for w in result.weights] == [
        (1, "alpha"),
        (2, "bravo"),
        (3, "charlie"),
    ]
    assert bps(result) == {1: 6_000, 2: 3_000, 3: 1_000}
    moved = result.collectors[2].disagreements
    assert [(d.endpoint_id, d.operator_id, d.weight_bps, d.combined_bps) for d in moved] == [
        (1, "alpha", None, 6_000),
        (1, "mallory", 6_000, 0),
    ]


def test_collectors_a_run_apart_are_combined_and_far_ones_excluded() -> None:
    later = {1: ("alpha", 5_950), 2: ("bravo", 3_050), 3: ("charlie", 1_000)}
    result = run(answer("0xA"), answer("0xB", later, as_of_ms=T + 15_000), answer("0xC"))
    assert not result.unanimous and result.as_of_ms == T  # the lower median asOf
    assert bps(result) == {1: 6_000, 2: 3_000, 3: 1_000}
    assert [r.status for r in result.collectors] == ["ok", "ok", "ok"]  # within 100 bps

    # One collector claiming a far future run cannot push the others out: the median decides.
    future = answer("0xF", as_of_ms=T + 3_600_000)
    stale = answer("0xS", as_of_ms=T - 600_000)
    result = run(answer("0xA"), future, answer("0xB"), stale, answer("0xC"))
    assert statuses(result.collectors) == [
        ("ok", None),
        ("excluded", "ahead"),
        ("ok", None),
        ("excluded", "stale"),
        ("ok", None),
    ]
    assert result.unanimous  # of the three counted
    with pytest.raises(QuorumNotReached):  # the two far ones do not count towards a quorum
        run(answer("0xA"), future, stale)


def test_the_same_key_counts_once_and_the_window_of_most_is_used() -> None:
    result = run(answer("0xA"), answer("0xa"), answer("0xB"), quorum=2)
    assert statuses(result.collectors) == [
        ("ok", None),
        ("excluded", "duplicate_signer"),
        ("ok", None),
    ]
    result = run(answer("0xA"), answer("0xB", window="1h"), answer("0xC"))
    assert result.window == "5m"
    assert statuses(result.collectors)[1] == ("excluded", "wrong_window")


def test_too_few_valid_answers_is_a_quorum_failure_with_the_report() -> None:
    rejected = AnswerRejected("signature recovers to 0x1", code="unknown_signer")
    unreachable = AnswerRejected("ConnectError", code="unreachable")
    with pytest.raises(QuorumNotReached, match="1 of 3 collectors gave valid weights") as caught:
        run(answer("0xA"), rejected, unreachable)
    assert statuses(caught.value.reports) == [
        ("ok", None),
        ("excluded", "unknown_signer"),
        ("excluded", "unreachable"),
    ]


def test_two_answers_that_differ_have_a_median_neither_vouches_for() -> None:
    lie = {1: ("alpha", 1_000), 2: ("bravo", 3_000), 3: ("charlie", 6_000)}
    with pytest.raises(QuorumNotReached, match="0 of 2 valid answers are within") as caught:
        run(answer("0xA"), answer("0xL", lie), AnswerRejected("down", code="unreachable"))
    assert statuses(caught.value.reports) == [
        ("disagreed", None),
        ("disagreed", None),
        ("excluded", "unreachable"),
    ]


def test_a_collector_with_another_registry_is_excluded() -> None:
    """Its weights count other probes or operators: reported, never combined (issue 8)."""
    same, other = "0x" + "a" * 64, "0x" + "b" * 64
    odd = {1: ("alpha", 1_000), 2: ("bravo", 1_000), 3: ("charlie", 8_000)}

    def told(
        signer: str, registry: str | None, weights: dict[int, tuple[str, int]] = HONEST
    ) -> SignedWeights:
        return dataclasses.replace(answer(signer, weights), registry_hash=registry)

    result = run(told("0xA", same), told("0xB", same), told("0xC", other, odd))
    assert result.unanimous and bps(result) == {1: 6_000, 2: 3_000, 3: 1_000}
    assert statuses(result.collectors) == [
        ("ok", None),
        ("ok", None),
        ("excluded", "registry_mismatch"),
    ]
    assert other in result.collectors[2].detail and same in result.collectors[2].detail
    # pinned: the majority does not decide; a collector that does not tell is not judged
    pinned = run(
        told("0xA", same), told("0xB", other), told("0xC", None), quorum=2, registry_hash=same
    )
    assert statuses(pinned.collectors) == [
        ("ok", None),
        ("excluded", "registry_mismatch"),
        ("ok", None),
    ]
    # a tie for the most applied registry judges nobody on it
    tie = run(told("0xA", same), told("0xB", other), quorum=2)
    assert all(r.reason != "registry_mismatch" for r in tie.collectors)
