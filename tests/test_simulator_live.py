"""The simulator's live-call cap, its live-call count per trigger, the trigger
log file and the fields of its webhook events: what campaign tests build on."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from voicehub_async.simulator import (
    Fault,
    FaultConfig,
    LifecycleConfig,
    ManualClock,
    Simulator,
    SimulatorConfig,
    SimulatorThread,
)
from voicehub_async.simulator.triggerlog import TriggerLogFile

KEY = "sim-key"
OTHER_KEY = "other-key"
TRIGGER = "/api/v1/calls/api-call"
# 2 s queued, 3 s ringing, 10 s talking: a call is live for 15 simulated seconds.
FIXED = LifecycleConfig(
    queue_delay=(2, 2), ring_time=(3, 3), talk_time=(10, 10), outcomes={"completed": 1}
)


def number(n: int) -> str:
    return f"+1415555{n:04d}"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(wall_start=datetime(2030, 1, 1, 12, 0, 10, tzinfo=timezone.utc).timestamp())


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def trigger(
    session: aiohttp.ClientSession, sim: Simulator, to: str, key: str = KEY, **extra: Any
) -> tuple[int, Any]:
    body = {"to": to, "agentId": "agent-1", **extra}
    async with session.post(
        sim.base_url + TRIGGER, json=body, headers={"x-dq-api-key": key}
    ) as response:
        return response.status, await response.json(content_type=None)


def capped(cap: int | None, **faults: Any) -> SimulatorConfig:
    return SimulatorConfig(
        time_scale=1.0,
        lifecycle=FIXED,
        extra_api_keys=frozenset({OTHER_KEY}),
        faults=FaultConfig(max_live_calls=cap, **faults),
    )


# -- the cap ----------------------------------------------------------------------------------


async def test_the_cap_answers_429_and_creates_nothing_until_a_call_ends(
    clock: ManualClock, session: aiohttp.ClientSession
) -> None:
    async with Simulator(capped(2), clock=clock, wall_clock=clock.wall) as sim:
        assert [(await trigger(session, sim, number(n)))[0] for n in (1, 2)] == [200, 200]
        code, answer = await trigger(session, sim, number(3))
        assert code == 429
        assert answer == {"message": "concurrent call limit exceeded"}
        assert sim.created_count == 2 and sim.calls_placed_to(number(3)) == 0
        refused = sim.triggers[-1]
        assert (refused.created, refused.call_id, refused.answered_status) == (False, None, 429)
        # The cap is per key: another key of the account has its own.
        assert (await trigger(session, sim, number(4), key=OTHER_KEY))[0] == 200
        assert sim.live_calls() == 2 and sim.live_calls(OTHER_KEY) == 1
        clock.advance(14.9)  # still talking
        assert (await trigger(session, sim, number(3)))[0] == 429
        clock.advance(0.2)  # both calls completed: their places are free
        assert sim.live_calls() == 0
        assert [(await trigger(session, sim, number(n)))[0] for n in (3, 5, 6)] == [200, 200, 429]


async def test_pinned_statuses_decide_what_is_live(
    clock: ManualClock, session: aiohttp.ClientSession
) -> None:
    async with Simulator(capped(2), clock=clock, wall_clock=clock.wall) as sim:
        ids = [(await trigger(session, sim, number(n)))[1]["id"] for n in (1, 2)]
        sim.set_status(ids[0], "busy")  # ended early: its place is free at once
        assert sim.live_calls() == 1
        assert (await trigger(session, sim, number(3)))[0] == 200
        # An undocumented status is not final: the call stays live past its timeline.
        sim.set_status(ids[1], "voicemail")
        clock.advance(60)
        assert sim.live_calls() == 1
        sim.set_status(ids[1], None)  # back to its timeline, which ended long ago
        assert sim.live_calls() == 0


async def test_a_changed_outcome_moves_the_end_of_a_live_call(
    clock: ManualClock, session: aiohttp.ClientSession
) -> None:
    async with Simulator(capped(None), clock=clock, wall_clock=clock.wall) as sim:
        first = (await trigger(session, sim, number(1)))[1]["id"]
        sim.set_outcome(first, "busy")  # would end after its 2 s queue...
        sim.set_outcome(first, "completed")  # ...but talks after all: ends at 15 s
        clock.advance(0.5)
        second = (await trigger(session, sim, number(2)))[1]["id"]
        sim.set_outcome(second, "busy")  # ends at 0.5 + 2 s
        clock.advance(2.5)  # 3 s: the first still queued or ringing, the second busy
        assert (sim.status_of(first), sim.status_of(second)) == ("Started", "Busy")
        assert sim.live_calls() == 1
        clock.advance(12.5)  # 15.5 s: the first completed too
        assert sim.live_calls() == 0


async def test_a_scheduled_call_is_live_from_its_trigger(
    clock: ManualClock, session: aiohttp.ClientSession
) -> None:
    async with Simulator(capped(1), clock=clock, wall_clock=clock.wall) as sim:
        at = datetime.fromtimestamp(clock.wall(), timezone.utc) + timedelta(minutes=5)
        when = at.strftime("%Y-%m-%dT%H:%M")
        code, answer = await trigger(session, sim, number(1), scheduledAt=when)
        assert (code, answer["status"]) == (200, "Scheduled")
        assert (await trigger(session, sim, number(2)))[0] == 429


async def test_no_cap_by_default(clock: ManualClock, session: aiohttp.ClientSession) -> None:
    async with Simulator(capped(None), clock=clock, wall_clock=clock.wall) as sim:
        codes = [(await trigger(session, sim, number(n)))[0] for n in range(30)]
        assert codes == [200] * 30 and sim.max_live_seen() == 30


# -- the live count at every trigger ----------------------------------------------------------


async def test_every_trigger_records_the_live_calls_of_its_key(
    clock: ManualClock, session: aiohttp.ClientSession
) -> None:
    async with Simulator(capped(3), clock=clock, wall_clock=clock.wall) as sim:
        for n in range(5):
            await trigger(session, sim, number(n))
        clock.advance(16)
        await trigger(session, sim, number(9))
        await trigger(session, sim, number(10), key=OTHER_KEY)
        # Counting the call a trigger creates; a refused trigger sees the cap.
        assert [t.live_calls for t in sim.triggers] == [1, 2, 3, 3, 3, 1, 1]
        assert sim.max_live_seen() == 3 and sim.max_live_seen(OTHER_KEY) == 1


async def test_a_trigger_refused_before_processing_is_sampled_too(
    clock: ManualClock, session: aiohttp.ClientSession
) -> None:
    async with Simulator(capped(None), clock=clock, wall_clock=clock.wall) as sim:
        await trigger(session, sim, number(1))
        sim.inject(Fault.status(503), endpoint="trigger")
        assert (await trigger(session, sim, number(2)))[0] == 503
        sim.inject(Fault.reset(create=True), endpoint="trigger")
        with pytest.raises(aiohttp.ClientConnectionError):
            await trigger(session, sim, number(3))
        # The reset-after-create trigger placed a call the client never heard of:
        # it is live all the same, which is what a client-side cap must allow for.
        assert [t.live_calls for t in sim.triggers] == [1, 1, 2]
        assert sim.live_calls() == 2


def test_the_thread_exposes_the_live_count() -> None:
    import urllib.request

    with SimulatorThread(capped(1)) as sim:
        request = urllib.request.Request(
            sim.base_url + TRIGGER,
            data=json.dumps({"to": number(1), "agentId": "a"}).encode(),
            headers={"x-dq-api-key": KEY, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as answer:
            call_id = json.loads(answer.read())["id"]
        assert sim.live_calls() == 1 and sim.max_live_seen() == 1
        sim.set_status(call_id, "completed")  # from the test's thread
        assert sim.live_calls() == 0


# -- webhook events name the callee and the agent ---------------------------------------------


async def test_call_status_events_carry_the_user_number_and_the_agent() -> None:
    bodies: list[dict[str, Any]] = []
    done = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        body = await request.json()
        bodies.append(body)
        if body.get("status") == "completed":
            done.set()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    quick = LifecycleConfig(
        queue_delay=(1, 1), ring_time=(1, 1), talk_time=(1, 1), outcomes={"completed": 1}
    )
    config = SimulatorConfig(
        time_scale=20.0,
        lifecycle=quick,
        webhook_url=f"http://127.0.0.1:{port}/hook",
        webhook_secret="whsec",
    )
    try:
        async with Simulator(config) as sim, aiohttp.ClientSession() as session:
            code, answer = await trigger(session, sim, number(7), **{"from": "+14155550100"})
            assert code == 200
            await asyncio.wait_for(done.wait(), 20)
    finally:
        await runner.cleanup()
    changes = [b for b in bodies if b["eventType"] == "CallStatusChanged"]
    assert [b["status"] for b in changes] == ["queued", "started", "in-progress", "completed"]
    for body in changes:
        assert body["callId"] == answer["id"]
        assert body["userNumber"] == number(7)
        assert body["agentId"] == "agent-1"
        assert body["agentNumber"] == "+14155550100"


# -- the trigger log file ---------------------------------------------------------------------


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


async def test_the_trigger_log_file_matches_the_simulators_own_log(
    tmp_path: Path, clock: ManualClock, session: aiohttp.ClientSession
) -> None:
    path = tmp_path / "triggers.jsonl"
    with TriggerLogFile(path, wall_clock=clock.wall) as log:
        async with Simulator(
            capped(3), clock=clock, wall_clock=clock.wall, trigger_sink=log
        ) as sim:
            for n in (1, 2, 2, 3, 1):
                await trigger(session, sim, number(n))
            await trigger(session, sim, "not a number")  # 400: logged, not created
            # Written as each answer goes out, not at the end.
            assert len(read_lines(path)) == 6
        summary = log.summary()
    lines = read_lines(path)
    assert len(lines) == len(sim.triggers) == 6
    assert Counter(line["to"] for line in lines) == Counter(t.to for t in sim.triggers)
    created = Counter(line["to"] for line in lines if line["created"])
    assert created == sim.placed_counts() == Counter({number(1): 1, number(2): 2})
    assert [line["answered_status"] for line in lines] == [200, 200, 200, 429, 429, 400]
    assert [line["live_calls"] for line in lines] == [t.live_calls for t in sim.triggers]
    assert [line["call_id"] for line in lines] == [t.call_id for t in sim.triggers]
    assert "context" not in lines[0] and KEY not in path.read_text(encoding="utf-8")
    assert summary.splitlines()[0].startswith("trigger log: 6 trigger(s), 3 call(s) placed")
    assert f"{number(2)}      2         2" in summary


def test_voicehub_simulate_writes_the_trigger_log_and_prints_a_summary(tmp_path: Path) -> None:
    import urllib.error
    import urllib.request

    path = tmp_path / "log.jsonl"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    process = subprocess.Popen(
        [
            sys.executable, "-m", "voicehub_async.cli", "simulate", "--port", "0",
            "--max-live-calls", "2", "--trigger-log", str(path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("VoiceHub simulator listening on "), line
        url = line.split(" on ")[1].split()[0]
        codes = []
        for n in (1, 1, 2, 3):
            request = urllib.request.Request(
                url + TRIGGER,
                data=json.dumps({"to": number(n), "agentId": "a"}).encode(),
                headers={"x-dq-api-key": KEY, "Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as answer:
                    codes.append(answer.status)
            except urllib.error.HTTPError as error:
                codes.append(error.code)
        assert codes == [200, 200, 429, 429]  # the default calls last minutes
        assert len(read_lines(path)) == 4  # flushed while serving
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    lines = read_lines(path)
    assert Counter(line["to"] for line in lines) == {number(1): 2, number(2): 1, number(3): 1}
    assert [line["live_calls"] for line in lines] == [1, 2, 2, 2]
    assert "trigger log: 4 trigger(s), 2 call(s) placed, 3 number(s)" in out
    assert f"{number(1)}      2         2" in out


def test_the_cli_options_reach_the_configuration() -> None:
    import argparse

    from voicehub_async.simulator.__main__ import add_arguments, config_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    config = config_from_args(parser.parse_args(["--max-live-calls", "5"]))
    assert config.faults.max_live_calls == 5
    assert config_from_args(parser.parse_args([])).faults.max_live_calls is None
    with pytest.raises(ValueError):
        FaultConfig(max_live_calls=0)
