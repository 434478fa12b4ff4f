"""Pass/fail criteria for a load test, as k6 has them: ``time_to_started.p95<5s``.

A :class:`Threshold` is parsed once, from text, into a small frozen value
(metric, operator, limit in the metric's own unit); :meth:`Threshold.check`
turns a :class:`~.metrics.LoadTestResult` into a :class:`Verdict`. Parsing
refuses what k6 users lost runs to: a misspelled metric (which k6 once let
pass silently) is an error naming the closest metric, and so is a limit in the
wrong unit, so a bad threshold is found before any call is placed.

The metrics are the report's, by the names its JSON uses:

* **counts**: ``due``, ``dropped``, ``sent``, ``placed``, ``not_placed``,
  ``ambiguous``, ``answered``, ``started``, ``completed``, ``failed``,
  ``unfinished``, ``peak_live``, plus ``not_placed.<kind>`` (``rate_limited``,
  ``http_500``, ...) and ``ended.<status>`` (``busy``, ``timed_out``, ...).
  Limits are plain numbers.
* **rates** (fractions of calls): ``answered_rate``, ``completed_rate``,
  ``failed_rate`` (of calls placed), ``dropped_rate`` (of calls due),
  ``not_placed_rate``, ``ambiguous_rate`` (of triggers sent). Limits are
  ``0.9`` or ``90%``.
* **times**: ``time_to_started``, ``duration``, ``trigger_latency``,
  ``send_lag``, each with ``.p50``, ``.p95``, ``.p99``, ``.mean``, ``.max``
  (a time: write its unit, ``800ms``, ``5s``, ``2m``) or ``.count``. k6's
  spellings ``p(95)``, ``avg`` and ``med`` are understood.

A threshold on a metric with no data (a p95 of no calls, a rate of nothing
placed) fails: a CI gate must not pass because nothing was measured.

:meth:`Threshold.cannot_recover` answers ``--abort-on-fail``'s question
mid-run: given the figures so far and the calls the ramp will still place at
most, can the final value still satisfy the threshold? Counts only grow, and
a rate's final value is bracketed by what is already settled, so
``ambiguous==0`` is lost at the first ambiguous trigger and
``dropped_rate<1%`` once 1% of the whole ramp was dropped; a percentile can
always recover, so it never aborts a run early.
"""

from __future__ import annotations

import difflib
import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, Literal

import attrs

from ..models import CallStatus
from ..poller import LOST, TIMED_OUT

if TYPE_CHECKING:
    from .metrics import LoadTestResult, Percentiles

__all__ = [
    "MAX_NOT_PLACED_SHARE",
    "METRIC_NAMES",
    "Threshold",
    "Verdict",
    "check_all",
    "run_problem",
]

Kind = Literal["count", "rate", "time"]

#: More than this share of triggers not placed makes a run fail on its own
#: (exit status 1), thresholds or not: it measured the failures, not the agent.
MAX_NOT_PLACED_SHARE: Final = 0.5

