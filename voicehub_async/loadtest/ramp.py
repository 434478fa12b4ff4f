"""Ramps: how many calls per second a load test places, at each moment.

A ramp is a list of ``(time, rate)`` points, linear between them; it is
written ``0:1/s,60:10/s,120:10/s`` on the command line (times in seconds, or
with a unit: ``90s``, ``2m``, ``1h``; rates per second, minute or hour:
``10/s``, ``30/m``, ``600/h``; a bare number is per second). Two points at the
same time make a step. The ramp ends at its last point.

The send times come from integrating the rate: call *k* (counting from 0) is
sent when the area under the rate curve reaches *k* + 1/2. That spreads calls evenly
inside every segment, makes the number of calls the ramp asks for exact and
known in advance (:attr:`Ramp.total_calls`), and needs no timer or random
draw. :meth:`Ramp.send_times` yields them lazily, so a ramp of a million calls
costs no memory.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterator, Sequence
from typing import Final

import attrs

from .._time import format_duration

__all__ = ["Ramp", "RampPoint", "format_duration", "parse_duration", "parse_rate"]

_DURATION_UNITS: Final = {"": 1.0, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_RATE_UNITS: Final = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_DURATION_RE: Final = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*(s|m|min|h)?\s*", re.IGNORECASE)
_RATE_RE: Final = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*(?:/\s*(s|sec|m|min|h))?\s*", re.IGNORECASE)
#: Guard against a float inversion landing a hair past a segment's end.
_EPSILON: Final = 1e-9


def parse_duration(text: str) -> float:
    """Seconds from ``"90"``, ``"90s"``, ``"2m"``, ``"1.5h"``; raises ValueError."""
    match = _DURATION_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (write seconds, or e.g. 90s, 2m, 1h)")
    return float(match.group(1)) * _DURATION_UNITS[(match.group(2) or "").lower()]


def parse_rate(text: str) -> float:
    """Calls per second from ``"10/s"``, ``"30/m"``, ``"600/h"`` or ``"2.5"``; raises ValueError."""
    match = _RATE_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"not a rate: {text!r} (write e.g. 10/s, 30/m, 600/h)")
    return float(match.group(1)) / _RATE_UNITS[(match.group(2) or "s").lower()]


def _format_rate(rate: float) -> str:
    return f"{rate:g}/s"


@attrs.frozen
class RampPoint:
    """The rate (calls per second) at ``time`` (seconds from the start)."""

    time: float
    rate: float


def _check_points(
    _inst: object, _attribute: attrs.Attribute[tuple[RampPoint, ...]], points: tuple[RampPoint, ...]
) -> None:
    if len(points) < 2:
        raise ValueError("a ramp needs at least two points (a start and an end)")
    if points[0].time != 0:
        raise ValueError(f"a ramp starts at time 0, not {points[0].time:g}")
    for index, point in enumerate(points):
        if not (math.isfinite(point.time) and math.isfinite(point.rate)):
            raise ValueError(f"ramp point {index + 1}: time and rate must be finite numbers")
        if point.rate < 0:
            raise ValueError(f"ramp point {index + 1}: a rate cannot be negative")
        if index and point.time < points[index - 1].time:
            raise ValueError(
                f"ramp point {index + 1}: times must not go backwards "
                f"({point.time:g}s after {points[index - 1].time:g}s)"
            )
    if points[-1].time <= 0:
        raise ValueError("a ramp must last longer than 0 seconds")


def _to_points(value: Sequence[RampPoint | tuple[float, float]]) -> tuple[RampPoint, ...]:
    return tuple(
        p if isinstance(p, RampPoint) else RampPoint(float(p[0]), float(p[1])) for p in value
    )


@attrs.frozen
class Ramp:
    """A piecewise-linear rate over time; see the module documentation.

    Build one with :meth:`parse`, :meth:`constant` or from points:
    ``Ramp([(0, 1), (60, 10), (120, 10)])``.
    """

    points: tuple[RampPoint, ...] = attrs.field(converter=_to_points, validator=_check_points)

    @classmethod
    def parse(cls, text: str) -> Ramp:
        """A ramp from ``"0:1/s,60:10/s,120:10/s"``; raises ValueError naming the bad part."""
        points: list[RampPoint] = []
        parts = [part for part in text.split(",") if part.strip()]
        if not parts:
            raise ValueError("an empty ramp: write time:rate pairs, e.g. 0:1/s,60:10/s")
        for index, part in enumerate(parts, 1):
            when, sep, rate = part.partition(":")
            if not sep:
                raise ValueError(
                    f"ramp point {index} ({part.strip()!r}): write time:rate, e.g. 60:10/s"
                )
            try:
                points.append(RampPoint(parse_duration(when), parse_rate(rate)))
            except ValueError as exc:
                raise ValueError(f"ramp point {index} ({part.strip()!r}): {exc}") from None
        return cls(points)

    @classmethod
    def constant(cls, rate: float, duration: float) -> Ramp:
        """``rate`` calls per second for ``duration`` seconds."""
        return cls([(0.0, rate), (duration, rate)])

    def __str__(self) -> str:
        return ",".join(f"{p.time:g}:{_format_rate(p.rate)}" for p in self.points)

    @property
    def duration(self) -> float:
        """Seconds from the start to the last point."""
        return self.points[-1].time

    @property
    def peak_rate(self) -> float:
        """The highest rate on the ramp, calls per second."""
        return max(p.rate for p in self.points)

    def rate_at(self, t: float) -> float:
        """The rate at ``t`` seconds (0 outside the ramp; at a step, the later value)."""
        points = self.points
        if t < 0 or t > self.duration:
            return 0.0
        for left, right in itertools.pairwise(points):
            if left.time <= t < right.time:
                fraction = (t - left.time) / (right.time - left.time)
                return left.rate + (right.rate - left.rate) * fraction
        return points[-1].rate

    def calls_by(self, t: float) -> float:
        """The area under the rate up to ``t``: how many calls are due by then."""
        total = 0.0
        for left, right in itertools.pairwise(self.points):
            if t <= left.time:
                break
            end = min(t, right.time)
            span = end - left.time
            if span <= 0:
                continue
            end_rate = self.rate_at(end) if end < right.time else right.rate
            total += (left.rate + end_rate) / 2.0 * span
        return total

    @property
    def total_calls(self) -> int:
        """How many calls the ramp places (the area under the rate, rounded)."""
        return sum(1 for _ in self.send_times())

    def send_times(self) -> Iterator[float]:
        """The times (seconds from the start) at which calls are due, in order.

        Call *k* (from 0) is due when :meth:`calls_by` reaches *k* + 0.5: each
        call stands for the unit of area centred on it, so a constant 1/s for
        10 s sends at 0.5, 1.5, ... 9.5, and a ramp starting at rate 0 does not
        send a call at the very start.
        """
        k = 0
        done = 0.0  # area before the current segment
        for left, right in itertools.pairwise(self.points):
            span = right.time - left.time
            if span <= 0:
                continue
            slope = (right.rate - left.rate) / span
            area = (left.rate + right.rate) / 2.0 * span
            while k + 0.5 <= done + area + _EPSILON:
                offset = min(_time_for_area(k + 0.5 - done, left.rate, slope), span)
                yield left.time + offset
                k += 1
            done += area


def _time_for_area(target: float, rate: float, slope: float) -> float:
    """``s`` such that ``rate*s + slope*s**2/2 == target`` (the smallest root >= 0).

    Written as ``2*target / (rate + sqrt(rate**2 + 2*slope*target))``, which
    does not lose precision when the slope is tiny and is exact when it is 0.
    """
    if target <= 0:
        return 0.0
    disc = rate * rate + 2.0 * slope * target
    denominator = rate + math.sqrt(max(disc, 0.0))
    if denominator <= 0:
        return math.inf
    return 2.0 * target / denominator
