"""What a load test measured, over time: counters, percentiles and a timeline.

:class:`LoadMetrics` is fed events by the runner as they happen (a call was
due, sent, placed, seen started, ended, ...) with their time on the run's
clock, and sorts them into fixed-width time buckets. :meth:`LoadMetrics.result`
turns that into a :class:`LoadTestResult`: frozen values that the console
summary, the JSON file and the HTML charts are all made from, so the three
can never disagree.

Times are seconds on the *run's* clock, which is the ramp's clock: with the
simulator's time scale at 20, a call that lasted 40 simulated seconds is
reported as 40 s, not 2 s. The one exception is the trigger's HTTP latency,
which is the client's and the network's real time and is reported in real
milliseconds.

Latencies and durations are bucketed by the time the call was *sent*, so a
chart reads "calls sent at this moment of the ramp waited this long", which is
what a load test wants to relate to the rate. They are kept in the SDK's
fixed-size log histograms (:class:`~voicehub_async.stats.LatencyHistogram`),
so memory grows with the run's length, never with its number of calls;
percentiles are within about 2.5% of the exact value.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import attrs

from ..models import CallStatus
from ..stats import LatencyHistogram

if TYPE_CHECKING:
    from .thresholds import Verdict

__all__ = [
    "ANSWERED_STATUSES",
    "IntervalPoint",
    "LoadMetrics",
    "LoadTestResult",
    "Percentiles",
    "RunInfo",
    "TimelinePoint",
    "chart_interval",
    "nice_bucket",
    "percentile",
]

#: Statuses that mean somebody talked: the call was answered
#: (:attr:`CallStatus.is_answered <voicehub_async.models.CallStatus.is_answered>`).
ANSWERED_STATUSES: Final = frozenset(
    status.name for status in CallStatus.documented() if status.is_answered
)
_NICE_STEPS: Final = (1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1800, 3600)


def nice_bucket(duration: float, buckets: int = 60) -> float:
    """A round bucket width giving about ``buckets`` buckets over ``duration``."""
    wanted = duration / max(1, buckets)
    for step in _NICE_STEPS:
        if step >= wanted:
            return float(step)
    return float(math.ceil(wanted / 3600) * 3600)


def percentile(ordered: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) of sorted ``ordered``, linearly
    interpolated between closest ranks (numpy's default); None when empty."""
    if not ordered:
        return None
    if len(ordered) == 1:
        return float(ordered[0])
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    fraction = position - low
    return float(ordered[low] + (ordered[high] - ordered[low]) * fraction)


