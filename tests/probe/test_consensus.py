"""reference_head and canonical_hash: examples, and properties against a minority of liars."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.probe.consensus import (
    HeadClock,
    canonical_hash,
    head_ahead_tolerance,
    head_quorum,
    reference_head,
)

A, B, C = ("0x" + c * 64 for c in "abc")

heights = st.integers(min_value=0, max_value=2**40)
huge = st.integers(min_value=2**40, max_value=2**80)
hashes = st.sampled_from([A, B, C])


# --- examples -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "quorum"),
    [(0, 0), (1, 1), (2, 2), (3, 2), (6, 2), (7, 3), (9, 3), (10, 4), (30, 10), (31, 11)],
)
def test_head_quorum(n: int, quorum: int) -> None:
    assert head_quorum(n) == quorum


@pytest.mark.parametrize(
    ("heads", "expected"),
    [
        ([], None),
        ([100], 100),  # alone, an endpoint is its own reference
        ([100, 100], 100),
        ([100, 10**9], 100),  # the liar is one of two: the lower wins
        ([100, 101, 10**9], 101),
        ([95, 100, 100, 101, 10**9, 10**9], 10**9),  # two of six agreeing is a third
        ([95, 100, 100, 101, 101, 10**9, 10**9], 101),  # seven: a third is three
        ([5, 4, 3, 2, 1, 0], 4),
    ],
)
def test_reference_head_examples(heads: list[int], expected: int | None) -> None:
    assert reference_head(heads) == expected


def test_reference_head_ignores_order() -> None:
    assert reference_head([3, 10**9, 1, 2]) == reference_head([10**9, 1, 2, 3]) == 3


@pytest.mark.parametrize(
    ("confirmations", "block_time_s", "tolerance"),
    [(0, 60, 2), (1, 120, 2), (6, 12, 6), (64, 12, 64), (3, 1, 60), (0, 0.25, 240)],
)
def test_head_ahead_tolerance(confirmations: int, block_time_s: float, tolerance: int) -> None:
    assert head_ahead_tolerance(confirmations, block_time_s) == tolerance


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        ([], None),
        ([A], None),  # one answer is never canonical
        ([A, A], A),
        ([A, B], None),
        ([A, A, B], A),
        ([A, B, B], B),
        ([A, A, B, B], None),  # a tie is no strict majority
        ([A, A, B, C], None),  # a plurality is not a majority
        ([A, B, C], None),
        ([A, A, A, B, C], A),
    ],
)
def test_canonical_hash_examples(answers: list[str], expected: str | None) -> None:
    assert canonical_hash(answers) == expected


# --- properties ---------------------------------------------------------------------------------


@st.composite
def honest_and_liars(draw: st.DrawFn) -> tuple[list[int], list[int]]:
    """n >= 3 heads, fewer than head_quorum(n) of which are arbitrary (huge) lies."""
    n = draw(st.integers(min_value=3, max_value=60))
    liars = draw(st.integers(min_value=0, max_value=head_quorum(n) - 1))
    honest = draw(st.lists(heights, min_size=n - liars, max_size=n - liars))
    lies = draw(st.lists(huge, min_size=liars, max_size=liars))
    return honest, lies


@settings(max_examples=300, deadline=None)
@given(honest_and_liars(), st.randoms(use_true_random=False))
def test_minority_of_liars_cannot_lift_the_reference(
    case: tuple[list[int], list[int]], rnd: object
) -> None:
    honest, lies = case
    heads = honest + lies
    rnd.shuffle(heads)  # type: ignore[attr-defined]
    reference = reference_head(heads)
    assert reference is not None
    assert reference <= max(honest)
    # And it is a height some honest endpoint reached.
    assert reference >= min(honest)


@settings(max_examples=300, deadline=None)
@given(st.lists(heights, min_size=2, max_size=60), st.data())
def test_no_single_endpoint_sets_the_reference_above_all_others(
    heads: list[int], data: st.DataObject
) -> None:
    # Whatever one endpoint claims, the reference is at most the highest of the others.
    i = data.draw(st.integers(min_value=0, max_value=len(heads) - 1))
    heads[i] = data.draw(st.one_of(heights, huge))
    others = heads[:i] + heads[i + 1 :]
    reference = reference_head(heads)
    assert reference is not None
    assert reference <= max(others)


@settings(max_examples=300, deadline=None)
@given(st.lists(heights, min_size=1, max_size=60))
def test_reference_is_reached_by_a_quorum(heads: list[int]) -> None:
    reference = reference_head(heads)
    assert reference in heads
    assert sum(h >= reference for h in heads) >= head_quorum(len(heads))
    # and it is the highest such height
    assert sum(h > reference for h in heads) < head_quorum(len(heads))


@settings(max_examples=300, deadline=None)
@given(st.lists(hashes, max_size=30))
def test_canonical_hash_needs_a_strict_majority_of_two(answers: list[str]) -> None:
    result = canonical_hash(answers)
    counts = Counter(answers)
    majority = [h for h, c in counts.items() if c >= 2 and 2 * c > len(answers)]
    assert result == (majority[0] if majority else None)
    if result is not None:
        assert counts[result] >= 2 and 2 * counts[result] > len(answers)


@given(hashes)
def test_one_answer_is_never_canonical(answer: str) -> None:
    assert canonical_hash([answer]) is None


@settings(max_examples=200, deadline=None)
@given(st.lists(hashes, min_size=1, max_size=30), st.randoms(use_true_random=False))
def test_canonical_hash_ignores_order(answers: list[str], rnd: object) -> None:
    shuffled = list(answers)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert canonical_hash(shuffled) == canonical_hash(answers)


# --- HeadClock: the reference at a moment, from heads seen at other moments -------------------


def test_head_clock_carries_heads_forward_at_the_block_time() -> None:
    clock = HeadClock(block_time_s=1.0)
    clock.set(1, 0, 100)  # seen at t = 0 ms
    clock.set(2, 1_500, 101)
    clock.set(3, 2_000, 96)  # a laggard
    # At 2.0 s: endpoint 1 has had at least 2 more blocks (capped at the highest seen: 101),
    # endpoint 2 at least 0 more: quorum 2 of 3 -> the second highest projection.
    assert clock.reference(2_000) == 101
    # A second later nobody has been seen again: the cap holds the reference at 101.
    assert clock.reference(3_000) == 101
    clock.set(2, 3_000, 103)
    assert clock.reference(3_000) == 103  # endpoint 1 projects to 103; cap 103


def test_head_clock_never_exceeds_what_the_honest_nodes_have() -> None:
    """Nodes that follow a chain making a block every second, each seen at its own moment:
    the reference at any moment is at most the chain's height then, and at most one block
    below it."""
    clock = HeadClock(block_time_s=1.0)
    for t_ms in range(0, 20_000, 137):  # visits spread unevenly, 8 endpoints in turn
        endpoint = (t_ms // 137) % 8
        clock.set(endpoint, t_ms, t_ms // 1000)  # the chain's height at t
        reference = clock.reference(t_ms)
        assert reference is not None
        if t_ms >= 8 * 137:
            assert t_ms // 1000 - 1 <= reference <= t_ms // 1000


def test_head_clock_halted_chain_lags_no_one() -> None:
    clock = HeadClock(block_time_s=2.0)
    for endpoint in range(5):
        clock.set(endpoint, endpoint * 100, 500)
    assert clock.reference(60_000) == 500


def test_head_clock_forgets_and_counts_contested() -> None:
    clock = HeadClock(block_time_s=12.0)
    for endpoint, head in enumerate([100, 100, 100, 103, 103]):
        clock.set(endpoint, 1_000, head)
    assert clock.reference(1_000) == 103  # quorum of 5 is 2
    assert clock.contested(103, 1_000)  # only 2 of 5 at it
    assert not clock.contested(100, 1_000)
    clock.set(3, 0, None)  # found out
    assert clock.reference(1_000) == 100
    assert set(clock.latest) == {0, 1, 2, 4}
