"""The pace of a dispatch: one shared 429 pause and an AIMD request rate.

When the service answers 429, every worker of the dispatch waits out the
``Retry-After``, not only the one that got it: otherwise the others keep
hitting the limit and a rate limit turns into a storm of 429s. The rate then
halves (multiplicative decrease) and creeps back up linearly (additive
increase), like TCP's congestion control: the rate the service tolerates is
found and followed without being told.

The rate is enforced with an :class:`aiolimiter.AsyncLimiter` whose capacity
is fixed; changing the rate changes how much of it each request acquires, so
the limiter is never replaced (which would hand out a fresh burst) and
waiters keep their turn. Workers queue on an :class:`asyncio.Lock` (FIFO) in
front of it so that nobody is overtaken after a rate change.

Nothing here costs anything until it is needed: with no ``rate_limit`` and no
429 yet, :attr:`Pacer.gated` is False and the dispatcher does not call
:meth:`Pacer.wait_turn` at all.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Final

from aiolimiter import AsyncLimiter

__all__ = ["Pacer"]

#: Seconds between two steps of the additive increase.
_GROWTH_INTERVAL: Final = 0.25
#: A send-rate measurement covers at least this many seconds.
_MIN_WINDOW: Final = 0.25


class Pacer:
    """Decides when the next request of a dispatch may go on the wire.

    ``ceiling`` is the caller's ``rate_limit`` in requests per second (None:
    unlimited until the service answers 429). After a 429 the pace halves,
    never below ``min_rate``, then grows back by about ``1 / recovery_time``
    of itself a second (10 s: it doubles in about 7 s), up to ``ceiling``.
    Without a ceiling the pace is dropped altogether once it has grown to
    twice the rate that drew the 429. ``burst_window`` is how many seconds'
    worth of requests may leave at once after a quiet spell. ``clock`` and
    ``sleep`` are the event loop's time and :func:`asyncio.sleep` unless a
    test injects its own.
    """

    def __init__(
        self,
        ceiling: float | None,
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
        min_rate: float = 1.0,
        recovery_time: float = 10.0,
        burst_window: float = 0.1,
    ) -> None:
        if ceiling is not None and not ceiling > 0:
            raise ValueError("rate_limit must be a positive number of requests per second")
        if not min_rate > 0 or not recovery_time > 0 or not burst_window > 0:
            raise ValueError("min_rate, recovery_time and burst_window must be positive")
        self._clock = clock
        self._sleep = sleep
        self._ceiling = ceiling
        self._min_rate = min(min_rate, ceiling) if ceiling is not None else min_rate
        self._recovery_time = recovery_time
        self._burst_window = burst_window
        self._rate: float | None = None
        self._limiter: AsyncLimiter | None = None
        self._limiter_window = 0.0
        self._cost = 1.0
        self._turn = asyncio.Lock()
        self._resume_at = -math.inf
        self._backoff_at = -math.inf
        self._peak = math.inf  # the rate that drew the last 429
        self._growing = False
        self._last_growth = -math.inf
        # Send-rate measurement, for halving from the rate actually achieved.
        self._window_start = -math.inf
        self._window_sends = 0
        self._last_window_rate = 0.0
        #: True while sending must go through :meth:`wait_turn` (a pace is set
        #: or a pause may be running); the dispatcher's fast path reads it.
        self.gated = False
        #: 429 answers reported with :meth:`note_rate_limited`.
        self.rate_limited = 0
        #: Times the pace was halved.
        self.backoffs = 0
        if ceiling is not None:
            self._set_rate(ceiling)

    @property
    def rate(self) -> float | None:
        """The current pace in requests per second (None: unpaced)."""
        return self._rate

    @property
    def paused_until(self) -> float:
        """Clock reading at which the current 429 pause ends (past: none)."""
        return self._resume_at

    def _set_rate(self, rate: float) -> None:
        rate = max(self._min_rate, rate)
        self._rate = rate
        # The limiter holds 1 unit and drains 1 / window units a second; a
        # request takes 1 / (window * rate) units. The window only changes
        # (and the limiter with it) when the rate is too low for one request
        # to fit in the burst window.
        window = max(self._burst_window, 1.0 / rate)
        if self._limiter is None or window != self._limiter_window:
            self._limiter = AsyncLimiter(1.0, window)
            self._limiter_window = window
        self._cost = min(1.0, 1.0 / (window * rate))
        self.gated = True

    def _drop_rate(self) -> None:
        self._rate = None
        self._limiter = None
        self._growing = False

    async def wait_turn(self) -> None:
        """Return when a request may be sent: no pause running, pace respected."""
        clock = self._clock
        while True:
            now = clock()
            if self._resume_at > now:
                await self._sleep(self._resume_at - now)
                continue
            async with self._turn:
                now = clock()
                if self._resume_at > now:
                    continue  # a pause began while queued
                if self._growing:
                    self._grow(now)
                limiter = self._limiter
                if limiter is None:
                    self.gated = False
                    return
                await limiter.acquire(self._cost)
            if self._resume_at <= clock():
                return

    def note_sent(self, now: float) -> None:
        """Count a request going out at ``now`` (to measure the send rate)."""
        elapsed = now - self._window_start
        if elapsed >= 1.0:
            adjacent = self._window_sends and elapsed < 2.0
            self._last_window_rate = self._window_sends / elapsed if adjacent else 0.0
            self._window_start = now
            self._window_sends = 0
        self._window_sends += 1

    def _measured_rate(self, now: float) -> tuple[float, bool]:
        """The recent send rate in requests per second, and whether it is
        based on enough to be trusted.

        Biased high when little was seen: an overestimate is corrected by the
        next 429 within one pause, an underestimate only by slow growth.
        """
        elapsed = now - self._window_start
        sends = self._window_sends
        current = sends / max(elapsed, _MIN_WINDOW / 5) if sends else 0.0
        reliable = self._last_window_rate > 0 or elapsed >= _MIN_WINDOW or sends >= 20
        return max(current, self._last_window_rate), reliable

    def note_rate_limited(self, sent_at: float, wait: float) -> None:
        """A request sent at ``sent_at`` got a 429: pause everyone ``wait``
        seconds from now, and halve the pace once per episode.

        429s for requests sent before the pause ends belong to the episode
        that caused it and do not halve the pace again.
        """
        now = self._clock()
        self.rate_limited += 1
        self._resume_at = max(self._resume_at, now + max(0.0, wait))
        self.gated = True
        if sent_at < self._backoff_at:
            return
        measured, reliable = self._measured_rate(now)
        if self._rate is None:
            current = measured if measured > 0 else 2 * self._min_rate
        elif reliable and measured > 0:
            current = min(self._rate, measured)
        else:
            current = self._rate
        self.backoffs += 1
        self._peak = current
        self._set_rate(current / 2)
        self._growing = True
        self._backoff_at = self._resume_at
        self._last_growth = self._resume_at
        # Measure afresh from the end of the pause: time spent paused is not
        # a rate the service chose.
        self._window_start = self._resume_at
        self._window_sends = 0
        self._last_window_rate = 0.0

    def _grow(self, now: float) -> None:
        """The slow increase after a backoff, applied lazily when somebody waits."""
        assert self._rate is not None
        elapsed = now - self._last_growth
        if elapsed < _GROWTH_INTERVAL:
            return
        self._last_growth = now
        rate = self._rate * math.exp(elapsed / self._recovery_time)
        if self._ceiling is not None:
            if rate >= self._ceiling:
                rate = self._ceiling
                self._growing = False
        elif rate >= 2 * self._peak:
            self._drop_rate()  # well past the trouble: stop pacing
            return
        self._set_rate(rate)
