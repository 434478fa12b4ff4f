"""The PostgreSQL campaign store: schema and migrations, loading, claims that
never dial twice, dead workers, shared limits, workers against the simulator.

Every test gets a fresh schema (the ``postgres_url`` fixture), and is skipped
with instructions when $VOICEHUB_TEST_POSTGRES_URL is unset.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("asyncpg")

from voicehub_async.campaign.journal import (
    JournalError,
    JournalMismatchError,
    JournalOp,
    JournalStore,
    MarkSending,
    RecordAmbiguous,
    RecordInvalid,
    RecordReconciled,
    RecordRecording,
    RecordRedial,
    RecordSkipped,
    RecordStatus,
    RecordTriggered,
    RecordTriggerFailed,
    RecordUnsent,
    SqliteJournal,
)
from voicehub_async.campaign.store.pgjournal import PostgresJournal
from voicehub_async.campaign.store.postgres import (
    SCHEMA_VERSION,
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
        assert rows[52].state == "duplicate" and rows[52].duplicate_of == 4  # +14155550003
        assert rows[52].note is not None and "row 4" in rows[52].note
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
        await store.apply_ops(
            cid,
            [
                RecordTriggered(
                    c.row, c.attempt, "queued", f"call-{c.row}", "Queued", 1, None, now, False
                )
                for c in claims[:2]
            ],
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


# -- one journal suite, both stores ---------------------------------------------------------
#
# The campaign's journal interface (JournalStore) against SQLite and PostgreSQL
# alike: the same typed writes must leave the same rows, attempts and counts.


@pytest.fixture(params=["sqlite", "postgres"])
def journal(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JournalStore]:
    store: JournalStore
    if request.param == "sqlite":
        store = SqliteJournal.open(tmp_path / "run.journal.db")
    else:
        store = PostgresJournal.open(request.getfixturevalue("postgres_url"), campaign="suite")
    try:
        yield store
    finally:
        store.close()


def _mark(row: int, attempt: int = 1, at: float = 100.0) -> MarkSending:
    return MarkSending(row, f"digest-{row}", f"+1415555{row:04d}", attempt, at)


def _placed(row: int, attempt: int = 1, call: str | None = None) -> RecordTriggered:
    call_id = call or f"call-{row}-{attempt}"
    return RecordTriggered(row, attempt, "queued", call_id, "Queued", 1, None, 101.0, False)


def test_bind_records_then_resumes_then_refuses_another_file(journal: JournalStore) -> None:
    identity = {"source_sha256": "abc", "agent_id": "agent-1"}
    describe = {"source_name": "contacts.csv", "source_rows": "10"}
    assert journal.bind(identity, describe=describe) is True
    assert journal.bind(identity, describe=describe) is False
    assert journal.meta()["source_name"] == "contacts.csv"
    with pytest.raises(JournalMismatchError, match="another contacts file"):
        journal.bind({**identity, "source_sha256": "other"}, describe=describe)
    with pytest.raises(JournalMismatchError, match="agent_id"):
        journal.bind({**identity, "agent_id": "agent-2"}, describe=describe)


def test_a_call_from_mark_to_recording(journal: JournalStore) -> None:
    journal.apply([_mark(1)])
    (row,) = journal.rows_after(0)
    assert (row.row, row.state, row.dials, row.call_id) == (1, "sending", 1, None)
    journal.apply([_placed(1)])
    journal.apply(
        [
            RecordStatus(1, "call-1-1", "started", "Started", 102.0, False, started_at=102.0),
            RecordStatus(1, "call-1-1", "completed", "Completed", 103.0, True),
            RecordRecording(1, "https://rec/1.wav", 104.0),
        ]
    )
    (row,) = list(journal.iter_rows())
    assert (row.state, row.status, row.call_id, row.attempts, row.dials) == (
        "completed",
        "Completed",
        "call-1-1",
        1,
        1,
    )
    assert row.recording_url == "https://rec/1.wav" and row.number == "+14155550001"
    (attempt,) = list(journal.iter_attempts())
    assert (attempt.attempt, attempt.state, attempt.call_id, attempt.requests) == (
        1,
        "completed",
        "call-1-1",
        1,
    )
    assert (attempt.sent_at, attempt.queued_at, attempt.started_at, attempt.finished_at) == (
        100.0,
        101.0,
        102.0,
        103.0,
    )
    assert journal.counts() == {"completed": 1}
    assert journal.total_attempts() == (1, 0)


def test_rows_that_are_never_placed(journal: JournalStore) -> None:
    journal.apply([_mark(2), _mark(3), _mark(4)])
    journal.apply(
        [
            RecordUnsent(2, 1, 0, None, 101.0),
            RecordTriggerFailed(3, 1, "not_sent", 4, "503: unavailable", 101.0),
            RecordAmbiguous(4, 1, "the run stopped mid-trigger", 101.0),
            RecordInvalid(5, "digest-5", "12", "to: not a phone number", 101.0),
            RecordSkipped(6, "digest-6", "+14155550003", "duplicate", 101.0, 3, "same as row 3"),
        ]
    )
    rows = {row.row: row for row in journal.iter_rows()}
    assert {n: rows[n].state for n in rows} == {
        2: "pending",
        3: "not_sent",
        4: "ambiguous",
        5: "invalid",
        6: "duplicate",
    }
    assert rows[2].dials == 0 and rows[3].attempts == 4 and rows[3].error == "503: unavailable"
    assert rows[6].duplicate_of == 3 and rows[6].note == "same as row 3"
    assert rows[5].error == "to: not a phone number"
    states = {(a.row, a.attempt): a.state for a in journal.iter_attempts()}
    assert states == {(3, 1): "not_sent", (4, 1): "ambiguous"}  # the unsent attempt never was
    assert journal.total_attempts() == (4, 3)


def test_redials_and_reconciliation(journal: JournalStore) -> None:
    journal.apply([_mark(7)])
    journal.apply([_placed(7)])
    journal.apply(
        [
            RecordStatus(7, "call-7-1", "busy", "Busy", 102.0, True),
            RecordRedial(7, 1, 500.0, 102.0),
        ]
    )
    (row,) = journal.rows_after(0)
    assert (row.state, row.redial_at) == ("redial", 500.0)
    # The redial's mark may share a commit with the first attempt's last write.
    journal.apply([_mark(7, attempt=2, at=500.0)])
    journal.apply([RecordAmbiguous(7, 2, "may have been placed", 501.0)])
    journal.apply([RecordReconciled(7, 2, "call-7-2", "Queued", 502.0)])
    (row,) = journal.rows_after(0)
    assert (row.state, row.call_id, row.dials) == ("reconciled", "call-7-2", 2)
    attempts = [(a.attempt, a.state, a.call_id) for a in journal.iter_attempts()]
    assert attempts == [(1, "busy", "call-7-1"), (2, "reconciled", "call-7-2")]
    assert journal.redials() == 1


def test_one_commit_applies_kinds_in_the_order_a_row_lives(journal: JournalStore) -> None:
    journal.apply([_mark(8)])
    journal.apply([_placed(8)])
    # Given out of order in one batch: the status of attempt 1, then the mark of 2.
    journal.apply(
        [
            _mark(8, attempt=2, at=300.0),
            RecordRedial(8, 1, 300.0, 200.0),
            RecordStatus(8, "call-8-1", "unanswered", "Unanswered", 200.0, True),
        ]
    )
    (row,) = journal.rows_after(0)
    assert (row.state, row.dials, row.call_id) == ("sending", 2, None)
    assert [a.state for a in journal.iter_attempts()] == ["unanswered", "sending"]


def _script(seed: int, rows: int = 40) -> list[list[JournalOp]]:
    """A random, well-formed history of ``rows`` contacts, as commit batches."""
    import random

    rng = random.Random(seed)
    batches: list[list[JournalOp]] = []
    at = 1000.0
    for row in range(1, rows + 1):
        at += 1
        kind = rng.random()
        if kind < 0.1:
            batches.append([RecordInvalid(row, f"d{row}", None, "to: empty", at)])
            continue
        attempt = 1
        batches.append([_mark(row, attempt, at)])
        while True:
            at += 1
            fate = rng.random()
            if fate < 0.1:
                batches.append([RecordAmbiguous(row, attempt, "stopped mid-trigger", at)])
                break
            if fate < 0.2:
                batches.append([RecordTriggerFailed(row, attempt, "not_sent", 2, "503", at)])
                break
            call = f"c{row}-{attempt}"
            batches.append(
                [
                    RecordTriggered(
                        row, attempt, "queued", call, "Queued", rng.randint(1, 3), None, at, False
                    )
                ]
            )
            end = rng.choice(["completed", "busy", "unanswered"])
            at += 1
            batch: list[JournalOp] = [
                RecordStatus(row, call, "started", "Started", at, False, started_at=at),
                RecordStatus(row, call, end, end.title(), at + 1, True),
            ]
            if end != "completed" and attempt < 3 and rng.random() < 0.7:
                batch.append(RecordRedial(row, attempt, at + 60, at + 1))
                attempt += 1
                batch.append(_mark(row, attempt, at + 60))
                batches.append(batch)
                continue
            batches.append(batch)
            break
    return batches


def test_the_two_stores_agree_on_any_history(postgres_url: str, tmp_path: Path) -> None:
    sqlite = SqliteJournal.open(tmp_path / "agree.journal.db")
    postgres = PostgresJournal.open(postgres_url, campaign="agree")
    try:
        for batch in _script(seed=7):
            sqlite.apply(batch)
            postgres.apply(batch)
        assert list(sqlite.iter_rows(chunk=7)) == list(postgres.iter_rows(chunk=7))
        assert list(sqlite.iter_attempts(chunk=7)) == list(postgres.iter_attempts(chunk=7))
        assert sqlite.counts() == postgres.counts()
        assert sqlite.total_attempts() == postgres.total_attempts()
        assert sqlite.redials() == postgres.redials() > 0
    finally:
        sqlite.close()
        postgres.close()


def test_migrating_a_version_1_store(postgres_url: str, tmp_path: Path) -> None:
    """A schema at version 1 (this issue's first landing) with a loaded,
    half-dialed campaign is upgraded in place: rows keep their states, the
    placed ones get their attempt, and a resume sees them as before."""
    import asyncpg

    from voicehub_async.campaign.store import postgres as pg

    async def make_v1() -> None:
        dsn, schema = pg._split_url(postgres_url)
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'CREATE SCHEMA "{schema}"; SET search_path = "{schema}"')
            await conn.execute(
                "CREATE TABLE voicehub_meta (key text PRIMARY KEY, value text NOT NULL)"
            )
            await conn.execute(pg.MIGRATIONS[0][1])
            await conn.execute("INSERT INTO voicehub_meta VALUES ('schema_version', '1')")
            cid = await conn.fetchval(
                "INSERT INTO campaigns (name, source_name, source_sha256, source_size, "
                "agent_id) VALUES ('old', 'c.csv', 'sha', 10, 'a') RETURNING id"
            )
            await conn.executemany(
                "INSERT INTO contacts (campaign_id, row_no, input_hash, number, state, "
                "call_id, attempts, error, updated_at) VALUES ($1, $2, 'h', $3, $4, $5, $6, $7, 1)",
                [
                    (cid, 1, "+14155550001", "completed", "call-1", 1, None),
                    (cid, 2, "+14155550002", "ambiguous", None, 1, "may have been placed"),
                    (cid, 3, "+14155550003", "pending", None, 0, None),
                    (
                        cid,
                        4,
                        "+14155550001",
                        "duplicate",
                        None,
                        0,
                        "duplicate: the same number as row 1",
                    ),
                ],
            )
        finally:
            await conn.close()

    asyncio.run(make_v1())
    journal = PostgresJournal.open(postgres_url, campaign="old")
    try:
        rows = {row.row: row for row in journal.iter_rows()}
        assert {n: (r.state, r.dials) for n, r in rows.items()} == {
            1: ("completed", 1),
            2: ("ambiguous", 1),
            3: ("pending", 0),
            4: ("duplicate", 0),
        }
        assert rows[4].duplicate_of == 1
        attempts = [(a.row, a.attempt, a.state, a.call_id) for a in journal.iter_attempts()]
        assert attempts == [(1, 1, "completed", "call-1"), (2, 1, "ambiguous", None)]
        assert journal.meta()["source_sha256"] == "sha"
        assert (
            journal.bind(
                {"source_sha256": "sha", "agent_id": "a"}, describe={"source_name": "c.csv"}
            )
            is False
        )  # a resume of the old campaign
    finally:
        journal.close()
