"""Campaigns and live calls, against a real simulator over real sockets: the
live-call cap, the service's concurrent-call 429, stopping early, and
ambiguous rows reconciled from webhooks."""

from __future__ import annotations

import csv
import socket
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from voicehub_async import VoiceHubClient
from voicehub_async.campaign import Campaign
from voicehub_async.cli import main
from voicehub_async.simulator import (
    Fault,
    LifecycleConfig,
    Simulator,
    SimulatorConfig,
)

AGENT = "agent-1"
#: Calls last a fraction of a second at this scale; every call completes.
FAST = LifecycleConfig(
    queue_delay=(1.0, 2.0),
    ring_time=(1.0, 3.0),
    talk_time=(5.0, 20.0),
    outcomes={"completed": 1.0},
)
SECRET = "whsec-test-0123456789"


def number(i: int) -> str:
    return f"+1415555{i:04d}"


def write_contacts(path: Path, count: int) -> Path:
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["to", "name"])
        for i in range(count):
            writer.writerow([number(i), f"n{i}"])
    return path


def journal_rows(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT row, state, call_id, note FROM rows ORDER BY row").fetchall()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_campaign(client: VoiceHubClient, source: Path, **options: Any) -> Campaign:
    options.setdefault("agent_id", AGENT)
    options.setdefault("poll_interval", 0.05)
    options.setdefault("max_poll_interval", 0.2)
    return Campaign(client, source, **options)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(SimulatorConfig(time_scale=200, lifecycle=FAST)) as simulator:
        yield simulator


@pytest.fixture
async def client(sim: Simulator) -> AsyncIterator[VoiceHubClient]:
    async with VoiceHubClient(sim.api_key, base_url=sim.base_url) as made:
        yield made


# -- stop early ------------------------------------------------------------------------


async def test_an_unreachable_service_stops_the_campaign_after_a_few_attempts(
    tmp_path: Path,
) -> None:
    source = write_contacts(tmp_path / "contacts.csv", 300)
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    async with VoiceHubClient("sk-any-key-0000", base_url=dead) as client:
        campaign = make_campaign(client, source, concurrency=5)
        summary = await campaign.run()
    cause = campaign.live.cause
    assert cause is not None and cause.kind == "unreachable"
    assert "cannot reach 127.0.0.1" in cause.message and "\n" not in cause.message
    # 20 failures in a row trip the breaker; at most the other workers' attempts follow.
    assert summary.requests <= 20 + 5
    assert summary.exit_code != 0
    # Untouched rows are pending: a resume dials them.
    assert summary.counts.get("pending", 0) >= 290
    assert summary.count("completed", "ambiguous") == 0


async def test_after_stopping_early_a_resume_dials_every_row_once(
    sim: Simulator, client: VoiceHubClient, tmp_path: Path
) -> None:
    source = write_contacts(tmp_path / "contacts.csv", 40)
    dead = f"http://127.0.0.1:{free_port()}"
    async with VoiceHubClient(sim.api_key, base_url=dead) as unreachable:
        first = await make_campaign(unreachable, source, concurrency=4).run()
    assert first.interrupted or first.counts.get("pending", 0)
    summary = await make_campaign(client, source).run()
    assert summary.ok and summary.counts == {"completed": 40}
    assert sorted(sim.placed_counts().values()) == [1] * 40


def test_the_command_prints_the_cause_in_one_line_and_exits_non_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VOICEHUB_API_KEY", "sk-campaign-SECRET-0123456789")
    source = write_contacts(tmp_path / "contacts.csv", 100)
    code = main(
        [
            "campaign", str(source), "--agent", AGENT, "--concurrency", "3",
            "--base-url", f"http://127.0.0.1:{free_port()}", "--progress-interval", "0.05",
        ]
    )  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 1
    # The progress lines say what is wrong instead of showing a rate.
    lines = [line for line in out.splitlines() if line.startswith("campaign [")]
    assert any("waiting: cannot reach 127.0.0.1" in line for line in lines)
    # Nothing was placed: no line claims a rate.
    assert all(" 0.0 calls/s" in line for line in lines if "calls/s" in line)
    causes = [line for line in err.splitlines() if "stopped dialing" in line]
    assert len(causes) == 1 and "cannot reach 127.0.0.1" in causes[0]
    assert "SECRET" not in out + err and "Traceback" not in out + err
    with (tmp_path / "contacts.results.csv").open() as results:
        states = [row["status"] for row in csv.DictReader(results)]
    assert len(states) == 100 and states.count("pending") >= 90


# -- webhooks and reconciliation ----------------------------------------------------------


async def test_an_ambiguous_trigger_is_reconciled_from_the_webhooks(tmp_path: Path) -> None:
    port = free_port()
    config = SimulatorConfig(
        time_scale=200,
        lifecycle=FAST,
        webhook_url=f"http://127.0.0.1:{port}/voicehub/events",
        webhook_secret=SECRET,
    )
    source = write_contacts(tmp_path / "contacts.csv", 6)
    async with Simulator(config) as sim:
        # The first trigger creates its call, then the connection drops.
        sim.inject(Fault.reset(create=True), endpoint="trigger")
        async with VoiceHubClient(sim.api_key, base_url=sim.base_url) as client:
            campaign = make_campaign(
                client,
                source,
                concurrency=1,
                webhook_port=port,
                webhook_secret=SECRET,
                journal=tmp_path / "run.db",
            )
            summary = await campaign.run()
        created = [t for t in sim.triggers if t.created]
    assert len(created) == 6  # the dropped trigger did create its call
    dropped = sim.triggers[0]
    assert dropped.answered_status is None and dropped.call_id is not None
    rows = {row: (state, call_id, note) for row, state, call_id, note in journal_rows(
        tmp_path / "run.db"
    )}  # fmt: skip
    state, call_id, note = rows[1]
    assert call_id == dropped.call_id
    assert state == "completed" and note is not None and "reconciled" in note
    assert summary.ok and summary.ambiguous == 0
    with (tmp_path / "contacts.results.csv").open() as results:
        first = next(csv.DictReader(results))
    assert first["call_id"] == dropped.call_id and "reconciled" in first["note"]
    assert first["status"] == "completed"


async def test_without_webhooks_an_ambiguous_trigger_stays_ambiguous(
    sim: Simulator, client: VoiceHubClient, tmp_path: Path
) -> None:
    sim.inject(Fault.reset(create=True), endpoint="trigger")
    source = write_contacts(tmp_path / "contacts.csv", 3)
    summary = await make_campaign(client, source, concurrency=1).run()
    assert summary.ambiguous == 1 and summary.exit_code == 1


def test_progress_shows_one_rate_and_what_dialing_waits_for() -> None:
    from voicehub_async.campaign.progress import plain_line
    from voicehub_async.campaign.summary import CampaignProgress

    base: dict[str, Any] = dict(
        phase="dialing", total=10, processed=4, sent=4, queued=1, in_progress=1,
        completed=2, failed=0, invalid=0, ambiguous=0, retries=0, rate=2.5, eta=2.4,
        elapsed=3.0,
    )  # fmt: skip
    assert "2.5 calls/s" in plain_line(CampaignProgress(**base))
    waiting = CampaignProgress(**{**base, "rate": 0.0, "waiting": "cannot reach h (refused)"})
    line = plain_line(waiting)
    assert "waiting: cannot reach h (refused)" in line and "calls/s" not in line
    capped = plain_line(CampaignProgress(**{**base, "live": 5, "live_limit": 5}))
    assert "2.5 calls/s" in capped and "live 5/5" in capped
    # More rows dealt with than the estimate: the bar's end follows.
    assert "rows 12/12" in plain_line(CampaignProgress(**{**base, "processed": 12}))


# -- the concurrent-call 429 -----------------------------------------------------------


async def test_a_concurrent_call_429_waits_for_a_call_to_end_and_keeps_the_pace(
    sim: Simulator, client: VoiceHubClient, tmp_path: Path
) -> None:
    limit = Fault.status(429, {"message": "Concurrent call limit exceeded"})
    sim.inject(limit, endpoint="trigger", times=6)
    source = write_contacts(tmp_path / "contacts.csv", 30)
    campaign = make_campaign(client, source, concurrency=4, max_retries=1)
    summary = await campaign.run()
    # Not failed after max_retries: each refused trigger waited and went again.
    assert summary.ok and summary.counts == {"completed": 30}
    assert summary.rate_limited == 6
    assert sorted(sim.placed_counts().values()) == [1] * 30
    dispatcher = campaign._dispatcher
    assert dispatcher is not None and dispatcher.stats.rate is None  # the pace never halved
    assert campaign.live.concurrency_limited_count == 6


async def test_a_plain_429_still_slows_everybody_down(
    sim: Simulator, client: VoiceHubClient, tmp_path: Path
) -> None:
    sim.inject(Fault.rate_limited(retry_after=0), endpoint="trigger", times=1)
    source = write_contacts(tmp_path / "contacts.csv", 10)
    campaign = make_campaign(client, source, concurrency=2)
    summary = await campaign.run()
    assert summary.ok and summary.rate_limited == 1
    dispatcher = campaign._dispatcher
    assert dispatcher is not None and dispatcher.stats.rate is not None
    assert campaign.live.concurrency_limited_count == 0


# -- the live-call cap, counted by the simulator -------------------------------------------


async def test_max_live_is_never_exceeded_as_the_simulator_counts_even_with_ambiguous_triggers(
    tmp_path: Path,
) -> None:
    async with Simulator(SimulatorConfig(time_scale=200, lifecycle=FAST)) as sim:
        # Ambiguous triggers: each creates a live call whose fate the campaign
        # never learns (no webhooks); their slots must stay taken meanwhile.
        sim.inject(Fault.reset(create=True), endpoint="trigger", times=3)
        source = write_contacts(tmp_path / "contacts.csv", 80)
        async with VoiceHubClient(sim.api_key, base_url=sim.base_url) as client:
            # Calls last well under 1 s here: 1 s outlives any of them.
            campaign = make_campaign(client, source, concurrency=20, max_live=5, max_call_time=1.0)
            summary = await campaign.run()
        samples = [t.live_calls for t in sim.triggers]
        assert summary.counts == {"completed": 77, "ambiguous": 3}
        assert len(samples) == 80 and max(samples) <= 5 and sim.max_live_seen() <= 5
        assert max(samples) == 5  # the cap was used, not merely respected
        slots = campaign.live.slots
        assert slots is not None and slots.expired == 3 and slots.in_use == 0


async def test_the_services_concurrent_call_limit_without_max_live_completes_at_pace(
    tmp_path: Path,
) -> None:
    from voicehub_async.simulator import FaultConfig

    config = SimulatorConfig(
        time_scale=200, lifecycle=FAST, faults=FaultConfig(max_live_calls=5)
    )
    async with Simulator(config) as sim:
        source = write_contacts(tmp_path / "contacts.csv", 80)
        async with VoiceHubClient(sim.api_key, base_url=sim.base_url) as client:
            campaign = make_campaign(client, source, concurrency=20, max_retries=1)
            summary = await campaign.run()
        assert summary.ok and summary.counts == {"completed": 80}
        assert sorted(sim.placed_counts().values()) == [1] * 80
        # The 429s made triggers wait for calls to end; they did not halve
        # the pace, and the campaign learnt the limit instead of hitting it
        # on every trigger.
        dispatcher = campaign._dispatcher
        assert dispatcher is not None and dispatcher.stats.rate is None
        slots = campaign.live.slots
        assert slots is not None and slots.limit is not None and slots.limit <= 5
        assert 0 < summary.rate_limited < 40


def test_webhook_port_without_a_secret_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VOICEHUB_API_KEY", "sk-campaign-SECRET-0123456789")
    monkeypatch.delenv("VOICEHUB_WEBHOOK_SECRET", raising=False)
    source = write_contacts(tmp_path / "contacts.csv", 3)
    code = main(["campaign", str(source), "--agent", AGENT, "--webhook-port", "0"])
    out, err = capsys.readouterr()
    assert code == 2 and "VOICEHUB_WEBHOOK_SECRET" in err
    assert "campaign [" not in out + err  # no progress line before a usage error
    assert not (tmp_path / "contacts.results.journal.db").exists()


async def test_a_403_stops_dialing_and_leaves_the_rest_pending(
    sim: Simulator, client: VoiceHubClient, tmp_path: Path
) -> None:
    sim.inject(Fault.status(403, {"message": "forbidden"}), endpoint="trigger", times=50)
    source = write_contacts(tmp_path / "contacts.csv", 50)
    campaign = make_campaign(client, source, concurrency=1)
    summary = await campaign.run()
    cause = campaign.live.cause
    assert cause is not None and cause.kind == "refused" and "403" in cause.message
    assert summary.requests == 1 and summary.counts.get("pending", 0) == 49
    assert summary.exit_code == 1


async def test_webhooks_free_live_slots_without_waiting_for_a_poll(tmp_path: Path) -> None:
    import asyncio

    port = free_port()
    config = SimulatorConfig(
        time_scale=200,
        lifecycle=FAST,
        webhook_url=f"http://127.0.0.1:{port}/",
        webhook_secret=SECRET,
    )
    source = write_contacts(tmp_path / "contacts.csv", 30)
    async with Simulator(config) as sim:
        async with VoiceHubClient(sim.api_key, base_url=sim.base_url) as client:
            campaign = make_campaign(
                client,
                source,
                max_live=3,
                # The first read of a call would come after a minute: every
                # end the campaign sees before that came from a webhook.
                poll_interval=60.0,
                max_poll_interval=60.0,
                webhook_port=port,
                webhook_secret=SECRET,
            )
            summary = await asyncio.wait_for(campaign.run(), 120)
        assert summary.ok and summary.counts == {"completed": 30}
        assert sim.max_live_seen() <= 3
        assert sim.request_count["status"] == 0  # no poll was needed
