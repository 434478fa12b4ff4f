"""The dialer features against a real simulator over loopback sockets: one dial
per person, do-not-call lists, redial sequences, the following horizon
(``max_wait``), and a journal written by 0.1 migrated and resumed."""

from __future__ import annotations

import asyncio
import collections
import csv
import hashlib
import itertools
import sqlite3
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import pytest

from voicehub_async import VoiceHubClient
from voicehub_async.campaign import Campaign, JournalError
from voicehub_async.campaign.contacts import read_contacts
from voicehub_async.campaign.redial import RedialPolicy
from voicehub_async.campaign.suppression import SuppressionError, SuppressionList
from voicehub_async.simulator import Fault, LifecycleConfig, Simulator, SimulatorConfig

AGENT = "agent-1"
FINAL = {"completed", "unanswered", "busy", "failed", "cancelled"}


def lifecycle(**outcomes: float) -> LifecycleConfig:
    return LifecycleConfig(
        queue_delay=(1.0, 2.0),
        ring_time=(1.0, 3.0),
        talk_time=(5.0, 20.0),
        outcomes=outcomes or {"completed": 0.7, "busy": 0.3},
    )


def number(i: int) -> str:
    return f"+1415555{i:04d}"


def write_csv(path: Path, rows: Iterable[Iterable[object]], header: str = "to,name") -> Path:
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(header.split(","))
        writer.writerows(rows)
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as stream:
        return list(csv.DictReader(stream))


def triggers_per_number(sim: Simulator) -> collections.Counter[str]:
    """Trigger requests per number, as the simulator logged them (refused ones included)."""
    return collections.Counter(t.to for t in sim.triggers if t.to)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimulatorConfig(time_scale=200, lifecycle=lifecycle())) as simulator:
        yield simulator


@pytest.fixture
async def client(sim: Simulator) -> AsyncIterator[VoiceHubClient]:
    async with VoiceHubClient(sim.api_key, base_url=sim.base_url, default_region="US") as made:
        yield made


def campaign(client: VoiceHubClient, source: Path, **options: Any) -> Campaign:
    options.setdefault("agent_id", AGENT)
    options.setdefault("poll_interval", 0.05)
    options.setdefault("max_poll_interval", 0.2)
    return Campaign(client, source, **options)


# -- one dial per person ------------------------------------------------------------------


async def test_a_number_on_several_rows_is_dialed_once(
    sim: Simulator, client: VoiceHubClient, tmp_path: Path
) -> None:
    source = write_csv(
        tmp_path / "c.csv",
        [
            ["(415) 555-0123", "first"],
            [number(1), "other"],
            ["+1 415 555 0123", "same person, E.164 with spaces"],
            ["415.555.0123", "same person again"],
            [number(1), "other again"],
            [number(2), "third"],
        ],
    )
    summary = await campaign(client, source, poll=False).run()
    assert triggers_per_number(sim) == {"+14155550123": 1, number(1): 1, number(2): 1}
    assert summary.duplicates == 3 and summary.exit_code == 0
    rows = read_csv(tmp_path / "c.results.csv")
    assert [r["status"] for r in rows] == [
        "queued", "queued", "duplicate", "duplicate", "duplicate", "queued",
    ]  # fmt: skip
    assert "row 1" in rows[2]["note"] and "row 1" in rows[3]["note"]
    assert "row 2" in rows[4]["note"]
    assert rows[2]["attempts"] == "0" and not rows[2]["call_id"]

    # A resume dials nothing more, and the duplicates stay duplicates.
    again = await campaign(client, source, poll=False).run()
    assert again.requests == 0 and again.duplicates == 3
    assert sum(triggers_per_number(sim).values()) == 3


