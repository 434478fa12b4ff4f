"""Benchmark: a campaign under a live-call cap, against the physical limit.

Run ``python benchmarks/bench_live_cap.py`` (2,000 contacts, cap 50, calls of
2 s on average: about a minute and a half) or with ``--quick`` (2,000
contacts, cap 40, calls of 0.8 s: about 45 s). ``--learn`` runs the campaign
without ``--max-live``: it learns the service's cap from the concurrent-call
429s instead (a few more 429s). The simulator runs in this
process (so that its own count of live calls can be sampled), with the same
cap as the campaign (``max_live_calls = K``: a trigger above it is answered
the concurrent-call 429) and webhooks pushed to the campaign's
``--webhook-port``, so that a slot frees as soon as VoiceHub says its call
ended. Every call completes; its length (queue + ring + talk, drawn uniformly)
has a known mean.

With K slots and calls of mean length L, N calls cannot take less than
N x L / K seconds, plus the ramp (the time until K calls are live). It prints:

* ``time``: the campaign's wall time against that limit (target <= 1.15);
* ``live-slot use``: the simulator's live calls divided by K, sampled every
  few milliseconds while the campaign is full (from the first moment K calls
  are live to the last trigger) (target >= 0.9);
* ``429s``: triggers answered 429, as a share of all triggers (target <= 1%);
* the most calls live at once as the simulator counted them (never above K).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import phone_number

from voicehub_async import VoiceHubClient
from voicehub_async.campaign import Campaign
from voicehub_async.simulator import FaultConfig, LifecycleConfig, Simulator, SimulatorConfig

AGENT = "agent-bench"
SECRET = "whsec-bench-0123456789"
#: Simulated seconds of a call: queue, ring and talk, uniform; every call completes.
LIFECYCLE = LifecycleConfig(
    queue_delay=(1.0, 3.0), ring_time=(3.0, 5.0), talk_time=(70.0, 98.0), outcomes={"completed": 1}
)
MEAN_SIMULATED = sum((low + high) / 2 for low, high in (
    LIFECYCLE.queue_delay, LIFECYCLE.ring_time, LIFECYCLE.talk_time
))  # fmt: skip
#: Seconds between two samples of the simulator's live count.
SAMPLE_EVERY = 0.005


def write_contacts(path: Path, count: int) -> Path:
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["to", "name"])
        for i in range(count):
            writer.writerow([phone_number(i), f"n{i % 100}"])
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def sample(sim: Simulator, into: list[tuple[float, int]]) -> None:
    while True:
        into.append((time.monotonic(), sim.live_calls()))
        await asyncio.sleep(SAMPLE_EVERY)


async def run(count: int, cap: int, mean_length: float, workdir: Path, learn: bool) -> int:
    port = free_port()
    config = SimulatorConfig(
        time_scale=MEAN_SIMULATED / mean_length,
        lifecycle=LIFECYCLE,
        faults=FaultConfig(max_live_calls=cap),
        webhook_url=f"http://127.0.0.1:{port}/voicehub",
        webhook_secret=SECRET,
        seed=1,
    )
    source = write_contacts(workdir / "contacts.csv", count)
    samples: list[tuple[float, int]] = []
    async with Simulator(config) as sim:
        async with VoiceHubClient(sim.api_key, base_url=sim.base_url) as client:
            campaign = Campaign(
                client,
                source,
                agent_id=AGENT,
                concurrency=cap + 10,
                max_live=None if learn else cap,
                webhook_port=port,
                webhook_secret=SECRET,
                journal=workdir / "run.db",
            )
            sampler = asyncio.get_running_loop().create_task(sample(sim, samples))
            started = time.monotonic()
            summary = await campaign.run()
            sampler.cancel()
        triggers = list(sim.triggers)
        max_seen = sim.max_live_seen()

    created = sorted(t.received_at for t in triggers if t.created)
    ramp = created[cap - 1] - started if len(created) >= cap else float("nan")
    last_trigger = max(t.received_at for t in triggers)
    limit = count * mean_length / cap + ramp
    full_from = next((t for t, live in samples if live >= cap), None)
    window = [
        live for t, live in samples if full_from is not None and full_from <= t <= last_trigger
    ]
    use = sum(window) / (len(window) * cap) if window else float("nan")
    refused = sum(1 for t in triggers if t.answered_status == 429)
    share = refused / len(triggers) if triggers else 0.0
    time_ratio = summary.wall_time / limit

    how = "learnt from the 429s (no --max-live)" if learn else "--max-live K"
    print(f"contacts {count}, live-call cap K={cap} ({how}), mean call length {mean_length:.2f} s")
    print(f"  outcomes: {dict(summary.counts)}")
    print(
        f"  time: {summary.wall_time:.1f} s against the limit {limit:.1f} s "
        f"(N x L / K = {count * mean_length / cap:.1f} s + ramp {ramp:.2f} s): "
        f"ratio {time_ratio:.3f} (target <= 1.15)"
    )
    print(
        f"  live-slot use while full: {use:.3f} (mean live {use * cap:.1f} of {cap}, "
        f"{len(window)} samples over {last_trigger - (full_from or last_trigger):.1f} s) "
        "(target >= 0.9)"
    )
    print(
        f"  429s: {refused} of {len(triggers)} triggers ({100 * share:.2f}%) (target <= 1%); "
        f"most live at once (simulator's count): {max_seen} (cap {cap})"
    )
    ok = time_ratio <= 1.15 and use >= 0.9 and share <= 0.01 and max_seen <= cap
    print("  " + ("all targets met" if ok else "TARGET MISSED"))
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="cap 40, 0.8 s calls (about 45 s)")
    parser.add_argument(
        "--learn", action="store_true", help="no --max-live: learn the cap from the 429s"
    )
    parser.add_argument("--contacts", type=int, default=2000, help="contacts (default 2000)")
    parser.add_argument("--cap", type=int, default=None, help="the live-call cap K")
    parser.add_argument("--mean-length", type=float, default=None, help="mean call length, s")
    args = parser.parse_args()
    cap = args.cap or (40 if args.quick else 50)
    mean_length = args.mean_length or (0.8 if args.quick else 2.0)
    with tempfile.TemporaryDirectory(prefix="bench-live-cap-") as tmp:
        return asyncio.run(run(args.contacts, cap, mean_length, Path(tmp), args.learn))


if __name__ == "__main__":
    sys.exit(main())