@attrs.frozen
class Percentiles:
    """A distribution in brief: how many samples, p50/p95/p99, mean and max
    (None without samples)."""

    count: int
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    mean: float | None = None
    max: float | None = None

    @classmethod
    def of(cls, samples: Iterable[float]) -> Percentiles:
        ordered = sorted(samples)
        if not ordered:
            return cls(0)
        return cls(
            len(ordered),
            percentile(ordered, 50),
            percentile(ordered, 95),
            percentile(ordered, 99),
            math.fsum(ordered) / len(ordered),
            ordered[-1],
        )

    @classmethod
    def of_distribution(cls, dist: _Distribution, scale: float = 1.0) -> Percentiles:
        """From a histogram, every value multiplied by ``scale`` (1000: s to ms)."""
        hist = dist.histogram
        if hist.count == 0:
            return cls(0)

        def q(value: float) -> float | None:
            found = hist.quantile(value)
            return None if found is None else found * scale

        return cls(
            hist.count, q(0.50), q(0.95), q(0.99), dist.total / hist.count * scale,
            hist.max * scale,
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


class _Distribution:
    """A histogram of durations plus their sum (for the mean)."""

    __slots__ = ("histogram", "total")

    def __init__(self) -> None:
        # 0.1 ms to a day: a trigger's latency up to a very long call.
        self.histogram = LatencyHistogram(low=1e-4, high=86_400.0)
        self.total = 0.0

    def add(self, value: float) -> None:
        value = max(0.0, value)
        self.histogram.add(value)
        self.total += value

    def merge(self, other: _Distribution) -> None:
        self.histogram.merge(other.histogram)
        self.total += other.total


@attrs.frozen
class TimelinePoint:
    """One time bucket ``[t, t + width)`` of the run.

    Counts are events in the bucket; ``live`` is the number of live calls at
    the bucket's end and ``live_max`` the most at any moment in it.
    ``target_rate``/``sent_rate`` are calls per second; the percentiles are
    for calls *sent* in this bucket.
    """

    t: float
    due: int
    dropped: int
    sent: int
    placed: int
    not_placed: int
    answered: int
    ended: int
    completed: int
    failed: int
    live: int
    live_max: int
    target_rate: float
    sent_rate: float
    time_to_started: Percentiles
    duration: Percentiles
    trigger_latency_ms: Percentiles

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.frozen
class IntervalPoint:
    """Percentiles of the calls *sent* in ``[t, t + width)``, an interval
    several timeline buckets wide (see :func:`chart_interval`)."""

    t: float
    time_to_started: Percentiles
    duration: Percentiles
    trigger_latency_ms: Percentiles

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


#: About this many intervals over a run in the percentile charts.
_CHART_INTERVALS: Final = 15
#: An interval spans at least this many poll intervals, so that where each
#: call fell in the polling cycle averages out instead of drawing a saw-tooth.
_POLLS_PER_INTERVAL: Final = 5


def chart_interval(span: float, bucket: float, poll_interval: float) -> float:
    """The width of the percentile charts' intervals: a round multiple of
    ``bucket`` giving about 15 intervals over ``span`` seconds, and never
    shorter than five poll intervals."""
    wanted = max(span / _CHART_INTERVALS, _POLLS_PER_INTERVAL * poll_interval, bucket)
    for step in _NICE_STEPS:
        if step >= wanted and math.isclose(step / bucket, round(step / bucket)):
            return float(step)
    return bucket * math.ceil(wanted / bucket)


@attrs.frozen
class RunInfo:
    """How the run was set up, as shown at the top of a report."""

    agent_id: str
    numbers: int
    ramp: str
    ramp_seconds: float
    max_live: int
    poll_interval: float = 2.0
    time_scale: float = 1.0
    simulated: bool = False
    webhooks: bool = False
    started_at: str = ""
    wall_seconds: float = 0.0
    #: Ramp seconds at which the run stopped placing calls early (Ctrl-C,
    #: :meth:`~.runner.LoadTest.stop`); None when the ramp ran to its end.
    stopped_at: float | None = None
    #: The threshold that stopped the ramp (``abort_on_fail``), as written.
    aborted_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.frozen
class LoadTestResult:
    """Everything a load test measured; see the module documentation.

    How the counts fit together (and the report's JSON test checks it):
    ``due == sent + dropped``; ``sent == placed + sum(not_placed.values())``;
    ``placed == sum(final_statuses.values()) + unfinished``. ``final_statuses``
    holds terminal statuses plus the poller's ``lost`` and ``timed_out``;
    ``not_placed`` holds trigger failures by kind, ``ambiguous`` among them
    (those calls may exist, but have no id to follow). ``send_lag`` is how
    late triggers went out compared with the ramp (run seconds): if it grows,
    the machine running the test was the bottleneck, not the service.
    ``ended_unanswered`` counts placed calls that ended without ever being
    seen talking. ``verdicts`` are the run's thresholds and how it fared
    (:mod:`.thresholds`; the JSON calls them ``thresholds``); ``intervals``
    are the percentiles again over wider intervals of ``interval_seconds``,
    each holding enough calls and poll rounds for the charts to read.
    """

    info: RunInfo
    bucket_seconds: float
    due: int
    dropped: int
    sent: int
    placed: int
    not_placed: Mapping[str, int]
    answered: int
    started: int
    completed: int
    final_statuses: Mapping[str, int]
    unfinished: int
    peak_live: int
    time_to_started: Percentiles
    duration: Percentiles
    trigger_latency_ms: Percentiles
    send_lag: Percentiles
    timeline: tuple[TimelinePoint, ...]
    ended_unanswered: int = 0
    interval_seconds: float = 0.0
    intervals: tuple[IntervalPoint, ...] = ()
    verdicts: tuple[Verdict, ...] = ()

    @property
    def failed(self) -> int:
        """Placed calls that ended other than ``completed``."""
        return sum(n for status, n in self.final_statuses.items() if status != "completed")

    @property
    def thresholds_passed(self) -> bool:
        """True when every threshold held (and when there were none)."""
        return all(verdict.passed for verdict in self.verdicts)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (the report's ``.json``)."""
        data = attrs.asdict(self, recurse=True, filter=lambda a, _v: a.name != "verdicts")
        data["failed"] = self.failed
        data["not_placed"] = dict(self.not_placed)
        data["final_statuses"] = dict(self.final_statuses)
        data["timeline"] = [point.to_dict() for point in self.timeline]
        data["intervals"] = [point.to_dict() for point in self.intervals]
        data["thresholds"] = [verdict.to_dict() for verdict in self.verdicts]
        return data


@attrs.define
class _Bucket:
    due: int = 0
    dropped: int = 0
    sent: int = 0
    placed: int = 0
    not_placed: int = 0
    answered: int = 0
    ended: int = 0
    completed: int = 0
    failed: int = 0
    live_delta: int = 0
    live_max: int = 0
    to_started: _Distribution = attrs.Factory(_Distribution)
    durations: _Distribution = attrs.Factory(_Distribution)
    latencies: _Distribution = attrs.Factory(_Distribution)


class LoadMetrics:
    """Collects a load test's events into buckets of ``bucket`` seconds.

    Every method takes ``t``, the event's time on the run's clock (seconds
    since the ramp started). Calls are identified by the time they were sent
    (``sent_at``), which is all the bucketing needs; the runner keeps the
    per-call state. One instance per run: there is no reset.
    """

    def __init__(self, bucket: float) -> None:
        if not bucket > 0:
            raise ValueError("the bucket width must be positive")
        self.bucket = float(bucket)
        self._buckets: list[_Bucket] = []
        self.live = 0
        self.peak_live = 0
        self.due = 0
        self.dropped = 0
        self.sent = 0
        self.placed = 0
        self.answered = 0
        self.started = 0
        self.ended_unanswered = 0
        self.not_placed: Counter[str] = Counter()
        self.final_statuses: Counter[str] = Counter()
        self._to_started = _Distribution()
        self._durations = _Distribution()
        self._latencies = _Distribution()
        self._send_lag = _Distribution()

    def _at(self, t: float) -> _Bucket:
        index = max(0, int(t // self.bucket))
        buckets = self._buckets
        while len(buckets) <= index:
            buckets.append(_Bucket())
        return buckets[index]

    def _live_changed(self, t: float, delta: int) -> None:
        self.live += delta
        bucket = self._at(t)
        bucket.live_delta += delta
        if self.live > bucket.live_max:
            bucket.live_max = self.live
        if self.live > self.peak_live:
            self.peak_live = self.live

    # -- events ---------------------------------------------------------------------

    def record_due(self, t: float) -> None:
        """The ramp asked for a call at ``t``."""
        self.due += 1
        self._at(t).due += 1

    def record_dropped(self, t: float) -> None:
        """A due call was skipped because ``--max-live`` calls were live."""
        self.dropped += 1
        self._at(t).dropped += 1

    def record_sent(self, t: float, lag: float = 0.0) -> None:
        """A trigger went out, ``lag`` seconds after the ramp wanted it: the
        call counts as live from now on. A growing lag means the machine
        running the test, not the service, is the bottleneck."""
        self._send_lag.add(lag)
        self.sent += 1
        self._at(t).sent += 1
        self._live_changed(t, +1)

    def record_placed(self, t: float, sent_at: float, latency: float) -> None:
        """The service accepted the trigger sent at ``sent_at``; the request
        took ``latency`` real seconds."""
        self.placed += 1
        self._at(t).placed += 1
        self._at(sent_at).latencies.add(latency)
        self._latencies.add(latency)

    def record_not_placed(self, t: float, kind: str) -> None:
        """The trigger failed (``kind``: ``ambiguous``, ``rate_limited``, ...)."""
        self.not_placed[kind] += 1
        self._at(t).not_placed += 1
        self._live_changed(t, -1)

    def record_started(self, sent_at: float, delay: float) -> None:
        """The call sent at ``sent_at`` was first seen started ``delay`` s later."""
        self.started += 1
        self._at(sent_at).to_started.add(delay)
        self._to_started.add(delay)

    def record_answered(self, t: float) -> None:
        """The call was first seen talking (``in-progress`` or ``completed``)."""
        self.answered += 1
        self._at(t).answered += 1

    def record_ended(
        self,
        t: float,
        status: str,
        sent_at: float,
        duration: float | None,
        *,
        answered: bool | None = None,
    ) -> None:
        """The call reached its final ``status``; ``duration`` (recorded for
        completed calls) is from started to the end, None when unknown.
        ``answered``: whether it was ever seen talking (None: only if it
        completed)."""
        self.final_statuses[status] += 1
        if not (status in ANSWERED_STATUSES if answered is None else answered):
            self.ended_unanswered += 1
        bucket = self._at(t)
        bucket.ended += 1
        if status == "completed":
            bucket.completed += 1
        else:
            bucket.failed += 1
        if duration is not None:
            self._at(sent_at).durations.add(duration)
            self._durations.add(duration)
        self._live_changed(t, -1)

    # -- the result -----------------------------------------------------------------------

    def result(
        self, info: RunInfo, until: float | None = None, *, timeline: bool = True
    ) -> LoadTestResult:
        """The figures so far, with a timeline from 0 to ``until`` seconds
        (default: the last event). ``timeline=False`` leaves the timeline and
        the intervals out: the totals alone, cheap enough to take mid-run."""
        if until is not None:
            self._at(max(0.0, until - 1e-9))
        width = self.bucket
        points: list[TimelinePoint] = []
        live = 0
        for index, b in enumerate(self._buckets if timeline else ()):
            # The level at the end from the deltas (right whatever the order
            # events came in); the peak as observed while they came.
            live += b.live_delta
            points.append(
                TimelinePoint(
                    t=index * width,
                    due=b.due,
                    dropped=b.dropped,
                    sent=b.sent,
                    placed=b.placed,
                    not_placed=b.not_placed,
                    answered=b.answered,
                    ended=b.ended,
                    completed=b.completed,
                    failed=b.failed,
                    live=live,
                    live_max=max(b.live_max, live),
                    target_rate=b.due / width,
                    sent_rate=b.sent / width,
                    time_to_started=Percentiles.of_distribution(b.to_started),
                    duration=Percentiles.of_distribution(b.durations),
                    trigger_latency_ms=Percentiles.of_distribution(b.latencies, 1000.0),
                )
            )
        span = len(self._buckets) * width
        interval = chart_interval(span, width, info.poll_interval)
        return LoadTestResult(
            info=info,
            bucket_seconds=width,
            due=self.due,
            dropped=self.dropped,
            sent=self.sent,
            placed=self.placed,
            not_placed=dict(sorted(self.not_placed.items())),
            answered=self.answered,
            started=self.started,
            completed=self.final_statuses.get("completed", 0),
            final_statuses=dict(sorted(self.final_statuses.items())),
            unfinished=self.placed - sum(self.final_statuses.values()),
            peak_live=self.peak_live,
            time_to_started=Percentiles.of_distribution(self._to_started),
            duration=Percentiles.of_distribution(self._durations),
            trigger_latency_ms=Percentiles.of_distribution(self._latencies, 1000.0),
            send_lag=Percentiles.of_distribution(self._send_lag),
            timeline=tuple(points),
            ended_unanswered=self.ended_unanswered,
            interval_seconds=interval,
            intervals=self._intervals(interval) if timeline else (),
        )

    def _intervals(self, width: float) -> tuple[IntervalPoint, ...]:
        """The buckets merged ``width / bucket`` at a time."""
        per = max(1, round(width / self.bucket))
        intervals: list[IntervalPoint] = []
        for first in range(0, len(self._buckets), per):
            to_started, durations, latencies = _Distribution(), _Distribution(), _Distribution()
            for b in self._buckets[first : first + per]:
                to_started.merge(b.to_started)
                durations.merge(b.durations)
                latencies.merge(b.latencies)
            intervals.append(
                IntervalPoint(
                    t=first * self.bucket,
                    time_to_started=Percentiles.of_distribution(to_started),
                    duration=Percentiles.of_distribution(durations),
                    trigger_latency_ms=Percentiles.of_distribution(latencies, 1000.0),
                )
            )
        return tuple(intervals)