async def test_duplicates_hold_across_a_resume(tmp_path: Path) -> None:
    config = SimulatorConfig(time_scale=200, lifecycle=lifecycle())
    rows = [[number(i), ""] for i in range(150)] + [[number(0), "late duplicate of row 1"]]
    source = write_csv(tmp_path / "c.csv", rows)
    async with (
        Simulator(config) as sim,
        VoiceHubClient(sim.api_key, base_url=sim.base_url) as client,
    ):
        first = campaign(client, source, poll=False, concurrency=2, rate_limit=200)
        task = asyncio.ensure_future(first.run())
        while sim.trigger_count < 10:  # noqa: ASYNC110 - the simulator has no event for it
            await asyncio.sleep(0.01)
        first.stop()
        stopped = await task
        assert stopped.interrupted and stopped.count("pending") > 0

        resumed = await campaign(client, source, poll=False).run()
        assert resumed.duplicates == 1 and resumed.exit_code == 0
        assert max(triggers_per_number(sim).values()) == 1
        last = read_csv(tmp_path / "c.results.csv")[-1]
        assert last["status"] == "duplicate" and "row 1" in last["note"]


async def test_allow_duplicates_dials_every_row(
    sim: Simulator, client: VoiceHubClient, tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "c.csv", [[number(1), "a"], [number(1), "b"]])
    summary = await campaign(client, source, poll=False, allow_duplicates=True).run()
    assert summary.duplicates == 0
    assert triggers_per_number(sim) == {number(1): 2}


# -- do-not-call lists ----------------------------------------------------------------------


async def test_suppressed_numbers_are_never_dialed(
    sim: Simulator, client: VoiceHubClient, tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "c.csv", [[number(i), f"n{i}"] for i in range(10)])
    plain = tmp_path / "dnc.txt"
    plain.write_text("# opted out by phone\n(415) 555-0003\n\n415 555 0007\n")
    table = write_csv(tmp_path / "dnc.csv", [["x", "+14155550005"]], header="name,Phone Number")
    summary = await campaign(client, source, poll=False, suppress=[plain, table]).run()
    dialed = triggers_per_number(sim)
    assert set(dialed) == {number(i) for i in range(10)} - {number(3), number(5), number(7)}
    assert summary.suppressed == 3 and summary.exit_code == 0
    statuses = {r["to"]: r["status"] for r in read_csv(tmp_path / "c.results.csv")}
    assert statuses[number(3)] == statuses[number(5)] == statuses[number(7)] == "suppressed"


async def test_a_bad_line_in_a_do_not_call_list_stops_before_any_call(
    sim: Simulator, client: VoiceHubClient, tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "c.csv", [[number(1), ""]])
    dnc = tmp_path / "dnc.txt"
    dnc.write_text("+14155550001\nnot a number\n+1415555\n")
    with pytest.raises(SuppressionError) as info:
        await campaign(client, source, poll=False, suppress=[dnc]).run()
    message = str(info.value)
    assert "line 2" in message and "line 3" in message and "not a number" in message
    assert sim.trigger_count == 0


def test_a_suppression_list_is_a_set_of_e164_numbers(tmp_path: Path) -> None:
    listing = tmp_path / "dnc.txt"
    listing.write_text("020 7946 0018\n+33 1 42 68 53 00\n")
    suppression = SuppressionList.read([listing], region="GB")
    assert suppression.numbers == {"+442079460018", "+33142685300"}


# -- redials ------------------------------------------------------------------------------------


async def test_busy_contacts_are_redialed_up_to_max_attempts(tmp_path: Path) -> None:
    config = SimulatorConfig(time_scale=200, lifecycle=lifecycle(busy=1.0))
    source = write_csv(tmp_path / "c.csv", [[number(i), ""] for i in range(6)])
    attempts_out = tmp_path / "attempts.csv"
    policy = RedialPolicy({"busy", "unanswered"}, after=0.3, max_attempts=3)
    async with (
        Simulator(config) as sim,
        VoiceHubClient(sim.api_key, base_url=sim.base_url) as client,
    ):
        summary = await asyncio.wait_for(
            campaign(client, source, redial=policy, attempts=attempts_out).run(), 120
        )
        assert triggers_per_number(sim) == {number(i): 3 for i in range(6)}
        # Never before the interval: each number's triggers are >= 0.3 s apart.
        received: dict[str, list[float]] = collections.defaultdict(list)
        for record in sim.triggers:
            assert record.to is not None
            received[record.to].append(record.received_at)
        for times in received.values():
            assert all(later - earlier >= 0.3 for earlier, later in itertools.pairwise(times))

        assert summary.redials == 12 and summary.exit_code == 0
        rows = read_csv(tmp_path / "c.results.csv")
        assert {(r["status"], r["attempts"]) for r in rows} == {("busy", "3")}
        lines = read_csv(attempts_out)
        assert len(lines) == 18
        assert [line["attempt"] for line in lines[:3]] == ["1", "2", "3"]
        assert len({line["call_id"] for line in lines}) == 18
        assert {line["status"] for line in lines} == {"busy"}

        # Done means done: a resume dials nobody again.
        again = await campaign(client, source, redial=policy).run()
        assert again.requests == 0 and sim.trigger_count == 18


