"""Benchmark: StatusPoller against naive once-a-second polling, on the simulator.

    python benchmarks/bench_poller.py            # 20,000 calls (a few minutes)
    python benchmarks/bench_poller.py --quick    # 2,000 calls, under a minute

Calls are triggered over a ramp and tracked by a :class:`StatusPoller` as
they are created; a sample of them is also followed by a naive poller that
reads every one of its calls every (simulated) second. Both run in the same
process, against the same simulator, at the same time.

Everything is measured in *simulated* seconds: the simulator compresses a
call's lifecycle by ``--time-scale``, and the poller's intervals and the
naive period are divided by the same factor, so the figures are those of a
real deployment (``min_interval`` 2 s, ``max_interval`` 30 s, naive 1 s).

The simulator runs in its own process: this script started with
``--serve`` rather than ``_common.simulator_process`` (which runs
``python -m voicehub_async.simulator``), because it needs one extra route,
added to the simulator's application before it starts (the simulator's code
is not changed): ``GET /_bench/timelines`` answers, for every call, the wall-clock
time at which each status began, computed from the timeline the simulator
drew for the call. The detection delay of a change is the time from there to
the ``StatusChange`` (its ``at``), or to the naive read that saw it.

Reported: reads per call (adaptive, over all calls and over the naive
sample; naive), detection delay p50/p99 over all changes and over final
changes, and whether the targets hold (>= 5x fewer reads than naive, p99 delay
<= max_interval).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import resource
import signal
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import phone_number

from voicehub_async import (
    Call,
    CallStatus,
    StatusPoller,
    VoiceHubClient,
    VoiceHubError,
)

NAIVE_PERIOD = 1.0  # simulated seconds
MIN_INTERVAL = 2.0
MAX_INTERVAL = 30.0
TIMELINES_PATH = "/_bench/timelines"


# -- the simulator's process -----------------------------------------------------------------


async def _serve(time_scale: float, seed: int) -> None:
    from aiohttp import web

    from voicehub_async.simulator import Simulator, SimulatorConfig

    sim = Simulator(SimulatorConfig(time_scale=time_scale, seed=seed, record_triggers=False))

    async def timelines(request: web.Request) -> web.Response:
        # Both clocks are read here, so the monotonic creation times convert
        # to wall-clock times comparable with the benchmark's process.
        wall_minus_mono = time.time() - time.monotonic()
        out: dict[str, list[tuple[float, str]]] = {}
        for call_id, call in sim.calls.items():
            base = call.created_at + wall_minus_mono
            out[call_id] = [
                (base + offset / time_scale, status.lower()) for offset, status in call.timeline()
            ]
        body = {"timelines": out, "requests": dict(sim.request_count)}
        return web.Response(body=json.dumps(body).encode(), content_type="application/json")

    sim.app.router.add_get(TIMELINES_PATH, timelines)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def parent_pipe() -> None:  # stdin is the parent's pipe: EOF when it exits
        if not os.read(0, 4096):
            loop.remove_reader(0)
            stop.set()

    loop.add_reader(0, parent_pipe)
    async with sim:
        print(f"listening on {sim.base_url} key {sim.api_key}", flush=True)
        await stop.wait()


class SimulatorProcess:
    """This script with ``--serve``, in a child process; stopped on exit."""

    def __init__(self, time_scale: float, seed: int) -> None:
        self.args = ["--serve", "--time-scale", str(time_scale), "--seed", str(seed)]
        self.process: asyncio.subprocess.Process | None = None
        self.base_url = ""
        self.api_key = ""

    async def __aenter__(self) -> SimulatorProcess:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            *self.args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert self.process.stdout is not None
        line = (await asyncio.wait_for(self.process.stdout.readline(), 30)).decode()
        if not line.startswith("listening on "):
            raise RuntimeError(f"the simulator did not start: {line!r}")
        _, _, url, _, key = line.split()
        self.base_url, self.api_key = url, key
        return self

    async def __aexit__(self, *exc: object) -> None:
        process = self.process
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except asyncio.TimeoutError:
                process.kill()
                await process.wait()


# -- the naive poller -----------------------------------------------------------------------------


class NaivePoller:
    """Reads every call it follows once per ``period`` until it is final."""

    def __init__(self, client: VoiceHubClient, period: float, concurrency: int) -> None:
        self.client = client
        self.period = period
        self.semaphore = asyncio.Semaphore(concurrency)
        self.active: dict[str, CallStatus] = {}
        self.reads: Counter[str] = Counter()
        self.changes: list[tuple[str, str, float]] = []
        self.late_ticks = 0
        self.ticks = 0

    def add(self, call: Call) -> None:
        self.active[call.id] = call.status

    async def _read(self, call_id: str) -> None:
        async with self.semaphore:
            self.reads[call_id] += 1
            try:
                call = await self.client.get_call(call_id)
            except VoiceHubError:
                return
        old = self.active.get(call_id)
        if old is not None and call.status != old:
            self.changes.append((call_id, call.status.name, time.time()))
            if call.status.is_terminal:
                del self.active[call_id]
            else:
                self.active[call_id] = call.status

    async def run(self, done: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        while not (done.is_set() and not self.active):
            if self.active:
                self.ticks += 1
                await asyncio.gather(*(self._read(call_id) for call_id in list(self.active)))
            next_tick += self.period
            delay = next_tick - loop.time()
            if delay < 0:
                self.late_ticks += 1  # the reads of one tick took longer than a period
                next_tick = loop.time()
            else:
                await asyncio.sleep(delay)


# -- the run -------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def delays(
    changes: Sequence[tuple[str, str, float]],
    timelines: dict[str, dict[str, float]],
    time_scale: float,
    finals_only: bool = False,
) -> list[float]:
    """Simulated seconds from each status's start to its detection."""
    out: list[float] = []
    for call_id, status, at in changes:
        if finals_only and not CallStatus(status).is_terminal:
            continue
        began = timelines.get(call_id, {}).get(status)
        if began is not None:
            out.append(max(0.0, at - began) * time_scale)
    return out


