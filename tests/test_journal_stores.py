"""The PostgreSQL campaign store: schema and migrations, loading, claims that
never dial twice, dead workers, shared limits, workers against the simulator.

Every test gets a fresh schema (the ``postgres_url`` fixture), and is skipped
with instructions when $VOICEHUB_TEST_POSTGRES_URL is unset.
"""

from __future__ import annotations

import asyncio
import collections
import time
from pathlib import Path

import pytest

pytest.importorskip("asyncpg")

from voicehub_async.campaign.journal import JournalError
from voicehub_async.campaign.store.postgres import (
    SCHEMA_VERSION,
    SQL_TRIGGERED,
    CampaignExistsError,
    PostgresStore,
)


def _contacts(path: Path, n: int, *, start: int = 0, extra: str = "") -> Path:
    with open(path, "w", encoding="utf-8") as stream:
        stream.write("to,name\n")
        for i in range(n):
            stream.write(f"+1415555{(start + i) % 10_000:04d},person {i}\n")
        stream.write(extra)
    return path


async def test_concurrent_starts_migrate_once(postgres_url: str) -> None:
    stores = await asyncio.gather(*(PostgresStore.open(postgres_url) for _ in range(4)))
    try:
        versions = {await store.schema_version() for store in stores}
        assert versions == {SCHEMA_VERSION}
    finally:
        for store in stores:
            await store.close()


async def test_a_newer_schema_is_refused(postgres_url: str) -> None:
    async with await PostgresStore.open(postgres_url) as store:
        await store._pool.execute(
            "UPDATE voicehub_meta SET value = $1 WHERE key = 'schema_version'",
            str(SCHEMA_VERSION + 1),
        )
    with pytest.raises(JournalError, match="upgrade voicehub-async"):
        await PostgresStore.open(postgres_url)


async def test_load_records_invalid_and_duplicate_rows(postgres_url: str, tmp_path: Path) -> None:
    source = _contacts(tmp_path / "c.csv", 50, extra="not a number,x\n+14155550003,again\n")
    async with await PostgresStore.open(postgres_url) as store:
        result = await store.load("spring", source, agent_id="agent-1")
        assert result.loaded
        assert result.counts == {"pending": 50, "invalid": 1, "duplicate": 1}
        rows = {row.row: row for row in [r async for r in store.iter_rows(result.campaign.id)]}
        assert len(rows) == 52
        assert rows[51].state == "invalid" and rows[51].error and "to" in rows[51].error
        assert rows[52].state == "duplicate" and rows[52].error is not None
        assert "row 4" in rows[52].error  # +14155550003 is row 4
        assert rows[1].number == "+14155550000"


async def test_a_second_load_is_a_no_op_and_another_file_is_refused(
    postgres_url: str, tmp_path: Path
) -> None:
    source = _contacts(tmp_path / "c.csv", 20)
    async with await PostgresStore.open(postgres_url) as store:
        first, again = await asyncio.gather(
            store.load("spring", source, agent_id="a"), store.load("spring", source, agent_id="a")
        )
        assert sorted([first.loaded, again.loaded]) == [False, True]
        assert (await store.counts(first.campaign.id)) == {"pending": 20}
        other = _contacts(tmp_path / "d.csv", 5, start=100)
        with pytest.raises(CampaignExistsError, match="another file"):
            await store.load("spring", other, agent_id="a")


async def test_concurrent_claimers_never_get_the_same_row(
    postgres_url: str, tmp_path: Path
) -> None:
    source = _contacts(tmp_path / "c.csv", 1500)
    async with await PostgresStore.open(postgres_url) as store:
        campaign = (await store.load("c", source, agent_id="a")).campaign
    stores = [await PostgresStore.open(postgres_url) for _ in range(6)]
    try:
        workers = [await s.register_worker(campaign.id, f"w{i}") for i, s in enumerate(stores)]

        async def claimer(store: PostgresStore, worker: str) -> list[int]:
            got: list[int] = []
            while claims := await store.claim(campaign.id, worker, 7, time.time()):
                got.extend(claim.row for claim in claims)
            return got

        results = await asyncio.gather(
            *(claimer(s, w) for s, w in zip(stores, workers, strict=True))
        )
        every = [row for rows in results for row in rows]
        assert sorted(every) == list(range(1, 1501))  # each row claimed exactly once
        assert sum(1 for rows in results if rows) > 1  # they really competed
        assert (await stores[0].counts(campaign.id)) == {"sending": 1500}
    finally:
        for store in stores:
            await store.close()


async def test_a_dead_workers_rows_are_ambiguous_and_its_calls_adopted(
    postgres_url: str, tmp_path: Path
) -> None:
    source = _contacts(tmp_path / "c.csv", 10)
    async with await PostgresStore.open(postgres_url) as store:
        cid = (await store.load("c", source, agent_id="a")).campaign.id
        dead = await store.register_worker(cid, "dies")
        claims = await store.claim(cid, dead, 4, time.time())
        now = time.time()
        # Rows 1 and 2 were placed; rows 3 and 4 were being sent when it died.
        await store.apply(
            [
                (
                    SQL_TRIGGERED,
                    ("queued", f"call-{c.row}", "Queued", 1, None, now, None, now, cid, c.row),
                )
                for c in claims[:2]
            ]
        )
        survivor = await store.register_worker(cid, "lives")
        await asyncio.sleep(1.2)
        lease = await store.renew(
            cid,
            survivor,
            want=1,
            rate_limited=False,
            retry_after=1,
            worker_timeout=1.0,
            now=time.time(),
        )
        assert not lease.dead and lease.workers == 1
        rows = {r.row: r for r in [r async for r in store.iter_rows(cid)]}
        assert [rows[n].state for n in (1, 2, 3, 4, 5)] == [
            "queued",
            "queued",
            "ambiguous",
            "ambiguous",
            "pending",
        ]
        adopted = await store.adopt(cid, survivor)
        assert sorted(call.call_id for call in adopted) == ["call-1", "call-2"]
        assert await store.adopt(cid, survivor) == []
        # The dead worker can neither claim nor renew any more.
        assert await store.claim(cid, dead, 5, time.time()) == []
        late = await store.renew(
            cid,
            dead,
            want=1,
            rate_limited=False,
            retry_after=1,
            worker_timeout=1.0,
            now=time.time(),
        )
        assert late.dead