async def test_redials_stop_when_the_contact_completes(tmp_path: Path) -> None:
    config = SimulatorConfig(time_scale=200, seed=5, lifecycle=lifecycle(busy=0.5, completed=0.5))
    source = write_csv(tmp_path / "c.csv", [[number(i), ""] for i in range(20)])
    attempts_out = tmp_path / "attempts.jsonl"
    policy = RedialPolicy({"busy"}, after=0.2, max_attempts=3)
    async with (
        Simulator(config) as sim,
        VoiceHubClient(sim.api_key, base_url=sim.base_url) as client,
    ):
        await asyncio.wait_for(
            campaign(client, source, redial=policy, attempts=attempts_out).run(), 120
        )
        counts = triggers_per_number(sim)
    assert max(counts.values()) <= 3 and len(counts) == 20
    rows = {r["to"]: r for r in read_csv(tmp_path / "c.results.csv")}
    for to, row in rows.items():
        assert int(row["attempts"]) == counts[to]
        if counts[to] < 3:
            assert row["status"] == "completed"
    assert sum(counts.values()) == len(attempts_out.read_text().splitlines())


async def test_an_ambiguous_trigger_is_never_redialed(tmp_path: Path) -> None:
    config = SimulatorConfig(time_scale=200, lifecycle=lifecycle(busy=1.0))
    source = write_csv(tmp_path / "c.csv", [[number(i), ""] for i in range(3)])
    policy = RedialPolicy({"busy", "unanswered", "failed"}, after=0.2, max_attempts=3)
    async with (
        Simulator(config) as sim,
        VoiceHubClient(sim.api_key, base_url=sim.base_url) as client,
    ):
        sim.inject(Fault.reset(create=True), endpoint="trigger")
        summary = await asyncio.wait_for(
            campaign(client, source, redial=policy, concurrency=1).run(), 120
        )
        counts = triggers_per_number(sim)
    assert summary.ambiguous == 1 and summary.exit_code == 1
    (ambiguous,) = [r for r in read_csv(tmp_path / "c.results.csv") if r["status"] == "ambiguous"]
    assert counts[ambiguous["to"]] == 1  # the simulator made that call busy: still not redialed
    assert sorted(counts.values()) == [1, 3, 3]


async def test_redials_due_after_the_horizon_wait_for_the_next_run(tmp_path: Path) -> None:
    config = SimulatorConfig(time_scale=200, lifecycle=lifecycle(busy=1.0))
    source = write_csv(tmp_path / "c.csv", [[number(i), ""] for i in range(4)])
    policy = RedialPolicy({"busy"}, after=3600)
    async with (
        Simulator(config) as sim,
        VoiceHubClient(sim.api_key, base_url=sim.base_url) as client,
    ):
        summary = await asyncio.wait_for(
            campaign(client, source, redial=policy, max_wait=600).run(), 60
        )
        assert summary.count("redial") == 4 and summary.horizon_reached
        assert summary.later == 4 and summary.exit_code == 1
        rows = read_csv(tmp_path / "c.results.csv")
        assert {(r["status"], r["attempts"]) for r in rows} == {("redial", "1")}
        # A resume an instant later never redials early, and ends at once.
        again = await asyncio.wait_for(
            campaign(client, source, redial=policy, max_wait=600).run(), 60
        )
        assert sim.trigger_count == 4 and again.count("redial") == 4


# -- the horizon -------------------------------------------------------------------------------


