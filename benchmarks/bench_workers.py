"""Campaign throughput on PostgreSQL: 1, 2 and 4 workers; and PostgreSQL vs SQLite.

Two figures, each a ratio of runs made in this same run:

* ``scaling``: a campaign of N contacts dialed by 1, 2 and 4 worker
  processes (``CampaignWorker``, concurrency 10 each, claims and lease
  renewals in PostgreSQL included) against a simulator that answers every
  trigger after 100 ms, so that a worker is bound by latency, not by the 2
  cores: the ideal is k x one worker. Target: 4 workers >= 3.5 x one.
* ``store``: one process dialing N contacts at concurrency 50 against a
  simulator with no latency, with the SQLite journal (``Campaign``) and with
  the PostgreSQL store (``CampaignWorker``). The SQLite run reads the file
  as it dials; for PostgreSQL the file was loaded before (``campaign load``, a
  separate step whose rate is printed apart). Target: PostgreSQL >= 0.7 x
  SQLite. Runs alternate, the median is kept.

Polling is off in both (``poll=False``): the figures are about dialing and
journaling, not about how long calls last. Needs a PostgreSQL database:
``--url`` or ``$VOICEHUB_TEST_POSTGRES_URL`` (a schema of its own is made and
dropped). ``--quick`` runs small sizes (under a minute or two).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import median, phone_number, simulator_process

from voicehub_async import VoiceHubClient
from voicehub_async.campaign import Campaign
from voicehub_async.campaign.store.postgres import PostgresStore
from voicehub_async.campaign.store.worker import CampaignWorker

AGENT = "agent-bench"


def write_contacts(path: Path, count: int) -> Path:
    with path.open("w") as out:
        out.write("to,name\n")
        for i in range(count):
            out.write(f"{phone_number(i)},n{i % 100}\n")
    return path


def _schema_url(url: str, schema: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}schema={schema}"


async def _load(url: str, name: str, contacts: Path) -> float:
    """Load ``contacts`` as campaign ``name``; returns rows per second."""
    async with await PostgresStore.open(url) as store:
        started = time.perf_counter()
        result = await store.load(name, contacts, agent_id=AGENT)
        elapsed = time.perf_counter() - started
    return sum(result.counts.values()) / elapsed


async def _drop(url: str) -> None:
    async with await PostgresStore.open(url) as store:
        await store.drop_schema()


# -- scaling: worker processes ----------------------------------------------------------------


async def worker_child(url: str, name: str, base_url: str, key: str, go: Path) -> None:
    """One worker process: get ready, wait for ``go`` to exist, dial, print times."""
    async with await PostgresStore.open(url) as store:
        campaign = await store.campaign(name)
        async with VoiceHubClient(key, base_url=base_url, max_connections=20) as client:
            print("ready", flush=True)
            while not go.exists():  # noqa: ASYNC110, ASYNC240 - a start barrier
                await asyncio.sleep(0.005)
            worker = CampaignWorker(client, store, campaign, concurrency=10, poll=False)
            summary = await worker.run()
    # The last trigger's answer: dialing, not the wait for the others to finish.
    end = worker.last_result_at or time.time()
    print(json.dumps({"end": end, "placed": summary.placed}), flush=True)


def scaling(url: str, base_url: str, key: str, contacts: Path, workers: int) -> float:
    """Rows per second with ``workers`` worker processes."""
    name = f"scale-{workers}-{uuid.uuid4().hex[:6]}"
    asyncio.run(_load(url, name, contacts))
    with tempfile.TemporaryDirectory() as tmp:
        go = Path(tmp) / "go"
        command = [sys.executable, __file__, "--child", url, name, base_url, key, str(go)]
        children = [
            subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(workers)
        ]
        for child in children:
            assert child.stdout is not None
            if child.stdout.readline().strip() != "ready":
                raise RuntimeError("a worker did not start")
        start = time.time()
        go.touch()
        ends, placed = [], 0
        for child in children:
            out, _ = child.communicate(timeout=600)
            result = json.loads(out.strip().splitlines()[-1])
            ends.append(result["end"])
            placed += result["placed"]
    rows = sum(1 for _ in contacts.open()) - 1
    if placed != rows:
        raise RuntimeError(f"{placed} calls placed for {rows} rows")
    return rows / (max(ends) - start)


# -- store: one process, no latency ---------------------------------------------------------------


async def run_sqlite(base_url: str, key: str, contacts: Path, workdir: Path) -> float:
    for stale in workdir.glob("run.*"):  # noqa: ASYNC240 - a benchmark's set-up
        stale.unlink()
    async with VoiceHubClient(key, base_url=base_url, max_connections=50) as client:
        started = time.perf_counter()
        summary = await Campaign(
            client,
            contacts,
            agent_id=AGENT,
            journal=workdir / "run.db",
            results=False,
            concurrency=50,
            poll=False,
        ).run()
        elapsed = time.perf_counter() - started
    if summary.count("queued") != summary.total:
        raise RuntimeError(f"sqlite: {summary.counts}")
    return summary.total / elapsed


async def run_postgres(url: str, base_url: str, key: str, contacts: Path) -> tuple[float, float]:
    """(dialing rows per second, load rows per second)."""
    name = f"store-{uuid.uuid4().hex[:6]}"
    load_rate = await _load(url, name, contacts)
    async with await PostgresStore.open(url) as store:
        campaign = await store.campaign(name)
        async with VoiceHubClient(key, base_url=base_url, max_connections=50) as client:
            started = time.perf_counter()
            summary = await CampaignWorker(
                client, store, campaign, concurrency=50, poll=False
            ).run()
            elapsed = time.perf_counter() - started
    if summary.placed != campaign.total:
        raise RuntimeError(f"postgres: {summary.counts}")
    return campaign.total / elapsed, load_rate


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        url, name, base_url, key, go = sys.argv[2:7]
        asyncio.run(worker_child(url, name, base_url, key, Path(go)))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("VOICEHUB_TEST_POSTGRES_URL"))
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if not args.url:
        parser.error("give --url postgresql://... or set VOICEHUB_TEST_POSTGRES_URL")
    url = _schema_url(args.url, f"bench_{uuid.uuid4().hex[:10]}")
    scale_rows = 2000 if args.quick else 4000
    store_rows = 5000 if args.quick else 20_000
    rounds = 1 if args.quick else 3
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            print(f"scaling: {scale_rows} contacts, workers at concurrency 10, 100 ms per trigger")
            with simulator_process("--latency", "0.1", "0.1", "--no-record-triggers") as sim:
                contacts = write_contacts(work / "scale.csv", scale_rows)
                rates = {k: scaling(url, sim.base_url, sim.api_key, contacts, k) for k in (1, 2, 4)}
            for k, rate in rates.items():
                print(f"  {k} worker(s): {rate:7.1f} rows/s  = {rate / rates[1]:.2f} x one worker")
            print(f"  target: 4 workers >= 3.5 x one: {rates[4] / rates[1]:.2f}")
            print(f"store: one process, {store_rows} contacts, concurrency 50, no latency")
            with simulator_process("--no-record-triggers") as sim:
                contacts = write_contacts(work / "store.csv", store_rows)
                sqlite, postgres, loads = [], [], []
                for _ in range(rounds):
                    sqlite.append(
                        asyncio.run(run_sqlite(sim.base_url, sim.api_key, contacts, work))
                    )
                    pg, load = asyncio.run(run_postgres(url, sim.base_url, sim.api_key, contacts))
                    postgres.append(pg)
                    loads.append(load)
            s, p = median(sqlite), median(postgres)
            print(f"  SQLite journal:   {s:7.1f} rows/s (reading the file included)")
            print(
                f"  PostgreSQL store: {p:7.1f} rows/s (claims, results; load apart: "
                f"{median(loads):.0f} rows/s)"
            )
            print(f"  target: PostgreSQL >= 0.7 x SQLite: {p / s:.2f}")
    finally:
        asyncio.run(_drop(url))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
