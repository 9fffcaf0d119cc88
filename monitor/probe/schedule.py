"""When a probe visits each endpoint: once per interval, at a stable offset of its own.

Like Prometheus' scrape offsets, each endpoint's offset within the interval is a hash of the
endpoint and of a per-probe seed, so thousands of endpoints spread evenly over the interval (a
handful in flight at any moment, no burst), an endpoint is visited at the same point of every
interval (its figures are evenly spaced, across restarts too), and several probes do not visit
one operator in unison.

Rounds are fixed windows of wall-clock time, ``[k * interval + phase, (k + 1) * interval +
phase)`` for integer ``k``; the phase is the probe's own (from the same seed), so probes also
close their rounds and deliver at different moments. Every endpoint has exactly one slot in
every round. Pure functions of their arguments: no clock is read here.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass


def _fraction(*parts: bytes) -> float:
    """A stable number in [0, 1) from ``parts`` (blake2b: the same on every machine)."""
    digest = hashlib.blake2b(b"\x00".join(parts), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@functools.lru_cache(maxsize=1 << 18)  # a few checks x every endpoint: hashed once each
def _turn(seed: bytes, every: int, key: tuple[object, ...]) -> int:
    return int(_fraction(b"turn", seed, repr(key).encode()) * every)


@dataclass(frozen=True)
class Schedule:
    interval_s: float
    seed: bytes  # the probe's own (its address): offsets and phase differ from probe to probe

    @functools.cached_property
    def phase_s(self) -> float:
        return _fraction(b"phase", self.seed) * self.interval_s

    def offset_s(self, endpoint_id: int) -> float:
        """Where in every round ``endpoint_id`` is visited, in [0, interval)."""
        return _fraction(b"endpoint", self.seed, str(endpoint_id).encode()) * self.interval_s

    def turn(self, every: int, *key: object) -> int:
        """A stable number in [0, every) for ``key``: which of every ``every`` rounds is its."""
        return _turn(self.seed, every, key)

    def round_of(self, t: float) -> int:
        """The round whose window holds unix time ``t``."""
        return math.floor((t - self.phase_s) / self.interval_s)

    def start(self, round_: int) -> float:
        """Unix time at which round ``round_``'s window opens (and the previous one closes)."""
        return round_ * self.interval_s + self.phase_s

    def slot(self, round_: int, endpoint_id: int) -> float:
        return self.start(round_) + self.offset_s(endpoint_id)

    def slots(self, round_: int, endpoint_ids: Iterable[int]) -> list[tuple[float, int]]:
        """Every endpoint's (time, endpoint id) in round ``round_``, in time order."""
        start = self.start(round_)
        return sorted((start + self.offset_s(e), e) for e in endpoint_ids)


class Pacer:
    """Hands out visits as their time comes, never two of one round late into the next.

    ``due(now)`` returns the visits whose slot has come, each once, in slot order. A visit more
    than ``max_late_s`` behind its slot is skipped (``missed``), not made late: a probe that was
    stalled (a paused process, a starved CPU) resumes at the slots of the moment instead of
    catching up in a burst that would time every call late. The endpoint set may change between
    calls; a new endpoint is first visited at its slot in the current round if that is still
    ahead, else next round. The first round handed out is the one after the first call's: whole.
    """

    def __init__(
        self, schedule: Schedule, endpoint_ids: Iterable[int], max_late_s: float = 0.5
    ) -> None:
        self.schedule = schedule
        self.max_late_s = max_late_s
        self.round_: int | None = None
        self._offsets: dict[int, float] = {}
        self._order: list[tuple[float, int]] = []  # (offset, endpoint id), by offset
        self._queue: list[tuple[float, int]] = []  # the current round's, handed out in order
        self._next = 0
        self._handed: set[int] = set()  # endpoints handed out (visited or missed) this round
        self._set_order(endpoint_ids)

    @property
    def endpoint_ids(self) -> frozenset[int]:
        return frozenset(self._offsets)

    def _set_order(self, endpoint_ids: Iterable[int]) -> None:
        # Offsets are hashed once per endpoint: a round's start then costs nothing (at 10,000
        # endpoints, hashing and sorting anew took ~50 ms of the measuring loop per round).
        old = self._offsets
        self._offsets = {e: old[e] if e in old else self.schedule.offset_s(e) for e in endpoint_ids}
        self._order = sorted((o, e) for e, o in self._offsets.items())

    def set_endpoints(self, endpoint_ids: Iterable[int], now: float) -> list[tuple[int, int]]:
        """Change the endpoint set; returns the visits of the current round that a new
        endpoint's slot, already past, makes missed."""
        self._set_order(endpoint_ids)
        if self.round_ is None:
            return []
        start = self.schedule.start(self.round_)
        rest = [(o, e) for o, e in self._order if e not in self._handed]
        self._queue = [(o, e) for o, e in rest if start + o >= now]
        self._next = 0
        missed = [(self.round_, e) for o, e in rest if start + o < now]
        self._handed.update(e for _, e in missed)
        return missed

    def due(self, now: float) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """(visits to make now, visits missed), each a list of (round, endpoint id)."""
        visits: list[tuple[int, int]] = []
        missed: list[tuple[int, int]] = []
        current = self.schedule.round_of(now)
        if self.round_ is None:
            self.start(now)
        while True:
            assert self.round_ is not None
            start = self.schedule.start(self.round_)
            queue, late_before = self._queue, now - self.max_late_s
            while self._next < len(queue) and start + queue[self._next][0] <= now:
                offset, endpoint_id = queue[self._next]
                self._next += 1
                self._handed.add(endpoint_id)
                late = start + offset < late_before
                (missed if late else visits).append((self.round_, endpoint_id))
            if self.round_ >= current:
                return visits, missed
            self._begin(self.round_ + 1)  # this round's window has closed: on to the next

    def start(self, now: float) -> None:
        """Begin with the next round: every round a probe makes is whole (the one under way
        when it starts is not its own)."""
        self._begin(self.schedule.round_of(now) + 1)

    def next_at(self) -> float:
        """When the next visit falls due (in the next round when this one is done)."""
        assert self.round_ is not None
        if self._next < len(self._queue):
            return self.schedule.start(self.round_) + self._queue[self._next][0]
        first = self._order[0][0] if self._order else 0.0
        return self.schedule.start(self.round_ + 1) + first

    def _begin(self, round_: int) -> None:
        self.round_ = round_
        self._queue = self._order
        self._next = 0
        self._handed = set()
