"""DispatchStats for people (``print(results.stats)``) and histogram merging."""

from __future__ import annotations

import random

import attrs
import pytest

from voicehub_async.stats import DispatchStats, LatencyHistogram


def _stats(**overrides: object) -> DispatchStats:
    fields: dict[str, object] = {
        "taken": 1000, "completed": 1000, "queued": 990, "scheduled": 0, "invalid": 8,
        "failed": 0, "ambiguous": 2, "not_sent": 0, "in_flight": 0, "requests": 1012,
        "retries": 12, "rate_limited": 8, "rate": None, "elapsed": 0.10838112600004024,
        "latency_p50": 0.0123, "latency_p95": 0.04, "latency_p99": 0.0851,
    }  # fmt: skip
    fields.update(overrides)
    return DispatchStats(**fields)  # type: ignore[arg-type]


def test_str_reads_as_a_sentence_and_repr_keeps_every_field() -> None:
    stats = _stats()
    assert str(stats) == (
        "1,000 results in 108 ms (9,227/s): 990 queued, 8 invalid, 2 ambiguous; "
        "1,012 requests (12 retries, 8 rate-limited); latency p50 12.3 ms, p95 40 ms, "
        "p99 85.1 ms"
    )
    assert "elapsed=0.10838112600004024" in repr(stats)
    assert repr(stats).startswith("DispatchStats(taken=1000, completed=1000")


def test_str_while_running_and_before_anything() -> None:
    running = _stats(completed=600, queued=600, invalid=0, ambiguous=0, in_flight=40,
                     rate=50.0, elapsed=12.0, rate_limited=0)  # fmt: skip
    text = str(running)
    assert text.startswith("600 results in 12.00 s (50/s): 600 queued; ")
    assert "400 pending, 40 in flight" in text
    assert "1,012 requests (12 retries), paced at 50/s" in text
    empty = attrs.evolve(
        _stats(), taken=0, completed=0, queued=0, invalid=0, ambiguous=0, requests=0,
        retries=0, rate_limited=0, elapsed=0.0, latency_p50=None, latency_p95=None,
        latency_p99=None,
    )  # fmt: skip
    assert str(empty) == "0 results in 0 ms: none yet; 0 requests (0 retries)"


def test_merged_histograms_give_the_quantiles_of_all_their_durations() -> None:
    rng = random.Random(7)
    values = [rng.lognormvariate(0, 1) for _ in range(2000)]
    whole, left, right = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    for i, value in enumerate(values):
        whole.add(value)
        (left if i % 3 else right).add(value)
    left.merge(right)
    left.merge(LatencyHistogram())  # an empty one changes nothing
    assert left.count == whole.count == 2000
    assert (left.min, left.max) == (whole.min, whole.max)
    for q in (0.5, 0.95, 0.99):
        assert left.quantile(q) == whole.quantile(q)
    with pytest.raises(ValueError, match="same buckets"):
        left.merge(LatencyHistogram(high=10.0))
