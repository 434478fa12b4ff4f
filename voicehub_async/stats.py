"""Counters and latency percentiles of a dispatch, in constant memory.

A dispatch of a million calls must not keep a million latencies to report a
p99: latencies go into a :class:`LatencyHistogram` of fixed, logarithmically
spaced buckets (a few hundred integers, about 2.5% relative error), and
:class:`DispatchStats` is an immutable snapshot taken from the live
:class:`StatsRecorder` whenever somebody asks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Final, Literal

import attrs

__all__ = ["OUTCOMES", "DispatchStats", "LatencyHistogram", "Outcome", "StatsRecorder"]

#: What became of one input row of a dispatch.
Outcome = Literal["queued", "scheduled", "invalid", "failed", "ambiguous", "not_sent"]

#: Every outcome, in the order reports list them.
OUTCOMES: Final[tuple[Outcome, ...]] = (
    "queued",
    "scheduled",
    "invalid",
    "failed",
    "ambiguous",
    "not_sent",
)


class LatencyHistogram:
    """Durations in fixed log-spaced buckets: memory does not grow with the count.

    Bucket ``i`` holds durations in ``[low * growth**i, low * growth**(i+1))``;
    shorter ones go to the first bucket, longer ones to the last. A quantile
    is the geometric middle of its bucket, clamped to the smallest and largest
    duration seen, so it is within ``sqrt(growth) - 1`` (2.5% by default) of
    the true value for anything between ``low`` and ``high``.
    """

    __slots__ = ("_buckets", "_inv_log_growth", "_last", "count", "growth", "low", "max", "min")

    def __init__(self, low: float = 1e-4, high: float = 3600.0, growth: float = 1.05) -> None:
        if not 0 < low < high or growth <= 1.0:
            raise ValueError("need 0 < low < high and growth > 1")
        self.low = low
        self.growth = growth
        self._inv_log_growth = 1.0 / math.log(growth)
        size = math.ceil(math.log(high / low) * self._inv_log_growth) + 1
        self._buckets = [0] * size
        self._last = size - 1
        self.count = 0
        self.min = math.inf
        self.max = 0.0

    def add(self, seconds: float) -> None:
        """Record one duration."""
        if seconds > self.low:
            index = int(math.log(seconds / self.low) * self._inv_log_growth)
            if index > self._last:
                index = self._last
        else:
            index = 0
        self._buckets[index] += 1
        self.count += 1
        if seconds < self.min:
            self.min = seconds
        if seconds > self.max:
            self.max = seconds

    def merge(self, other: LatencyHistogram) -> None:
        """Add ``other``'s durations to this one (same ``low``, ``high`` and
        ``growth``): how a wide interval is made of narrow ones without
        keeping any duration."""
        if (other.low, other.growth, other._last) != (self.low, self.growth, self._last):
            raise ValueError("only histograms of the same buckets can be merged")
        if other.count == 0:
            return
        buckets = self._buckets
        for index, n in enumerate(other._buckets):
            if n:
                buckets[index] += n
        self.count += other.count
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def quantile(self, q: float) -> float | None:
        """The ``q`` quantile (0 <= q <= 1) in seconds, or None when empty."""
        if not 0.0 <= q <= 1.0:
            raise ValueError("a quantile is between 0 and 1")
        if self.count == 0:
            return None
        if q == 0.0:
            return self.min
        if q == 1.0:
            return self.max
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for index, n in enumerate(self._buckets):
            seen += n
            if seen >= rank:
                middle = self.low * math.pow(self.growth, index + 0.5)
                return min(max(middle, self.min), self.max)
        return self.max  # pragma: no cover - rank <= count always meets a bucket


@attrs.frozen
class DispatchStats:
    """A snapshot of a dispatch's progress (``dispatcher.stats``).

    ``taken`` inputs have been read from the iterable, ``completed`` of them
    have a result, counted per outcome in ``queued`` ... ``not_sent``;
    ``in_flight`` requests are on the wire now. ``requests`` counts every
    trigger request sent, ``retries`` those after an input's first one,
    ``rate_limited`` the 429 answers; ``rate`` is the client-side pace in
    requests per second (None: unpaced). Latencies are seconds from taking an
    input to its result, retries included, over inputs that made a request;
    ``throughput`` is results per second over ``elapsed``.
    """

    taken: int
    completed: int
    queued: int
    scheduled: int
    invalid: int
    failed: int
    ambiguous: int
    not_sent: int
    in_flight: int
    requests: int
    retries: int
    rate_limited: int
    rate: float | None
    elapsed: float
    latency_p50: float | None
    latency_p95: float | None
    latency_p99: float | None

    @property
    def throughput(self) -> float:
        """Results per second since the dispatch started."""
        return self.completed / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def counts(self) -> Mapping[Outcome, int]:
        """Results per outcome."""
        return {outcome: getattr(self, outcome) for outcome in OUTCOMES}

    def __str__(self) -> str:
        """One line for people (``print(results.stats)``); the repr keeps every field.

        ``1,000 results in 108 ms (9,227/s): 990 queued, 8 invalid, 2 ambiguous;
        1,012 requests (12 retries, 8 rate-limited); latency p50 12.3 ms, p95 40 ms,
        p99 85.1 ms``. Outcomes that did not occur are left out.
        """
        outcomes = ", ".join(f"{n:,} {outcome}" for outcome, n in self.counts.items() if n)
        head = f"{self.completed:,} results in {_seconds(self.elapsed)}"
        if self.elapsed > 0:
            head += f" ({self.throughput:,.0f}/s)"
        parts = [f"{head}: {outcomes or 'none yet'}"]
        if self.taken != self.completed or self.in_flight:
            parts.append(f"{self.taken - self.completed:,} pending, {self.in_flight} in flight")
        requests = f"{self.requests:,} requests ({self.retries:,} retries"
        requests += f", {self.rate_limited:,} rate-limited)" if self.rate_limited else ")"
        if self.rate is not None:
            requests += f", paced at {self.rate:g}/s"
        parts.append(requests)
        if self.latency_p50 is not None:
            parts.append(
                f"latency p50 {_seconds(self.latency_p50)}, p95 {_seconds(self.latency_p95)}, "
                f"p99 {_seconds(self.latency_p99)}"
            )
        return "; ".join(parts)


def _seconds(value: float | None) -> str:
    """``0.0123`` -> ``12 ms``, ``2.5`` -> ``2.50 s``: short, for one line."""
    if value is None:
        return "-"
    if value < 1.0:
        return f"{value * 1000:.3g} ms"
    return f"{value:.2f} s" if value < 100 else f"{value:,.0f} s"


class StatsRecorder:
    """The live, mutable counters behind :class:`DispatchStats` (one per dispatch).

    Kept deliberately plain (slots, integer fields) because the dispatcher
    touches it once per request on its hot path.
    """

    __slots__ = (
        "clock",
        "counts",
        "finished_at",
        "in_flight",
        "latency",
        "rate_limited",
        "requests",
        "retries",
        "started_at",
        "taken",
    )

    def __init__(self, clock: Callable[[], float]) -> None:
        #: Where time comes from (the dispatcher sets the loop's clock on start).
        self.clock = clock
        self.counts: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
        self.taken = 0
        self.in_flight = 0
        self.requests = 0
        self.retries = 0
        self.rate_limited = 0
        self.latency = LatencyHistogram()
        self.started_at: float | None = None
        self.finished_at: float | None = None

    def start(self) -> None:
        if self.started_at is None:
            self.started_at = self.clock()

    def finish(self) -> None:
        if self.finished_at is None:
            self.finished_at = self.clock()

    def snapshot(self, rate: float | None) -> DispatchStats:
        counts = self.counts
        started = self.started_at
        if started is None:
            elapsed = 0.0
        else:
            end = self.finished_at if self.finished_at is not None else self.clock()
            elapsed = max(0.0, end - started)
        latency = self.latency
        return DispatchStats(
            taken=self.taken,
            completed=sum(counts.values()),
            queued=counts["queued"],
            scheduled=counts["scheduled"],
            invalid=counts["invalid"],
            failed=counts["failed"],
            ambiguous=counts["ambiguous"],
            not_sent=counts["not_sent"],
            in_flight=self.in_flight,
            requests=self.requests,
            retries=self.retries,
            rate_limited=self.rate_limited,
            rate=rate,
            elapsed=elapsed,
            latency_p50=latency.quantile(0.50),
            latency_p95=latency.quantile(0.95),
            latency_p99=latency.quantile(0.99),
        )
