"""Campaigns against a real simulator: bad rows, the journal, resuming, calling hours,
recordings, and the library API's summary."""

from __future__ import annotations

import asyncio
import csv
import sqlite3
from collections.abc import AsyncIterator, Iterable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from voicehub_async import CallRequest, VoiceHubClient
from voicehub_async.campaign import CallingHours, Campaign, JournalMismatchError
from voicehub_async.simulator import (
    Fault,
    FaultConfig,
    LifecycleConfig,
    Simulator,
    SimulatorConfig,
)

AGENT = "agent-1"
#: Calls play out in well under a second at this scale.
FAST = LifecycleConfig(queue_delay=(1.0, 2.0), ring_time=(1.0, 3.0), talk_time=(5.0, 20.0))


def number(i: int) -> str:
    return f"+1415555{i:04d}"


def write_csv(path: Path, rows: Iterable[Iterable[object]], header: str = "to,name") -> Path:
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(header.split(","))
        writer.writerows(rows)
    return path


def read_results(path: Path) -> list[dict[str, str]]:
    with path.open() as stream:
        return list(csv.DictReader(stream))


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimulatorConfig(time_scale=200, lifecycle=FAST)) as simulator:
        yield simulator


@pytest.fixture
async def client(sim: Simulator) -> AsyncIterator[VoiceHubClient]:
    async with VoiceHubClient(sim.api_key, base_url=sim.base_url) as made:
        yield made


def campaign(client: VoiceHubClient, source: Path, **options: Any) -> Campaign:
    options.setdefault("agent_id", AGENT)
    options.setdefault("poll_interval", 0.05)
    options.setdefault("max_poll_interval", 0.2)
    return Campaign(client, source, **options)


