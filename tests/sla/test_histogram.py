"""The fixed latency histogram: bucket edges, nearest-rank percentiles, merging, storage."""

from __future__ import annotations

from monitor.sla import histogram as h


def test_a_latency_on_a_bound_falls_in_that_bucket_and_one_microsecond_more_in_the_next() -> None:
    assert h.upper_ms(h.bucket(250_000)) == 250
    assert h.upper_ms(h.bucket(250_001)) == 300
    assert h.upper_ms(h.bucket(0)) == 5
    assert h.bucket(10**9) == len(h.LATENCY_BOUNDS_MS)
    assert h.upper_ms(h.bucket(10**9)) == h.OVERFLOW_MS


def test_percentile_is_the_upper_bound_of_the_nearest_rank_bucket() -> None:
    hist = {h.bucket(40_000): 94, h.bucket(400_000): 6}  # 94 fast answers, 6 slow
    assert h.percentile(hist, 50) == 40
    assert h.percentile(hist, 94) == 40
    assert h.percentile(hist, 95) == 400  # rank 95 is a slow one
    assert h.percentile({}, 95) is None


def test_merge_adds_counts_and_round_trips_through_json() -> None:
    merged = h.merge([{1: 2, 3: 1}, {3: 4, 5: 0}])
    assert merged == {1: 2, 3: 5}
    assert h.loads(h.dumps(merged)) == merged
    assert h.dumps({2: 0}) == "{}"
