"""Benchmark: ``client.dispatch`` against hand-written aiohttp loops, and its memory.

Run ``python benchmarks/bench_dispatch.py`` (a few minutes) or with
``--quick`` (under a minute or two, smaller counts). It prints:

* client CPU per trigger, in one run, for three senders of the same triggers
  to the same simulator (its own process: no faults, no latency, no trigger
  log, so its CPU does not count): the SDK (``client.dispatch``, validating
  every number), a bare aiohttp loop (one session, a semaphore, sends
  whatever it is given) and a *validating* aiohttp loop, as a careful user
  writes it (``phonenumbers.parse``, ``is_valid_number``, E.164 for each
  number before sending). Each round runs the three, in a rotating order, at
  concurrency 64 and 256; a ratio is ``baseline_cpu / sdk_cpu`` (throughput
  per CPU second, SDK over baseline) within a round, and the figure is the
  median over rounds, so that a machine busy with other work weighs on all
  three alike. Targets: >= 1.05 against the validating loop, >= 0.90
  against the bare loop. Triggers per second are shown too.
* memory: peak RSS of a process dispatching 1,000,000 generated requests
  and of one dispatching 10,000, each in its own process. Target: ratio
  <= 1.2, and under 150 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import attrs
import phonenumbers

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


async def _loop(
    base_url: str, api_key: str, count: int, concurrency: int, *, validate: bool
) -> None:
    """A hand-written aiohttp loop: one session, a semaphore, a task per trigger.

    ``validate``: check each number as a careful user would before sending it
    (libphonenumber: parse, ``is_valid_number``, format E.164).
    """
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        url = base_url + TRIGGER_PATH
        headers = {"x-dq-api-key": api_key}
        semaphore = asyncio.Semaphore(concurrency)
        tasks: set[asyncio.Task[None]] = set()
        failures = 0
        e164 = phonenumbers.PhoneNumberFormat.E164

        async def one(to: str) -> None:
            nonlocal failures
            try:
                async with session.post(
                    url, json={"to": to, "agentId": AGENT}, headers=headers
                ) as response:
                    body = await response.read()
                    if response.status != 200:
                        failures += 1
                    else:
                        json.loads(body)
            finally:
                semaphore.release()

        for i in range(count):
            to = phone_number(i)
            if validate:
                parsed = phonenumbers.parse(to, None)
                if not phonenumbers.is_valid_number(parsed):
                    raise RuntimeError(f"invalid number {to}")
                to = phonenumbers.format_number(parsed, e164)
            await semaphore.acquire()
            task = asyncio.create_task(one(to))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
    if failures:
        raise RuntimeError(f"aiohttp loop: {failures} failed requests")


async def _sdk(base_url: str, api_key: str, count: int, concurrency: int) -> None:
    """``client.dispatch``, validating every request (the default)."""
    async with VoiceHubClient(api_key, base_url=base_url, max_connections=concurrency) as client:
        async with client.dispatch(requests(count), concurrency=concurrency) as dispatcher:
            async for _ in dispatcher:
                pass
        stats = dispatcher.stats
    if stats.queued != count:
        raise RuntimeError(f"dispatch: {stats.counts}")


KINDS = ("sdk", "bare", "validating")


def measure(kind: str, base_url: str, api_key: str, count: int, concurrency: int) -> Figures:
    """One run in a fresh event loop: client CPU seconds per trigger, and triggers/s."""
    if kind == "sdk":
        work = _sdk(base_url, api_key, count, concurrency)
    else:
        work = _loop(base_url, api_key, count, concurrency, validate=kind == "validating")
    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()
    asyncio.run(work)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return Figures(cpu / count, count / wall)


@attrs.frozen
class Figures:
    cpu_per_trigger: float
    rate: float


def throughput(
    base_url: str, api_key: str, count: int, concurrencies: list[int], rounds: int
) -> dict[int, dict[str, float]]:
    """Interleaved rounds; per concurrency, the median per-round ratio against each baseline."""
    print(
        f"client CPU per trigger: {count:,} triggers per run, {rounds} rounds, "
        "the three senders interleaved (order rotating)"
    )
    results: dict[int, dict[str, float]] = {}
    for concurrency in concurrencies:
        for kind in KINDS:  # warm up (connections, the simulator's caches, libphonenumber)
            measure(kind, base_url, api_key, min(count, 1000), concurrency)
        runs: dict[str, list[Figures]] = {kind: [] for kind in KINDS}
        for number in range(rounds):
            order = KINDS[number % 3 :] + KINDS[: number % 3]
            for kind in order:
                runs[kind].append(measure(kind, base_url, api_key, count, concurrency))
        ratios = {
            baseline: median(
                [
                    b.cpu_per_trigger / s.cpu_per_trigger
                    for b, s in zip(runs[baseline], runs["sdk"], strict=True)
                ]
            )
            for baseline in ("validating", "bare")
        }
        results[concurrency] = ratios
        print(f"  concurrency {concurrency}:")
        for kind, label in (
            ("sdk", "SDK dispatch (validates)"),
            ("bare", "bare aiohttp loop"),
            ("validating", "validating aiohttp loop"),
        ):
            cpu = median([f.cpu_per_trigger for f in runs[kind]]) * 1e6
            rate = median([f.rate for f in runs[kind]])
            print(f"    {label:<26} {cpu:6.1f} us CPU/trigger  {rate:7.0f} triggers/s")
        for baseline, target in (("validating", 1.05), ("bare", 0.90)):
            per_round = ", ".join(
                f"{b.cpu_per_trigger / s.cpu_per_trigger:.2f}"
                for b, s in zip(runs[baseline], runs["sdk"], strict=True)
            )
            verdict = "ok" if ratios[baseline] >= target else "BELOW TARGET"
            print(
                f"    SDK vs {baseline} loop: {ratios[baseline]:.3f} "
                f"(per round: {per_round}; target >= {target:.2f}: {verdict})"
            )
    return results


def validation_cost(count: int = 10_000) -> tuple[float, float]:
    """Microseconds per request: ``client.prepare`` alone, and libphonenumber alone."""
    client = VoiceHubClient("k", base_url="http://127.0.0.1:1")
    batch = list(requests(count))
    started = time.perf_counter()
    for request in batch:
        client.prepare(request)
    sdk = (time.perf_counter() - started) / len(batch) * 1e6
    e164 = phonenumbers.PhoneNumberFormat.E164
    started = time.perf_counter()
    for request in batch:
        parsed = phonenumbers.parse(request.to, None)
        phonenumbers.is_valid_number(parsed)
        phonenumbers.format_number(parsed, e164)
    raw = (time.perf_counter() - started) / len(batch) * 1e6
    return sdk, raw


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

    # Distinct numbers within a run (phone_number cycles after 10,000).
    count = args.count or (4_000 if args.quick else 10_000)
    rounds = args.rounds or (5 if args.quick else 7)
    concurrencies = args.concurrency or [64, 256]
    started = time.perf_counter()
    load = os.getloadavg()
    cpus = os.cpu_count()
    print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, {cpus} CPUs")
    if not args.skip_throughput:
        with simulator_process("--no-record-triggers") as sim:
            throughput(sim.base_url, sim.api_key, count, concurrencies, rounds)
        sdk, raw = validation_cost()
        print(
            f"  (validation alone: client.prepare {sdk:.1f} us per request, libphonenumber's "
            f"parse + is_valid_number + E.164 {raw:.1f} us)"
        )
    if not args.skip_memory:
        small, large = (5_000, 50_000) if args.quick else (10_000, 1_000_000)
        memory(small, large, 64)
    load = os.getloadavg()
    print(f"load average at end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"done in {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