async def test_leases_share_the_rate_and_never_grant_more_slots_than_the_cap(
    postgres_url: str, tmp_path: Path
) -> None:
    source = _contacts(tmp_path / "c.csv", 100)
    async with await PostgresStore.open(postgres_url) as store:
        cid = (await store.load("c", source, agent_id="a")).campaign.id
        await store.set_limits(cid, rate_limit=50.0, max_live=7)
        workers = [await store.register_worker(cid, f"w{i}") for i in range(3)]

        async def renew(worker: str, limited: bool = False) -> tuple[float | None, int | None]:
            lease = await store.renew(
                cid,
                worker,
                want=10,
                rate_limited=limited,
                retry_after=0.0,
                worker_timeout=30.0,
                now=time.time(),
            )
            return lease.rate, lease.spare

        leases = [await renew(w) for w in workers]
        assert all(rate == pytest.approx(50 / 3) for rate, _ in leases)
        assert sum(spare or 0 for _, spare in leases) <= 7
        # Spend every grant: the cap is now held by claimed (sending) rows.
        for worker, (_, spare) in zip(workers, leases, strict=True):
            await store.claim(cid, worker, spare or 0, time.time())
        again = [await renew(w) for w in workers]
        live = (await store.counts(cid)).get("sending", 0)
        assert live + sum(spare or 0 for _, spare in again) <= 7
        # A 429 seen by one halves everybody's share at their next renewal.
        slowed = await renew(workers[0], limited=True)
        assert slowed[0] == pytest.approx(50 / 3 / 2)
        assert (await renew(workers[1]))[0] == pytest.approx(50 / 3 / 2)


async def test_workers_against_the_simulator_dial_every_number_once(
    postgres_url: str, tmp_path: Path, voicehub_simulator_factory: object
) -> None:
    from voicehub_async import VoiceHubClient
    from voicehub_async.campaign.store.worker import CampaignWorker
    from voicehub_async.simulator import FaultConfig, SimulatorConfig

    sim = voicehub_simulator_factory(  # type: ignore[operator]
        SimulatorConfig(time_scale=600.0, faults=FaultConfig(error_503_rate=0.05))
    )
    source = _contacts(tmp_path / "c.csv", 300)
    async with await PostgresStore.open(postgres_url) as store:
        campaign = (await store.load("c", source, agent_id="agent-1")).campaign
    stores = [await PostgresStore.open(postgres_url) for _ in range(3)]
    try:
        async with VoiceHubClient(sim.api_key, base_url=sim.base_url) as client:
            workers = [
                CampaignWorker(
                    client,
                    s,
                    campaign,
                    name=f"w{i}",
                    concurrency=5,
                    poll_interval=0.2,
                    max_poll_interval=0.5,
                    lease_interval=0.3,
                    worker_timeout=5.0,
                )
                for i, s in enumerate(stores)
            ]
            summaries = await asyncio.wait_for(
                asyncio.gather(*(w.run() for w in workers)), timeout=120
            )
        counts = summaries[-1].counts
        assert sum(counts.values()) == 300
        assert not {"pending", "sending", "queued", "started", "in-progress"} & set(counts)
        placed = sim.placed_counts()
        assert max(placed.values()) == 1 and len(placed) == 300 - counts.get("not_sent", 0)
        assert sum(1 for s in summaries if s.placed) >= 2  # the work was shared
        per_number = collections.Counter(t.to for t in sim.triggers)
        rows = [r async for r in stores[0].iter_rows(campaign.id)]
        attempts = {r.number: r.attempts for r in rows}
        assert all(per_number[n] <= attempts[n] for n in per_number)
    finally:
        for store in stores:
            await store.close()


def test_cli_load_status_results(
    postgres_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from voicehub_async.cli import main

    source = _contacts(tmp_path / "c.csv", 30, extra="+14155550001,twice\n")
    store = ["--journal", postgres_url, "--campaign", "cli"]
    assert main(["campaign", "load", str(source), *store, "--agent", "a", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["loaded"] and first["counts"] == {"pending": 30, "duplicate": 1}
    assert main(["campaign", "load", str(source), *store, "--agent", "a", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["loaded"] is False
    assert main(["campaign", "status", *store, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["total"] == 31 and status["workers"] == []
    out = tmp_path / "results.csv"
    assert main(["campaign", "results", *store, "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 32 and lines[0].startswith("row,to,")
    assert ",duplicate," in lines[-1]


def test_cli_needs_a_postgres_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from voicehub_async.cli import main

    monkeypatch.delenv("VOICEHUB_JOURNAL_URL", raising=False)
    source = _contacts(tmp_path / "c.csv", 3)
    assert main(["campaign", "load", str(source), "--campaign", "x"]) == 2
    assert "--journal postgresql://" in capsys.readouterr().err
    assert main(["campaign", "status", "--journal", "run.db", "--campaign", "x"]) == 2
    assert "postgresql:// URL" in capsys.readouterr().err
