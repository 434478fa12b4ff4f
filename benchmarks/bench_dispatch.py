"""Benchmark: ``client.dispatch`` against a bare aiohttp loop, and its memory.

Run ``python benchmarks/bench_dispatch.py`` (a few minutes) or with
``--quick`` (under a minute, smaller counts). It prints:

* throughput: the simulator in its own process (no faults, no latency, no
  trigger log) gets N triggers at concurrency 64 and 256, alternately from
  ``dispatch`` and from a bare aiohttp loop (one session, a semaphore, the
  same JSON to the same server), several rounds interleaved so that a
  machine busy with other work slows both alike. Target: dispatch/bare >=
  0.90 (ratio of the median rates).
* memory: peak RSS of a process dispatching 1,000,000 generated requests
  and of one dispatching 10,000, each in its own process. Target: ratio
  <= 1.2, and under 150 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    format_bytes,
    median,
    phone_number,
    run_for_peak_rss,
    simulator_process,
)

from voicehub_async import CallRequest, VoiceHubClient

AGENT = "agent-bench"
TRIGGER_PATH = "/api/v1/calls/api-call"


def requests(count: int) -> Iterator[CallRequest]:
    """``count`` requests, generated lazily (never a list)."""
    for i in range(count):
        yield CallRequest(to=phone_number(i), agent_id=AGENT)


async def run_bare(base_url: str, api_key: str, count: int, concurrency: int) -> float:
    """Triggers per second of a plain aiohttp loop: the floor of what is possible."""
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        url = base_url + TRIGGER_PATH
        headers = {"x-dq-api-key": api_key}
        semaphore = asyncio.Semaphore(concurrency)
        tasks: set[asyncio.Task[None]] = set()
        failures = 0

        async def one(i: int) -> None:
            nonlocal failures
            try:
                async with session.post(
                    url, json={"to": phone_number(i), "agentId": AGENT}, headers=headers
                ) as response:
                    body = await response.read()
                    if response.status != 200:
                        failures += 1
                    else:
                        json.loads(body)
            finally:
                semaphore.release()

        started = time.perf_counter()
        for i in range(count):
            await semaphore.acquire()
            task = asyncio.create_task(one(i))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"bare loop: {failures} failed requests")
    return count / elapsed


async def run_dispatch(
    base_url: str, api_key: str, count: int, concurrency: int, prepared: bool = False
) -> float:
    """Triggers per second of ``client.dispatch`` (``prepared``: skip validation)."""
    async with VoiceHubClient(api_key, base_url=base_url, max_connections=concurrency) as client:
        started = time.perf_counter()
        async with client.dispatch(
            requests(count), concurrency=concurrency, prepared=prepared
        ) as dispatcher:
            async for _ in dispatcher:
                pass
        elapsed = time.perf_counter() - started
        stats = dispatcher.stats
    if stats.queued != count:
        raise RuntimeError(f"dispatch: {stats.counts}")
    return count / elapsed


def validation_cost(count: int = 20_000) -> float:
    """Microseconds ``client.prepare`` takes per request, alone in a loop."""
    client = VoiceHubClient("k", base_url="http://127.0.0.1:1")
    batch = list(requests(count))
    started = time.perf_counter()
    for request in batch:
        client.prepare(request)
    return (time.perf_counter() - started) / count * 1e6


def throughput(
    base_url: str, api_key: str, count: int, concurrencies: list[int], rounds: int
) -> list[float]:
    """Interleaved runs; returns dispatch/bare (ratio of medians) per concurrency."""
    ratios = []
    print(f"throughput: {count:,} triggers per run, {rounds} interleaved rounds")

    def run(kind: str, concurrency: int, n: int) -> float:
        if kind == "bare":
            return asyncio.run(run_bare(base_url, api_key, n, concurrency))
        prepared = kind == "prepared"
        return asyncio.run(run_dispatch(base_url, api_key, n, concurrency, prepared))

    kinds = ("bare", "dispatch", "prepared")
    for concurrency in concurrencies:
        rates: dict[str, list[float]] = {kind: [] for kind in kinds}
        for kind in kinds:  # warm up (connections, the simulator's caches)
            run(kind, concurrency, min(count, 2000))
        for number in range(rounds):
            # Rotate the order so that no variant always runs first or last.
            for kind in kinds[number % 3 :] + kinds[: number % 3]:
                rates[kind].append(run(kind, concurrency, count))
        bare, dispatch, prepared = (median(rates[kind]) for kind in kinds)
        ratios.append(dispatch / bare)
        per_round = ", ".join(
            f"{d / b:.2f}" for b, d in zip(rates["bare"], rates["dispatch"], strict=True)
        )
        print(
            f"  concurrency {concurrency:>3}: bare {bare:7.0f}/s  dispatch {dispatch:7.0f}/s  "
            f"ratio {dispatch / bare:.3f}  (per round: {per_round}; target >= 0.90)"
        )
        print(
            f"{'':18}dispatch(prepared=True, no validation) {prepared:7.0f}/s  "
            f"ratio {prepared / bare:.3f}"
        )
    return ratios


def memory(count_small: int, count_large: int, concurrency: int) -> tuple[float, int]:
    print(f"memory: peak RSS dispatching {count_small:,} vs {count_large:,} requests")
    peaks = {}
    for count in (count_small, count_large):
        # A fresh simulator each time: its own memory grows with the calls.
        with simulator_process("--no-record-triggers") as sim:
            started = time.perf_counter()
            peak, output = run_for_peak_rss(
                [
                    sys.executable,
                    __file__,
                    "--memory-child",
                    str(count),
                    "--url",
                    sim.base_url,
                    "--key",
                    sim.api_key,
                    "--concurrency",
                    str(concurrency),
                ]
            )
            elapsed = time.perf_counter() - started
        peaks[count] = peak
        print(
            f"  {count:>9,} requests: peak RSS {format_bytes(peak)}  "
            f"({elapsed:.1f}s; {output.strip()})"
        )
    ratio = peaks[count_large] / peaks[count_small]
    print(
        f"  ratio {ratio:.3f} (target <= 1.2); largest {format_bytes(peaks[count_large])} "
        "(target < 150 MB)"
    )
    return ratio, peaks[count_large]


async def memory_child(base_url: str, api_key: str, count: int, concurrency: int) -> None:
    async with VoiceHubClient(api_key, base_url=base_url, max_connections=concurrency) as client:
        async with client.dispatch(requests(count), concurrency=concurrency) as dispatcher:
            async for _ in dispatcher:
                pass
        stats = dispatcher.stats
    print(f"{stats.queued:,} queued, {stats.throughput:.0f}/s, p99 {stats.latency_p99 or 0:.4f}s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts (under a minute)")
    parser.add_argument("--count", type=int, help="triggers per throughput run")
    parser.add_argument("--rounds", type=int, help="interleaved rounds per concurrency")
    parser.add_argument("--concurrency", type=int, action="append", help="(repeatable)")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.memory_child is not None:
        asyncio.run(
            memory_child(args.url, args.key, args.memory_child, (args.concurrency or [64])[0])
        )
        return 0

    count = args.count or (5_000 if args.quick else 20_000)
    rounds = args.rounds or 3
    concurrencies = args.concurrency or [64, 256]
    started = time.perf_counter()
    if not args.skip_throughput:
        with simulator_process("--no-record-triggers") as sim:
            throughput(sim.base_url, sim.api_key, count, concurrencies, rounds)
        print(
            f"  (validation, client.prepare alone: {validation_cost():.1f} us per request; "
            "dispatch validates every request before sending it)"
        )
    if not args.skip_memory:
        small, large = (5_000, 50_000) if args.quick else (10_000, 1_000_000)
        memory(small, large, 64)
    print(f"done in {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
