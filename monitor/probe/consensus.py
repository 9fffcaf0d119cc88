"""Cross-endpoint judgements within one round: the reference head and the canonical hash.

Both are robust against a minority of lying endpoints: neither a plain max nor a single answer
decides.
"""

from __future__ import annotations

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