async def test_a_row_scheduled_years_ahead_does_not_hold_the_campaign(
    sim: Simulator, client: VoiceHubClient, tmp_path: Path
) -> None:
    source = write_csv(
        tmp_path / "c.csv",
        [[number(1), ""], [number(2), "2031-01-15T10:00Z"], [number(3), ""]],
        header="to,scheduled_at",
    )
    summary = await asyncio.wait_for(campaign(client, source).run(), 60)
    assert summary.horizon_reached and summary.later == 1
    assert summary.exit_code == 1 and summary.unfinished == 1
    rows = read_csv(tmp_path / "c.results.csv")
    assert rows[1]["status"] == "scheduled" and rows[1]["scheduled_at"] == "2031-01-15T10:00"
    assert "--max-wait" in rows[1]["note"] and not rows[0]["note"]
    assert {rows[0]["status"], rows[2]["status"]} <= FINAL

    resumed = await asyncio.wait_for(campaign(client, source).run(), 60)
    assert resumed.requests == 0 and resumed.later == 1 and resumed.horizon_reached


async def test_max_wait_leaves_live_calls_for_the_next_run(tmp_path: Path) -> None:
    slow = LifecycleConfig(queue_delay=(1.0, 2.0), ring_time=(1.0, 3.0), talk_time=(600.0, 900.0))
    source = write_csv(tmp_path / "c.csv", [[number(i), ""] for i in range(3)])
    async with (
        Simulator(SimulatorConfig(time_scale=1, lifecycle=slow)) as sim,
        VoiceHubClient(sim.api_key, base_url=sim.base_url) as client,
    ):
        summary = await asyncio.wait_for(campaign(client, source, max_wait=0.5).run(), 60)
        assert summary.horizon_reached and summary.exit_code == 1
        assert summary.live + summary.later == 3
        resumed = await asyncio.wait_for(campaign(client, source, max_wait=0.5).run(), 60)
        assert resumed.requests == 0 and sim.trigger_count == 3


# -- the journal of 0.1 -------------------------------------------------------------------------

