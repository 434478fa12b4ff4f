"""Benchmark: what the campaign's journal costs, against ``dispatch`` alone.

Run ``python benchmarks/bench_campaign.py`` (100,000 rows, a few minutes) or
with ``--quick`` (20,000 rows, under a minute). The simulator runs in its own
process (no latency, no faults, no trigger log), so its CPU is not counted
against the client. It prints:

* throughput: the same N contacts, alternately (interleaved rounds, so that
  a machine busy with other work slows both alike)

  - ``dispatch``: ``client.dispatch`` over N generated requests carrying the
    same context, consumed and discarded: the floor;
  - ``campaign``: ``Campaign(..., poll=False)`` over the same N rows as a CSV
    file: reading and hashing rows, the journal (a ``sending`` mark committed
    before every trigger; durability ``normal``, the default, or ``full``
    with ``--durability full``: every group commit fsynced), results
    recorded, and the results file written at the end.

  Rates are triggers per second over the dialing phase; the campaign's wall
  rate (fingerprint, journal open and results file included) is shown too.
  Target: campaign/dispatch >= 0.75 (the journal costs at most 25%).
  Also shown: journal commits, and marks per commit (the group commit at work).
* memory: peak RSS of a campaign process over a small and a 10x larger file.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    format_bytes,
    median,
    run_for_peak_rss,
    simulator_process,
)

from voicehub_async import CallRequest, VoiceHubClient
from voicehub_async.campaign import Campaign
from voicehub_async.campaign.journal import Durability

AGENT = "agent-bench"


def phone_number(i: int) -> str:
    """A distinct valid US number for every i < 8,000,000: a campaign dials
    each number once, so a file that repeated numbers would measure the
    duplicate check instead of the journal."""
    return f"+1415{200 + i // 10_000:03d}{i % 10_000:04d}"


def write_contacts(path: Path, count: int) -> Path:
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["to", "name", "order_id"])
        for i in range(count):
            writer.writerow([phone_number(i), f"n{i % 100}", str(100_000 + i)])
    return path


def requests(count: int) -> Iterator[CallRequest]:
    for i in range(count):
        yield CallRequest(
            to=phone_number(i),
            agent_id=AGENT,
            context={"name": f"n{i % 100}", "order_id": str(100_000 + i)},
        )


async def run_dispatch(
    base_url: str, api_key: str, count: int, concurrency: int
) -> tuple[float, float]:
    """(triggers per second, CPU microseconds per trigger) of ``dispatch``."""
    async with VoiceHubClient(api_key, base_url=base_url, max_connections=concurrency) as client:
        cpu = time.process_time()
        async with client.dispatch(requests(count), concurrency=concurrency) as dispatcher:
            async for _ in dispatcher:
                pass
        cpu = time.process_time() - cpu
        stats = dispatcher.stats
    if stats.queued != count:
        raise RuntimeError(f"dispatch: {stats.counts}")
    return stats.throughput, cpu / count * 1e6


async def run_campaign(
    base_url: str,
    api_key: str,
    contacts: Path,
    workdir: Path,
    concurrency: int,
    durability: Durability = "normal",
) -> tuple[float, float, int, int, float]:
    """(dialing rate, wall rate, journal commits, rows, CPU us per row) of a fresh campaign."""
    for stale in workdir.glob("run.*"):  # noqa: ASYNC240 - a benchmark's set-up
        stale.unlink()
    async with VoiceHubClient(api_key, base_url=base_url, max_connections=concurrency) as client:
        started = time.perf_counter()
        cpu = time.process_time()
        summary = await Campaign(
            client,
            contacts,
            agent_id=AGENT,
            journal=workdir / "run.db",
            results=workdir / "run.results.csv",
            concurrency=concurrency,
            poll=False,
            durability=durability,
        ).run()
        wall = time.perf_counter() - started
        cpu = time.process_time() - cpu
    if summary.count("queued") != summary.total or summary.requests != summary.total:
        raise RuntimeError(f"campaign: {summary.counts}")
    rows = summary.total
    return summary.throughput, rows / wall, summary.journal_commits, rows, cpu / rows * 1e6


def throughput(
    base_url: str,
    api_key: str,
    count: int,
    concurrency: int,
    rounds: int,
    durability: Durability,
) -> float:
    print(
        f"throughput: {count:,} rows, concurrency {concurrency}, {rounds} interleaved rounds, "
        f"journal durability {durability}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-campaign-") as tmp:
        workdir = Path(tmp)
        contacts = write_contacts(workdir / "contacts.csv", count)
        warm = write_contacts(workdir / "warm.csv", min(count, 2000))
        asyncio.run(run_dispatch(base_url, api_key, min(count, 2000), concurrency))
        asyncio.run(run_campaign(base_url, api_key, warm, workdir, concurrency, durability))
        dispatch_rates: list[float] = []
        campaign_rates: list[float] = []
        wall_rates: list[float] = []
        for number in range(rounds):
            order = ("dispatch", "campaign") if number % 2 == 0 else ("campaign", "dispatch")
            for kind in order:
                if kind == "dispatch":
                    rate, cpu = asyncio.run(run_dispatch(base_url, api_key, count, concurrency))
                    dispatch_rates.append(rate)
                    print(f"  round {number + 1}: dispatch {rate:7.0f}/s            "
                          f"CPU {cpu:4.0f} us/trigger")  # fmt: skip
                else:
                    rate, wall, commits, rows, cpu = asyncio.run(
                        run_campaign(base_url, api_key, contacts, workdir, concurrency, durability)
                    )
                    campaign_rates.append(rate)
                    wall_rates.append(wall)
                    print(
                        f"  round {number + 1}: campaign {rate:7.0f}/s dialing  CPU {cpu:4.0f} "
                        f"us/row  ({wall:.0f}/s wall; {commits:,} journal commits, "
                        f"{rows / max(commits, 1):.1f} rows per commit)"
                    )
    dispatch, campaign = median(dispatch_rates), median(campaign_rates)
    ratio = campaign / dispatch
    print(
        f"  median: dispatch {dispatch:.0f}/s, campaign {campaign:.0f}/s dialing "
        f"({median(wall_rates):.0f}/s wall): ratio {ratio:.3f} (target >= 0.75)"
    )
    return ratio


def memory(small: int, large: int, concurrency: int) -> None:
    print(f"memory: peak RSS of a campaign over {small:,} vs {large:,} rows (no polling)")
    peaks = {}
    with tempfile.TemporaryDirectory(prefix="bench-campaign-") as tmp:
        for count in (small, large):
            contacts = write_contacts(Path(tmp) / f"c{count}.csv", count)
            with simulator_process("--no-record-triggers") as sim:
                started = time.perf_counter()
                peak, output = run_for_peak_rss(
                    [
                        sys.executable, __file__, "--memory-child", str(contacts),
                        "--url", sim.base_url, "--key", sim.api_key,
                        "--concurrency", str(concurrency),
                    ]
                )  # fmt: skip
                elapsed = time.perf_counter() - started
            peaks[count] = peak
            print(
                f"  {count:>9,} rows: peak RSS {format_bytes(peak)} "
                f"({elapsed:.1f}s; {output.strip()})"
            )
    print(f"  ratio {peaks[large] / peaks[small]:.3f}")


async def memory_child(base_url: str, api_key: str, contacts: Path, concurrency: int) -> None:
    workdir = contacts.parent
    _, wall, commits, rows, _ = await run_campaign(
        base_url, api_key, contacts, workdir, concurrency
    )
    print(f"{rows:,} rows at {wall:.0f}/s, {commits:,} commits")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 rows (under a minute)")
    parser.add_argument("--count", type=int, help="rows per run")
    parser.add_argument("--rounds", type=int, help="interleaved rounds")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--durability", choices=("full", "normal"), default="normal")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--memory-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child is not None:
        asyncio.run(memory_child(args.url, args.key, args.memory_child, args.concurrency))
        return 0

    count = args.count or (20_000 if args.quick else 100_000)
    rounds = args.rounds or 2
    started = time.perf_counter()
    with simulator_process("--no-record-triggers") as sim:
        ratio = throughput(
            sim.base_url, sim.api_key, count, args.concurrency, rounds, args.durability
        )
    if not args.skip_memory:
        small, large = (1_000, 10_000) if args.quick else (10_000, 100_000)
        memory(small, large, args.concurrency)
    print(f"done in {time.perf_counter() - started:.0f}s")
    return 0 if ratio >= 0.75 else 1


if __name__ == "__main__":
    sys.exit(main())