async def test_every_row_gets_an_outcome_and_bad_rows_are_recorded(
    sim: Simulator, client: VoiceHubClient, tmp_path: Path
) -> None:
    past = (datetime.now(timezone.utc) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%MZ")
    source = write_csv(
        tmp_path / "contacts.csv",
        [
            [number(1), "", "Ada"],
            ["", "", "no number"],
            ["+1 415 555", "", "too short"],
            [number(2), past, "in the past"],
            [number(3), "next tuesday", "unreadable time"],
            [number(4), "", "Alan"],
        ],
        header="to,scheduled_at,name",
    )
    summary = await campaign(client, source).run()

    assert summary.total == 6
    assert summary.invalid == 4
    assert summary.exit_code == 0  # invalid rows are an outcome, reported
    results = read_results(tmp_path / "contacts.results.csv")
    assert [r["row"] for r in results] == ["1", "2", "3", "4", "5", "6"]
    errors = {r["row"]: r["error"] for r in results if r["status"] == "invalid"}
    assert "no number" in errors["2"]
    assert errors["3"].startswith("to:")
    assert errors["4"].startswith("scheduled_at:") and "future" in errors["4"]
    assert errors["5"].startswith("scheduled_at:")
    final = {"completed", "unanswered", "busy", "failed", "cancelled"}
    assert {results[0]["status"], results[5]["status"]} <= final
    assert results[0]["call_id"] and results[0]["attempts"] == "1"
    # Only the two good rows reached the service; the context went with them.
    assert sorted(t.to for t in sim.triggers if t.to) == [number(1), number(4)]
    assert {t.context["name"] for t in sim.triggers} == {"Ada", "Alan"}


@pytest.mark.parametrize("durability", ["normal", "full"])
async def test_the_sending_mark_is_committed_before_the_trigger_goes_out(
    client: VoiceHubClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, durability: str
) -> None:
    source = write_csv(tmp_path / "c.csv", [[number(i), f"n{i}"] for i in range(40)])
    journal = tmp_path / "c.results.journal.db"
    seen: list[str] = []
    real_trigger = client.trigger

    async def checking_trigger(request: CallRequest, **options: Any) -> Any:
        # Another connection sees committed data only.
        with sqlite3.connect(journal) as db:
            row = db.execute("SELECT state FROM rows WHERE number = ?", (request.to,)).fetchone()
        seen.append(row[0] if row else "missing")
        return await real_trigger(request, **options)

    monkeypatch.setattr(client, "trigger", checking_trigger)
    summary = await campaign(
        client, source, poll=False, concurrency=10, durability=durability
    ).run()
    assert summary.placed == 40
    assert seen == ["sending"] * 40


async def test_resume_follows_placed_calls_and_dials_nothing_again(
    sim: Simulator, client: VoiceHubClient, tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "c.csv", [[number(i), ""] for i in range(30)])
    first = await campaign(client, source, poll=False).run()
    assert first.count("queued") == 30
    assert first.exit_code == 0  # without polling, queued is the outcome
    assert sim.created_count == 30

    second = await campaign(client, source).run()
    assert second.resumed
    assert second.requests == 0
    assert sim.created_count == 30
    assert second.count("completed", "unanswered", "busy", "failed") == 30
    statuses = {r["status"] for r in read_results(tmp_path / "c.results.csv")}
    assert statuses <= {"completed", "unanswered", "busy", "failed"}


async def test_rows_left_sending_are_ambiguous_and_only_redialed_on_request(
    sim: Simulator, client: VoiceHubClient, tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "c.csv", [[number(i), ""] for i in range(10)])
    journal = tmp_path / "j.db"
    await campaign(client, source, poll=False, journal=journal).run()
    # As a crash between the mark and the answer leaves them:
    with sqlite3.connect(journal) as db:
        db.execute("UPDATE rows SET state = 'sending', call_id = NULL WHERE row IN (3, 7)")
    triggers = sim.trigger_count

    resumed = await campaign(client, source, poll=False, journal=journal).run()
    assert sim.trigger_count == triggers
    assert resumed.ambiguous == 2
    assert resumed.exit_code == 1
    results = read_results(tmp_path / "c.results.csv")
    assert [r["row"] for r in results if r["status"] == "ambiguous"] == ["3", "7"]
    assert "may have been placed" in results[2]["error"]

    again = await campaign(client, source, poll=False, journal=journal).run()
    assert sim.trigger_count == triggers and again.ambiguous == 2  # still not redialed

    redialed = await campaign(
        client, source, poll=False, journal=journal, redial_ambiguous=True
    ).run()
    assert sim.trigger_count == triggers + 2
    assert redialed.ambiguous == 0 and redialed.exit_code == 0
    assert sim.calls_placed_to(number(2)) == 2 and sim.calls_placed_to(number(1)) == 1


async def test_an_ambiguous_trigger_is_reported_and_never_retried(
    sim: Simulator, client: VoiceHubClient, tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "c.csv", [[number(i), ""] for i in range(5)])
    sim.inject(Fault.reset(create=True), endpoint="trigger")
    summary = await campaign(client, source, poll=False, concurrency=1).run()
    assert summary.ambiguous == 1 and summary.exit_code == 1
    assert sim.created_count == 5  # the reset one was created too...
    assert sim.trigger_count == 5  # ...and was not sent again
    rerun = await campaign(client, source, poll=False, concurrency=1).run()
    assert rerun.requests == 0 and rerun.ambiguous == 1


async def test_refused_rows_are_not_sent_and_retried_on_resume(
    sim: Simulator, client: VoiceHubClient, tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "c.csv", [[number(i), ""] for i in range(4)])
    sim.inject(Fault.status(400, {"message": "agent is busy"}), endpoint="trigger")
    first = await campaign(client, source, poll=False, concurrency=1).run()
    assert first.not_sent == 1 and first.exit_code == 1
    refused = [r for r in read_results(tmp_path / "c.results.csv") if r["status"] == "not_sent"]
    assert len(refused) == 1 and "agent is busy" in refused[0]["error"]
    second = await campaign(client, source, poll=False).run()
    assert second.requests == 1 and second.exit_code == 0
    assert max(sim.placed_counts().values()) == 1


async def test_a_journal_of_another_file_is_refused_before_sending(
    sim: Simulator, client: VoiceHubClient, tmp_path: Path
) -> None:
    journal = tmp_path / "shared.db"
    first = write_csv(tmp_path / "a.csv", [[number(1), ""]])
    await campaign(client, first, journal=journal, poll=False).run()
    other = write_csv(tmp_path / "b.csv", [[number(2), ""]])
    with pytest.raises(JournalMismatchError, match="another contacts file"):
        await campaign(client, other, journal=journal, poll=False).run()
    assert sim.calls_placed_to(number(2)) == 0


async def test_stop_finishes_in_flight_triggers_and_resume_completes(
    tmp_path: Path,
) -> None:
    config = SimulatorConfig(
        time_scale=200, lifecycle=FAST, faults=FaultConfig(latency=(0.02, 0.04))
    )
    source = write_csv(tmp_path / "c.csv", [[number(i), ""] for i in range(200)])
    async with (
        Simulator(config) as sim,
        VoiceHubClient(sim.api_key, base_url=sim.base_url) as client,
    ):
        running = campaign(client, source, concurrency=5)
        task = asyncio.ensure_future(running.run())
        while sim.trigger_count < 20:  # noqa: ASYNC110 - the simulator has no event for it
            await asyncio.sleep(0.01)
        running.stop()
        stopped = await task
        assert stopped.interrupted and stopped.exit_code == 1
        assert stopped.ambiguous == 0  # every trigger in flight got its answer
        assert stopped.count("sending") == 0
        assert stopped.total == 200 and stopped.count("pending") > 0

        resumed = await campaign(client, source, concurrency=20).run()
        assert resumed.exit_code == 0 and not resumed.interrupted
        assert resumed.count("completed", "unanswered", "busy", "failed") == 200
        assert max(sim.placed_counts().values()) == 1 and sim.created_count == 200


async def test_calling_hours_schedule_contacts_outside_their_window(
    sim: Simulator, client: VoiceHubClient, tmp_path: Path
) -> None:
    london = ZoneInfo("Europe/London")
    local_now = datetime.now(timezone.utc).astimezone(london)
    opens = (local_now + timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)
    closes = opens + timedelta(hours=1)
    closed_now = CallingHours.parse(f"{opens:%H:%M}-{closes:%H:%M}")
    source = write_csv(tmp_path / "c.csv", [["+442071838750", ""], ["+442071838751", ""]])
    summary = await campaign(client, source, poll=False, calling_hours=closed_now).run()
    assert summary.count("scheduled") == 2
    expected = opens.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M")
    assert {t.scheduled_at for t in sim.triggers} == {expected}
    assert {r["scheduled_at"] for r in read_results(tmp_path / "c.results.csv")} == {expected}


async def test_calling_hours_refuse_a_number_without_a_common_window(
    sim: Simulator, client: VoiceHubClient, tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "c.csv", [["+18005551234", ""]])  # US toll-free: every zone
    summary = await campaign(
        client, source, poll=False, calling_hours=CallingHours.parse("09:00-10:00")
    ).run()
    assert summary.invalid == 1 and sim.trigger_count == 0
    (row,) = read_results(tmp_path / "c.results.csv")
    assert "time zones" in row["error"]


async def test_recording_urls_are_stored(
    sim: Simulator, client: VoiceHubClient, tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "c.csv", [[number(i), ""] for i in range(12)])
    summary = await campaign(client, source, recordings=True).run()
    results = read_results(tmp_path / "c.results.csv")
    completed = [r for r in results if r["status"] == "completed"]
    assert completed and summary.count("completed") == len(completed)
    assert all(r["recording_url"].endswith(f"/recordings/{r['call_id']}.wav") for r in completed)
    assert all(not r["recording_url"] for r in results if r["status"] != "completed")


async def test_progress_snapshots_add_up(
    sim: Simulator, client: VoiceHubClient, tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "c.csv", [[number(i), ""] for i in range(50)] + [["x", ""]])
    running = campaign(client, source)
    snapshots = 0
    task = asyncio.ensure_future(running.run())
    while not task.done():
        p = running.progress()
        assert p.queued + p.in_progress + p.completed + p.failed <= p.processed
        snapshots += 1
        await asyncio.sleep(0.01)
    summary = await task
    final = running.progress()
    assert final.phase == "done" and final.processed == 51
    assert final.completed == summary.count("completed")
    assert final.failed == 51 - final.completed and final.invalid == 1
    assert snapshots


async def test_jsonl_contacts_with_their_own_agents_and_context(
    sim: Simulator, client: VoiceHubClient, tmp_path: Path
) -> None:
    source = tmp_path / "c.jsonl"
    source.write_text(
        '{"to": "+14155550001", "agent_id": "agent-a", "context": {"tier": "gold"}, "n": 1}\n'
        '{"to": "+14155550002", "from": "+14155559999", "n": 2}\n'
        "\n"
        "this is not json\n"
    )
    summary = await campaign(client, source, poll=False, results=tmp_path / "r.jsonl").run()
    assert summary.total == 3 and summary.invalid == 1
    by_number = {t.to: t for t in sim.triggers}
    assert by_number["+14155550001"].agent_id == "agent-a"
    assert by_number["+14155550001"].context == {"tier": "gold", "n": 1}
    assert by_number["+14155550002"].agent_id == AGENT
    assert by_number["+14155550002"].from_number == "+14155559999"
    lines = (tmp_path / "r.jsonl").read_text().splitlines()
    assert len(lines) == 3 and '"status": "invalid"' in lines[2] and "not JSON" in lines[2]


async def test_numbers_without_a_country_code_use_the_default_region(
    sim: Simulator, tmp_path: Path
) -> None:
    source = write_csv(tmp_path / "c.csv", [["(415) 555-0101", ""], ["020 7183 8750", ""]])
    async with VoiceHubClient(sim.api_key, base_url=sim.base_url, default_region="US") as us:
        summary = await campaign(us, source, poll=False).run()
    assert summary.count("queued") == 1 and summary.invalid == 1
    assert [t.to for t in sim.triggers] == ["+14155550101"]