#: The journal schema of voicehub-async 0.1 (schema_version 1), as it shipped.
SCHEMA_0_1 = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rows (
    row INTEGER PRIMARY KEY,        -- contact number in the file, from 1
    input_hash TEXT NOT NULL,       -- hash of the row's content as read
    number TEXT,                    -- E.164 once valid; as written when invalid
    state TEXT NOT NULL,
    call_id TEXT,
    status TEXT,                    -- the call's status as the service spelled it
    attempts INTEGER NOT NULL DEFAULT 0,  -- trigger requests for this row, all runs
    error TEXT,
    recording_url TEXT,
    scheduled_at TEXT,              -- UTC yyyy-mm-ddThh:mm when sent scheduled
    sent_at REAL,                   -- when the last sending mark was made
    queued_at REAL,                 -- when the trigger's answer came back
    started_at REAL,                -- when the call was first seen started
    finished_at REAL,               -- when the row reached its final state
    updated_at REAL NOT NULL
);
"""


async def test_a_journal_written_by_0_1_is_migrated_and_resumed(
    sim: Simulator, client: VoiceHubClient, tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "c.csv", [[number(i), f"n{i}"] for i in range(1, 7)])
    # Row hashes exactly as 0.1 computed them (its reader's cells, joined by
    # \x1f, blake2b-96): a resume must recognise the rows of a real old journal.
    digests = [
        hashlib.blake2b(f"{number(i)}\x1fn{i}".encode(), digest_size=12).hexdigest()
        for i in range(1, 7)
    ]
    assert digests == [row.digest for row in read_contacts(source)]
    journal = tmp_path / "old.db"
    # As 0.1 left it after a crash: two calls placed (one final, one live),
    # a row cut off mid-trigger, a refused row, a row never reached.
    completed = await client.trigger(_request(number(1)))
    live = await client.trigger(_request(number(2)))
    with sqlite3.connect(journal) as db:
        db.executescript(SCHEMA_0_1)
        sha256 = hashlib.sha256(source.read_bytes()).hexdigest()
        db.executemany(
            "INSERT INTO meta VALUES (?, ?)",
            [("schema_version", "1"), ("source_sha256", sha256), ("agent_id", AGENT),
             ("source_name", "c.csv")],
        )  # fmt: skip
        db.executemany(
            "INSERT INTO rows (row, input_hash, number, state, call_id, status, attempts, error, "
            "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0)",
            [
                (1, digests[0], number(1), "completed", completed.id, "Completed", 1, None),
                (2, digests[1], number(2), "queued", live.id, "Queued", 1, None),
                (3, digests[2], number(3), "sending", None, None, 0, None),
                (4, digests[3], number(4), "not_sent", None, None, 1, "400: agent is busy"),
                (5, digests[4], "12", "invalid", None, None, 0, "to: not a valid phone number"),
            ],
        )
    before = sim.trigger_count

    summary = await campaign(client, source, journal=journal, attempts=tmp_path / "a.csv").run()

    assert summary.resumed
    # Only the refused row and the row never reached were dialed.
    assert sim.trigger_count == before + 2
    assert triggers_per_number(sim)[number(4)] == 1 and triggers_per_number(sim)[number(6)] == 1
    rows = read_csv(tmp_path / "c.results.csv")
    assert rows[0]["status"] == "completed" and rows[0]["call_id"] == completed.id
    assert rows[1]["status"] in FINAL and rows[1]["call_id"] == live.id
    assert rows[2]["status"] == "ambiguous" and rows[2]["attempts"] == "1"
    assert rows[3]["status"] in FINAL and rows[3]["attempts"] == "1"
    assert rows[4]["status"] == "invalid" and rows[4]["attempts"] == "0"
    with sqlite3.connect(journal) as db:
        version = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        attempts = db.execute("SELECT row, attempt, state FROM attempts ORDER BY row").fetchall()
    assert version == ("2",)
    assert [(row, attempt) for row, attempt, _ in attempts] == [(1, 1), (2, 1), (3, 1), (4, 1),
                                                                 (6, 1)]  # fmt: skip
    assert attempts[2][2] == "ambiguous"


async def test_a_journal_from_a_newer_version_is_refused(
    client: VoiceHubClient, tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "c.csv", [[number(1), ""]])
    journal = tmp_path / "new.db"
    with sqlite3.connect(journal) as db:
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("INSERT INTO meta VALUES ('schema_version', '9')")
    with pytest.raises(JournalError, match="newer voicehub-async"):
        await campaign(client, source, journal=journal).run()
    with sqlite3.connect(journal) as db:  # untouched
        assert db.execute("SELECT value FROM meta").fetchall() == [("9",)]


def _request(to: str) -> Any:
    from voicehub_async import CallRequest

    return CallRequest(to=to, agent_id=AGENT)


# -- calling days ----------------------------------------------------------------------------


async def test_calling_days_schedule_weekend_rows_for_monday_and_say_so(
    sim: Simulator, client: VoiceHubClient, tmp_path: Path
) -> None:
    from datetime import datetime, timezone

    from voicehub_async.campaign import CallingHours

    saturday_noon = datetime(2030, 6, 8, 19, 0, tzinfo=timezone.utc)  # 12:00 in San Francisco
    source = write_csv(
        tmp_path / "c.csv",
        [[number(1), ""], [number(2), "2030-06-08T20:00Z"]],
        header="to,scheduled_at",
    )
    hours = CallingHours.parse("09:00-17:00", days="mon-fri")
    summary = await campaign(
        client, source, poll=False, calling_hours=hours, now=lambda: saturday_noon
    ).run()
    assert summary.count("scheduled") == 2
    monday_nine = "2030-06-10T16:00"  # 09:00 in San Francisco
    assert {t.scheduled_at for t in sim.triggers} == {monday_nine}
    rows = read_csv(tmp_path / "c.results.csv")
    assert [r["scheduled_at"] for r in rows] == [monday_nine, monday_nine]
    assert not rows[0]["note"]
    assert rows[1]["note"] == (
        f"scheduled_at 2030-06-08T20:00 moved to {monday_nine}: outside the calling days"
    )
