"""Cross-endpoint judgements within one round: the reference head and the canonical hash.

Both are robust against a minority of lying endpoints: neither a plain max nor a single answer
decides.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Hashable, Sequence


def head_quorum(n: int) -> int:
    """How many endpoints must reach a height for it to be the reference head.

    At least two (one endpoint alone cannot set the reference), and a third of the endpoints when
    there are many, so that a few colluding endpoints cannot; all of them when there are fewer
    than two.
    """
    return min(n, max(2, math.ceil(n / 3)))


def reference_head(heads: Sequence[int]) -> int | None:
    """The highest height that at least ``head_quorum(len(heads))`` endpoints have reached."""
    if not heads:
        return None
    ordered = sorted(heads, reverse=True)
    return ordered[head_quorum(len(ordered)) - 1]


def head_ahead_tolerance(confirmations: int, block_time_s: float) -> int:
    """Blocks above the reference a head may be before it counts as a head nobody confirms.

    A minute of blocks (and at least ``confirmations``): with few endpoints the reference is the
    lower of two heads, and an honest node must not be called a liar because its peers lag a few
    blocks. A head a minute beyond everyone else's is not credible.
    """
    return max(confirmations, 2, math.ceil(60 / block_time_s))


def majority(values: Sequence[Hashable], quorum: int = 2) -> Hashable | None:
    """The value a strict majority of the answers hold, with at least ``quorum`` agreeing.

    With fewer agreeing answers nothing is canonical and correctness is unknown, never "correct".
    Every comparison check (block hashes, logs, state, eth_call) votes through this.
    """
    if not values:
        return None
    value, count = Counter(values).most_common(1)[0]
    if count >= max(quorum, 1) and count * 2 > len(values):
        return value
    return None


def canonical_hash(hashes: Sequence[str], quorum: int = 2) -> str | None:
    """The block hash :func:`majority` picks."""
    value = majority(hashes, quorum)
    return None if value is None else str(value)


class HeadClock:
    """The reference head at any moment, from heads seen at different moments (paced rounds).

    Each endpoint's latest head ``h`` seen at ``t`` (unix ms) stands, at a later moment ``now``,
    for ``h + floor((now - t) / block time)``: a node that had ``h`` then has at least that many
    more blocks now if it keeps up (blocks keep coming at the registry's block time), and no more
    than it really has. The reference at ``now`` is the :func:`reference_head` of those
    projections (the same quorum), never above the highest head actually seen: a chain that
    halts makes no one lag. An endpoint visited early in the interval is so judged against the
    chain as it was then, and one visited late against the chain as it is then, however sparse
    the other endpoints' visits.

    The order of the projections does not depend on ``now`` (``h * block_ms - t`` orders them),
    so each endpoint costs one sorted insertion, and the reference one lookup.
    """

    def __init__(self, block_time_s: float) -> None:
        self.block_ms = max(1, round(block_time_s * 1000))
        self.latest: dict[int, tuple[int, int]] = {}  # endpoint id -> (seen at ms, head)
        self._keys: list[int] = []  # h * block_ms - t, sorted
        self._heads: list[int] = []  # sorted

    def set(self, endpoint_id: int, seen_ms: int, head: int | None) -> None:
        """``endpoint_id``'s head seen at ``seen_ms``; None forgets it (unusable)."""
        old = self.latest.pop(endpoint_id, None)
        if old is not None:
            del self._keys[bisect.bisect_left(self._keys, old[1] * self.block_ms - old[0])]
            del self._heads[bisect.bisect_left(self._heads, old[1])]
        if head is not None:
            self.latest[endpoint_id] = (seen_ms, head)
            bisect.insort(self._keys, head * self.block_ms - seen_ms)
            bisect.insort(self._heads, head)

    def reference(self, now_ms: int) -> int | None:
        n = len(self._keys)
        if not n:
            return None
        key = self._keys[n - head_quorum(n)]
        return min((key + now_ms) // self.block_ms, self._heads[-1])

    def contested(self, reference: int | None, now_ms: int) -> bool:
        """The reference is held by no more than half of the projected heads."""
        if reference is None:
            return False
        at_or_above = len(self._keys) - bisect.bisect_left(
            self._keys, reference * self.block_ms - now_ms
        )
        return 2 * at_or_above <= len(self._keys)
