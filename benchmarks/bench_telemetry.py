"""Benchmark: what telemetry costs, off and on, as ratios within one run.

Run ``python benchmarks/bench_telemetry.py`` (a couple of minutes) or with
``--quick``. It prints:

* the off path alone: the do-nothing calls a trigger makes when telemetry is
  off (an operation, a request record, their enters and exits), timed in a
  loop, as microseconds per trigger and as a share of the time one trigger
  takes in the dispatch measured next. Target: < 1%.
* throughput: ``client.dispatch`` of N triggers to the simulator (its own
  process, no faults) with telemetry off and on (the OpenTelemetry SDK with
  a metric reader and a span processor that drops the spans, so that the
  cost measured is the SDK's and the SDK's, not an exporter's), interleaved
  rounds. The ratio on/off is what turning it on costs.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import median, phone_number, simulator_process

from voicehub_async import CallRequest, VoiceHubClient
from voicehub_async.telemetry import NO_TELEMETRY, OpenTelemetry, Telemetry

AGENT = "agent-bench"


def requests(count: int) -> Iterator[CallRequest]:
    for i in range(count):
        yield CallRequest(to=phone_number(i), agent_id=AGENT)


def off_path_cost(count: int = 200_000) -> float:
    """Microseconds per trigger of the calls the off path makes."""
    telemetry = NO_TELEMETRY
    url = "https://voicehub.example.com/api/v1/calls/api-call"
    started = time.perf_counter()
    for _ in range(count):
        with telemetry.operation("trigger_call", trigger=True, agent_id=AGENT) as op:
            op.set_personal("+14155550123", None)
            with op.request("POST", "/api/v1/calls/api-call", url) as record:
                record.answered(200)
            op.set_outcome("placed", ambiguous=False)
            op.set_call("call-1")
    return (time.perf_counter() - started) / count * 1e6


def sdk_telemetry() -> OpenTelemetry:
    """The SDK as an application sets it up, less the exporter."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider

    return OpenTelemetry(
        tracer_provider=TracerProvider(),  # spans made, then dropped: no processor
        meter_provider=MeterProvider(metric_readers=[InMemoryMetricReader()]),
    )


async def run_dispatch(
    base_url: str, api_key: str, count: int, concurrency: int, telemetry: Telemetry
) -> float:
    async with VoiceHubClient(
        api_key, base_url=base_url, max_connections=concurrency, telemetry=telemetry
    ) as client:
        started = time.perf_counter()
        async with client.dispatch(requests(count), concurrency=concurrency) as dispatcher:
            async for _ in dispatcher:
                pass
        elapsed = time.perf_counter() - started
    if dispatcher.stats.queued != count:
        raise RuntimeError(f"dispatch: {dispatcher.stats.counts}")
    return count / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts")
    parser.add_argument("--count", type=int, help="triggers per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    count = args.count or (3_000 if args.quick else 10_000)
    on = sdk_telemetry()
    kinds: dict[str, Telemetry] = {"off": NO_TELEMETRY, "on": on}
    rates: dict[str, list[float]] = {kind: [] for kind in kinds}
    started = time.perf_counter()
    with simulator_process("--no-record-triggers") as sim:

        def run(kind: str, n: int) -> float:
            return asyncio.run(
                run_dispatch(sim.base_url, sim.api_key, n, args.concurrency, kinds[kind])
            )

        for kind in kinds:  # warm up
            run(kind, min(count, 1000))
        for number in range(args.rounds):
            order = list(kinds) if number % 2 == 0 else list(reversed(kinds))
            for kind in order:
                rates[kind].append(run(kind, count))
    off, on_rate = median(rates["off"]), median(rates["on"])
    per_trigger_us = 1e6 / off
    cost = off_path_cost()
    print(f"telemetry: {count:,} triggers per run, concurrency {args.concurrency}, "
          f"{args.rounds} interleaved rounds")  # fmt: skip
    print(
        f"  off path alone: {cost:.2f} us per trigger = {cost / per_trigger_us:.2%} of a "
        f"trigger's {per_trigger_us:.0f} us in this dispatch (target < 1%)"
    )
    print(
        f"  dispatch: off {off:7.0f}/s  on (SDK) {on_rate:7.0f}/s  ratio on/off "
        f"{on_rate / off:.3f}  (per round: "
        + ", ".join(f"{b / a:.2f}" for a, b in zip(rates["off"], rates["on"], strict=True))
        + ")"
    )
    print(f"done in {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