async def run(args: argparse.Namespace) -> int:
    scale = args.time_scale
    print(
        f"{args.calls} calls over a {args.ramp:.0f} s ramp, time scale {scale:g} "
        f"(intervals {MIN_INTERVAL:g}-{MAX_INTERVAL:g} s simulated; naive every "
        f"{NAIVE_PERIOD:g} s on a sample of {args.naive_sample})",
        flush=True,
    )
    started = time.monotonic()
    cpu_started = time.process_time()
    async with SimulatorProcess(scale, args.seed) as sim:
        async with (
            VoiceHubClient(sim.api_key, base_url=sim.base_url, max_connections=100) as client,
            VoiceHubClient(sim.api_key, base_url=sim.base_url, max_connections=100) as naive_client,
        ):
            reads: Counter[str] = Counter()
            get_call = client.get_call

            async def counted_get_call(call_id: str, **kwargs: Any) -> Call:
                reads[call_id] += 1
                return await get_call(call_id, **kwargs)

            client.get_call = counted_get_call  # type: ignore[method-assign]
            naive = NaivePoller(naive_client, NAIVE_PERIOD / scale, args.naive_concurrency)
            sample_every = max(1, args.calls // max(1, args.naive_sample))
            sample: set[str] = set()
            observed: list[tuple[str, str, float]] = []
            trigger_failures = 0
            all_triggered = asyncio.Event()

            async with StatusPoller(
                client,
                concurrency=args.concurrency,
                min_interval=MIN_INTERVAL / scale,
                max_interval=MAX_INTERVAL / scale,
                seed=args.seed,
            ) as poller:

                async def trigger(i: int, semaphore: asyncio.Semaphore) -> None:
                    nonlocal trigger_failures
                    async with semaphore:
                        try:
                            call = await client.trigger_call(phone_number(i), "agent-bench")
                        except VoiceHubError as error:
                            trigger_failures += 1
                            if trigger_failures <= 3:
                                print(f"trigger {i} failed: {error}", file=sys.stderr)
                            return
                    poller.track(call)
                    if i % sample_every == 0:
                        sample.add(call.id)
                        naive.add(call)

                async def produce() -> None:
                    semaphore = asyncio.Semaphore(100)
                    loop = asyncio.get_running_loop()
                    t0 = loop.time()
                    tasks = []
                    for i in range(args.calls):
                        delay = t0 + i * args.ramp / args.calls - loop.time()
                        if delay > 0:
                            await asyncio.sleep(delay)
                        tasks.append(asyncio.create_task(trigger(i, semaphore)))
                    await asyncio.gather(*tasks)
                    all_triggered.set()
                    if trigger_failures == args.calls:
                        raise SystemExit("every trigger failed")

                async def consume() -> None:
                    finals = 0
                    async for change in poller.changes(until_idle=False):
                        observed.append((change.call_id, change.new.name, change.at.timestamp()))
                        if change.is_final:
                            finals += 1
                            if all_triggered.is_set() and finals >= args.calls - trigger_failures:
                                return

                async def report() -> None:
                    while True:
                        await asyncio.sleep(5)
                        stats = poller.stats
                        print(
                            f"  {time.monotonic() - started:5.0f} s: tracked {stats.tracked}, "
                            f"active {stats.active}, reads {stats.reads}, naive reads "
                            f"{sum(naive.reads.values())} ({len(naive.active)} active)",
                            file=sys.stderr,
                            flush=True,
                        )

                reporter = asyncio.create_task(report())
                naive_task = asyncio.create_task(naive.run(all_triggered))
                try:
                    await asyncio.gather(produce(), consume(), naive_task)
                finally:
                    reporter.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await reporter
                stats = poller.stats

        async with (
            aiohttp.ClientSession() as session,
            session.get(sim.base_url + TIMELINES_PATH) as response,
        ):
            data = await response.json()
    elapsed = time.monotonic() - started
    cpu = time.process_time() - cpu_started

    timelines = {
        call_id: {status: at for at, status in points}
        for call_id, points in data["timelines"].items()
    }
    tracked = stats.tracked
    adaptive_reads = sum(reads.values()) / tracked
    adaptive_sample_reads = sum(reads[c] for c in sample) / len(sample)
    naive_reads = sum(naive.reads.values()) / len(sample)
    adaptive_all = delays(observed, timelines, scale)
    adaptive_finals = delays(observed, timelines, scale, finals_only=True)
    adaptive_sample = delays([c for c in observed if c[0] in sample], timelines, scale)
    naive_all = delays(naive.changes, timelines, scale)
    naive_finals = delays(naive.changes, timelines, scale, finals_only=True)
    ratio = naive_reads / adaptive_sample_reads

    def row(name: str, per_call: float, all_: list[float], finals: list[float]) -> str:
        return (
            f"{name:<30} {per_call:>10.1f} {percentile(all_, 50):>9.1f} "
            f"{percentile(all_, 99):>9.1f} {percentile(finals, 50):>9.1f} "
            f"{percentile(finals, 99):>9.1f}"
        )

    print()
    print(f"calls tracked {tracked} (trigger failures {trigger_failures}), naive sample "
          f"{len(sample)}; wall {elapsed:.1f} s, CPU of this process {cpu:.1f} s, "
          f"max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    print(f"poller: {stats.reads} reads, {stats.changes} changes, lost {stats.lost}, "
          f"timed out {stats.timed_out}, read errors {stats.read_errors}; naive: "
          f"{naive.ticks} ticks, {naive.late_ticks} late")
    print("detection delay in simulated seconds (all changes | final changes)")
    print(f"{'':<30} {'reads/call':>10} {'p50':>9} {'p99':>9} {'p50 fin':>9} {'p99 fin':>9}")
    print(row("adaptive, all calls", adaptive_reads, adaptive_all, adaptive_finals))
    print(row("adaptive, naive's sample", adaptive_sample_reads, adaptive_sample,
              delays([c for c in observed if c[0] in sample], timelines, scale, True)))
    print(row(f"naive every {NAIVE_PERIOD:g} s, sample", naive_reads, naive_all, naive_finals))
    p99 = percentile(adaptive_all, 99)
    ok_reads = ratio >= 5.0
    ok_delay = p99 <= MAX_INTERVAL
    print(f"\n{ratio:.1f}x fewer reads than naive (target >= 5x): "
          f"{'ok' if ok_reads else 'MISSED'}")
    print(f"p99 detection delay {p99:.1f} s vs max_interval {MAX_INTERVAL:g} s: "
          f"{'ok' if ok_delay else 'MISSED'}")
    return 0 if ok_reads and ok_delay else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,000 calls, under a minute")
    parser.add_argument("--calls", type=int, default=None)
    parser.add_argument("--ramp", type=float, default=None, help="real seconds to trigger over")
    parser.add_argument("--time-scale", type=float, default=None)
    parser.add_argument("--naive-sample", type=int, default=None)
    parser.add_argument("--naive-concurrency", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=50, help="the poller's")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(_serve(args.time_scale, args.seed))
        return 0
    quick = args.quick
    if args.calls is None:
        args.calls = 2_000 if quick else 20_000
    if args.ramp is None:
        args.ramp = 5.0 if quick else 60.0
    if args.time_scale is None:
        args.time_scale = 6.0 if quick else 2.0
    if args.naive_sample is None:
        args.naive_sample = 100 if quick else 200
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