_OPERATORS: Final[Mapping[str, Callable[[float, float], bool]]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
_EXPRESSION: Final = re.compile(
    r"\s*(?P<metric>[A-Za-z_][\w.()\-]*?)\s*(?P<op><=|>=|==|!=|<|>)\s*(?P<limit>.*?)\s*"
)
_NUMBER: Final = re.compile(r"([+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)\s*(.*)")
_TIME_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_AGGREGATES: Final = ("p50", "p95", "p99", "mean", "max", "count")
_AGGREGATE_ALIASES: Final = {"avg": "mean", "med": "p50", "p(50)": "p50", "p(95)": "p95",
                             "p(99)": "p99"}  # fmt: skip
_DISTRIBUTIONS: Final = ("time_to_started", "duration", "trigger_latency", "send_lag")
_COUNTS: Final = (
    "due", "dropped", "sent", "placed", "not_placed", "ambiguous", "answered", "started",
    "completed", "failed", "unfinished", "peak_live",
)  # fmt: skip
#: rate -> (numerator, denominator): both counts above.
_RATES: Final = {
    "answered_rate": ("answered", "placed"),
    "completed_rate": ("completed", "placed"),
    "failed_rate": ("failed", "placed"),
    "dropped_rate": ("dropped", "due"),
    "not_placed_rate": ("not_placed", "sent"),
    "ambiguous_rate": ("ambiguous", "sent"),
}
#: What a followed call can end as: the API's final statuses and the poller's own two.
_FINAL_STATUSES: Final = (
    *(status.name for status in CallStatus.documented() if status.is_terminal),
    LOST.name,
    TIMED_OUT.name,
)
_NOT_PLACED_KIND: Final = re.compile(r"ambiguous|rate_limited|connection_failed|error|http_\d{3}")

#: Every name a threshold can use (``not_placed.<kind>`` stands for its family).
METRIC_NAMES: Final[tuple[str, ...]] = (
    *_COUNTS,
    *_RATES,
    *(f"{d}.{a}" for d in _DISTRIBUTIONS for a in _AGGREGATES),
    *(f"ended.{s}" for s in _FINAL_STATUSES),
    "not_placed.<kind>",
)


def _count(result: LoadTestResult, name: str) -> int:
    if name == "not_placed":
        return sum(result.not_placed.values())
    if name == "ambiguous":
        return result.not_placed.get("ambiguous", 0)
    value: int = getattr(result, name)
    return value


def _distribution(result: LoadTestResult, name: str) -> Percentiles:
    dist: Percentiles = getattr(result, "trigger_latency_ms" if name == "trigger_latency" else name)
    return dist


def _settled_complement(result: LoadTestResult, rate: str) -> int:
    """Of a rate's denominator, how many are settled *outside* its numerator:
    they can never join it, whatever the rest of the run does."""
    if rate == "answered_rate":
        return result.ended_unanswered
    if rate == "completed_rate":
        return result.failed
    if rate == "failed_rate":
        return result.completed
    if rate == "dropped_rate":
        return result.sent
    if rate == "not_placed_rate":
        return result.placed
    # ambiguous_rate: triggers answered one way or another, less the ambiguous ones.
    return result.placed + sum(result.not_placed.values()) - _count(result, "ambiguous")


@attrs.frozen
class _Metric:
    """Where one threshold metric comes from, and what unit its limit is in."""

    name: str
    kind: Kind
    #: Never decreases during a run (counts, a maximum): a passed upper
    #: bound cannot come back.
    grows: bool

    def value(self, result: LoadTestResult) -> float | None:
        base, _, part = self.name.partition(".")
        if base in _RATES:
            numerator, denominator = _RATES[base]
            total = _count(result, denominator)
            return _count(result, numerator) / total if total else None
        if base in _DISTRIBUTIONS:
            dist = _distribution(result, base)
            if part == "count":
                return float(dist.count)
            found: float | None = getattr(dist, part)
            if found is not None and base == "trigger_latency":
                found /= 1000.0  # the report keeps milliseconds; limits are seconds
            return found
        if base == "ended":
            return float(result.final_statuses.get(part, 0))
        if base == "not_placed" and part:
            return float(result.not_placed.get(part, 0))
        return float(_count(result, base))

    def reachable(self, result: LoadTestResult, calls: int) -> tuple[float, float]:
        """The interval the final value must end in, given the figures so far
        and at most ``calls`` calls due in the whole run."""
        base = self.name.partition(".")[0]
        if base in _RATES and calls > 0:
            numerator = _count(result, _RATES[base][0])
            return numerator / calls, 1.0 - _settled_complement(result, base) / calls
        if self.grows:
            now = self.value(result)
            return (-math.inf if now is None else now), math.inf
        return -math.inf, math.inf


def _metric(name: str) -> _Metric:
    """The metric called ``name`` (aliases resolved), or ValueError with a suggestion."""
    base, dot, part = name.partition(".")
    part = _AGGREGATE_ALIASES.get(part, part)
    if base in _DISTRIBUTIONS:
        if part in _AGGREGATES:
            kind: Kind = "count" if part == "count" else "time"
            return _Metric(f"{base}.{part}", kind, grows=part in ("max", "count"))
        raise ValueError(
            f"{name!r} needs one of .{', .'.join(_AGGREGATES)} after {base!r} (e.g. {base}.p95)"
        )
    if base == "ended" and part in _FINAL_STATUSES:
        return _Metric(f"ended.{part}", "count", grows=True)
    if base == "not_placed" and dot and _NOT_PLACED_KIND.fullmatch(part):
        return _Metric(f"not_placed.{part}", "count", grows=True)
    if not dot and base in _RATES:
        return _Metric(base, "rate", grows=False)
    if not dot and base in _COUNTS:
        return _Metric(base, "count", grows=base != "unfinished")
    known = [n for n in METRIC_NAMES if "<" not in n]
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if close:
        raise ValueError(f"no metric {name!r}: did you mean {close[0]!r}?")
    raise ValueError(f"no metric {name!r}: the metrics are {_catalogue()}")


def _catalogue() -> str:
    """The metric names in brief, for an error message."""
    return (
        f"{', '.join(_COUNTS)}; {', '.join(_RATES)}; "
        f"{{{','.join(_DISTRIBUTIONS)}}}.{{{','.join(_AGGREGATES)}}}; "
        f"ended.<status>; not_placed.<kind>"
    )


def _limit(text: str, metric: _Metric) -> float:
    """The limit in the metric's unit (seconds, a fraction, a count)."""
    match = _NUMBER.fullmatch(text)
    if match is None or not text:
        raise ValueError(f"{text!r} is not a number")
    number, unit = float(match.group(1)), match.group(2).strip().lower()
    if not math.isfinite(number):
        raise ValueError(f"{text!r} is not a finite number")
    if metric.kind == "time":
        if unit not in _TIME_UNITS:
            raise ValueError(
                f"{metric.name} is a time: write its unit, e.g. {number:g}s or {number:g}ms"
            )
        return number * _TIME_UNITS[unit]
    if metric.kind == "rate":
        if unit not in ("", "%"):
            raise ValueError(f"{metric.name} is a fraction: write e.g. 0.9 or 90%")
        fraction = number / 100.0 if unit == "%" else number
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(
                f"{metric.name} is a fraction between 0 and 1: write e.g. 0.9 or 90%, not {text}"
            )
        return fraction
    if unit:
        raise ValueError(f"{metric.name} is a count: write a plain number, e.g. {number:g}")
    return number


@attrs.frozen
class Threshold:
    """``metric op limit``: one pass/fail criterion; see the module documentation.

    ``limit`` is in the metric's own unit: seconds for times, a fraction for
    rates, a number of calls for counts. Make one with :meth:`parse`.
    """

    expression: str
    metric: str
    op: str = attrs.field(validator=attrs.validators.in_(tuple(_OPERATORS)))
    limit: float
    #: The metric resolved once (a misspelled one raises here too).
    _source: _Metric = attrs.field(
        init=False,
        repr=False,
        eq=False,
        default=attrs.Factory(lambda self: _metric(self.metric), takes_self=True),
    )

    @classmethod
    def parse(cls, text: str) -> Threshold:
        """``"time_to_started.p95<5s"`` -> a Threshold; ValueError says what is wrong."""
        match = _EXPRESSION.fullmatch(text)
        if match is None:
            raise ValueError(
                f"{text!r} is not a threshold: write METRIC OP LIMIT, e.g. "
                "'time_to_started.p95<5s' or 'answered_rate>=90%'"
            )
        metric = _metric(match["metric"])
        limit = _limit(match["limit"], metric)
        return cls(text.strip(), metric.name, match["op"], limit)

    def holds(self, value: float | None) -> bool:
        """Whether ``value`` satisfies the threshold (no value never does)."""
        return value is not None and _OPERATORS[self.op](value, self.limit)

    def check(self, result: LoadTestResult) -> Verdict:
        """The verdict on a run's figures."""
        value = self._source.value(result)
        return Verdict(self, value, self.holds(value))

    def cannot_recover(self, result: LoadTestResult, calls: int) -> bool:
        """True when no final value the run can still reach satisfies the
        threshold (``calls``: how many calls the whole run has due at most)."""
        low, high = self._source.reachable(result, calls)
        limit, op = self.limit, self.op
        if op == "<":
            return low >= limit
        if op == "<=":
            return low > limit
        if op == ">":
            return high <= limit
        if op == ">=":
            return high < limit
        if op == "==":
            return not low <= limit <= high
        return low == high == limit  # "!="

    def format_value(self, value: float | None) -> str:
        """``value`` as the threshold's expression writes it (``4.2s``, ``93.1%``)."""
        if value is None:
            return "no data"
        kind = self._source.kind
        if kind == "time":
            return f"{value * 1000:.0f}ms" if value < 1 else f"{value:.3g}s"
        if kind == "rate":
            return f"{value * 100:.3g}%"
        return f"{value:g}"

    def __str__(self) -> str:
        return self.expression


@attrs.frozen
class Verdict:
    """A threshold and how the run fared: ``value`` is None without data."""

    threshold: Threshold
    value: float | None
    passed: bool

    @property
    def shown(self) -> str:
        """The measured value, in the threshold's unit."""
        return self.threshold.format_value(self.value)

    def to_dict(self) -> dict[str, Any]:
        t = self.threshold
        return {
            "threshold": t.expression,
            "metric": t.metric,
            "op": t.op,
            "limit": t.limit,
            "value": self.value,
            "shown": self.shown,
            "passed": self.passed,
        }


def check_all(thresholds: Iterable[Threshold], result: LoadTestResult) -> tuple[Verdict, ...]:
    """Every threshold's verdict on ``result``, in order."""
    return tuple(threshold.check(result) for threshold in thresholds)


def run_problem(result: LoadTestResult) -> str | None:
    """Why the run failed on its own (exit status 1), or None when it did not.

    A load test that placed no call, or whose triggers mostly failed (more
    than :data:`MAX_NOT_PLACED_SHARE` of those sent), tested the key, the URL
    or the service's health, not the agent; its figures must not pass for a
    measurement, whatever the thresholds say.
    """
    failed = sum(result.not_placed.values())
    kinds = ", ".join(f"{n} {kind}" for kind, n in result.not_placed.items())
    if result.sent == 0:
        return "no trigger was sent"
    if result.placed == 0:
        return f"no trigger was placed: all {result.sent} failed ({kinds})"
    if failed > MAX_NOT_PLACED_SHARE * result.sent:
        return (
            f"{failed} of {result.sent} triggers were not placed ({kinds}): more than "
            f"{MAX_NOT_PLACED_SHARE:.0%} failed"
        )
    return None
