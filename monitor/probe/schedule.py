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

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass


def _fraction(*parts: bytes) -> float:
    """A stable number in [0, 1) from ``parts`` (blake2b: the same on every machine)."""
    digest = hashlib.blake2b(b"\x00".join(parts), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass(frozen=True)
class Schedule:
    interval_s: float
    seed: bytes  # the probe's own (its address): offsets and phase differ from probe to probe

    @property
    def phase_s(self) -> float:
        return _fraction(b"phase", self.seed) * self.interval_s

    def offset_s(self, endpoint_id: int) -> float:
        """Where in every round ``endpoint_id`` is visited, in [0, interval)."""
        return _fraction(b"endpoint", self.seed, str(endpoint_id).encode()) * self.interval_s

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


@dataclass
class Pacer:
    """Hands out visits as their time comes, never two of one round late into the next.

    ``due(now)`` returns the visits whose slot has come, each once, in slot order. A visit more
    than ``max_late_s`` behind its slot is skipped (``missed``), not made late: a probe that was
    stalled (a paused process, a starved CPU) resumes at the slots of the moment instead of
    catching up in a burst that would time every call late. The endpoint set may change between
    calls; a new endpoint is first visited at its slot in the current round if that is still
    ahead, else next round. The first round handed out is the one after the first call's: whole.
    """

    schedule: Schedule
    endpoint_ids: frozenset[int]
    max_late_s: float = 0.5
    round_: int | None = None  # the round whose slots are being handed out
    _queue: list[tuple[float, int]] | None = None
    _next: int = 0

    def set_endpoints(self, endpoint_ids: Iterable[int], now: float) -> list[tuple[int, int]]:
        """Change the endpoint set; returns the visits of the current round that a new
        endpoint's slot, already past, makes missed."""
        self.endpoint_ids = frozenset(endpoint_ids)
        if self.round_ is None or self._queue is None:
            return []
        done = self._queue[: self._next]
        handed = {e for _, e in done}
        rest = self.schedule.slots(self.round_, self.endpoint_ids - handed)
        self._queue = done + [s for s in rest if s[0] >= now]
        return [(self.round_, e) for t, e in rest if t < now]

    def due(self, now: float) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """(visits to make now, visits missed), each a list of (round, endpoint id)."""
        visits: list[tuple[int, int]] = []
        missed: list[tuple[int, int]] = []
        current = self.schedule.round_of(now)
        if self.round_ is None:
            self.start(now)
        while True:
            assert self.round_ is not None and self._queue is not None
            while self._next < len(self._queue) and self._queue[self._next][0] <= now:
                at, endpoint_id = self._queue[self._next]
                self._next += 1
                late = at < now - self.max_late_s
                (missed if late else visits).append((self.round_, endpoint_id))
            if self.round_ >= current:
                return visits, missed
            self._begin(self.round_ + 1)  # this round's window has closed: on to the next

    def start(self, now: float) -> None:
        """Begin with the next round: every round a probe makes is whole (the one under way
        when it starts is not its own)."""
        self._begin(self.schedule.round_of(now) + 1)

    def next_at(self) -> float:
        """When the next visit falls due (the start of the next round when this one is done)."""
        assert self.round_ is not None and self._queue is not None
        if self._next < len(self._queue):
            return self._queue[self._next][0]
        nxt = self.schedule.slots(self.round_ + 1, self.endpoint_ids)
        return nxt[0][0] if nxt else self.schedule.start(self.round_ + 1)

    def _begin(self, round_: int) -> None:
        self.round_ = round_
        self._queue = self.schedule.slots(round_, self.endpoint_ids)
        self._next = 0
