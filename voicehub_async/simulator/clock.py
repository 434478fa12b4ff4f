"""A hand-driven clock for deterministic simulator tests.

The simulator reads two clocks: a monotonic one (``time.monotonic`` by
default) that drives call lifecycles and rate-limit buckets, and a wall clock
(``time.time``) against which ``scheduledAt`` is validated. Passing one
:class:`ManualClock` for both keeps them consistent while a test moves time
forward explicitly instead of sleeping::

    clock = ManualClock()
    sim = Simulator(config, clock=clock, wall_clock=clock.wall)
    clock.advance(30)
"""

from __future__ import annotations

import threading
import time

__all__ = ["ManualClock"]


class ManualClock:
    """A clock that only moves when :meth:`advance` or :meth:`set` is called.

    Calling the instance returns the monotonic reading; :meth:`wall` returns
    ``wall_start`` plus the same elapsed time. Safe to advance from a test
    thread while a :class:`SimulatorThread` reads it.
    """

    __slots__ = ("_lock", "_now", "_start", "wall_start")

    def __init__(self, start: float = 0.0, wall_start: float | None = None) -> None:
        self._lock = threading.Lock()
        self._start = start
        self._now = start
        #: The wall-clock time (Unix seconds) at ``start``; defaults to now.
        self.wall_start = time.time() if wall_start is None else wall_start

    def __call__(self) -> float:
        return self._now

    def wall(self) -> float:
        """Wall-clock reading (Unix seconds) consistent with the monotonic one."""
        return self.wall_start + (self._now - self._start)

    def advance(self, seconds: float) -> float:
        """Move forward by ``seconds`` (real seconds, >= 0); returns the new reading."""
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        with self._lock:
            self._now += seconds
            return self._now

    def set(self, now: float) -> None:
        """Jump to ``now``, which must not be earlier than the current reading."""
        with self._lock:
            if now < self._now:
                raise ValueError("a clock cannot go backwards")
            self._now = now
