"""Tests of the fake VoiceHub server, observed from a real HTTP client."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import struct
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import pytest

from voicehub_async.simulator import (
    SIMULATOR_APP_KEY,
    Fault,
    FaultConfig,
    LifecycleConfig,
    ManualClock,
    Simulator,
    SimulatorConfig,
    SimulatorThread,
    canonical_status,
    pytest_plugin,
)
from voicehub_async.simulator.__main__ import add_arguments, config_from_args
from voicehub_async.simulator.config import RecordingsShape

pytest_plugins = ["pytester"]

# The plugin's fixtures, made available here without relying on the package
# being installed (the pytest11 entry point only exists after `pip install`).
voicehub_simulator = pytest_plugin.voicehub_simulator
voicehub_simulator_factory = pytest_plugin.voicehub_simulator_factory

KEY = "sim-key"
HEADERS = {"x-dq-api-key": KEY}
TO = "+15551234567"
TRIGGER = "/api/v1/calls/api-call"

# A fixed lifecycle: 2 s queued, 3 s ringing, 10 s talking, always completed.
FIXED = LifecycleConfig(
    queue_delay=(2, 2), ring_time=(3, 3), talk_time=(10, 10), outcomes={"completed": 1}
)


def fixed(outcome: str = "completed") -> LifecycleConfig:
    return attrs.evolve(FIXED, outcomes={outcome: 1})


@pytest.fixture
def clock() -> ManualClock:
    # A wall clock 10 s into a minute, so "within the current minute" is testable.
    return ManualClock(wall_start=datetime(2030, 1, 1, 12, 0, 10, tzinfo=timezone.utc).timestamp())


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def sim(clock: ManualClock) -> AsyncIterator[Simulator]:
    config = SimulatorConfig(time_scale=1.0, lifecycle=FIXED)
    async with Simulator(config, clock=clock, wall_clock=clock.wall) as s:
        yield s


async def trigger(
    session: aiohttp.ClientSession, sim: Simulator, body: Any = None, **kwargs: Any
) -> tuple[int, Any]:
    payload = {"to": TO, "agentId": "agent-1"} if body is None else body
    async with session.post(sim.base_url + TRIGGER, json=payload, headers=HEADERS, **kwargs) as r:
        return r.status, await r.json(content_type=None)


async def get(session: aiohttp.ClientSession, url: str, **kwargs: Any) -> tuple[int, Any]:
    async with session.get(url, headers=HEADERS, **kwargs) as r:
        raw = await r.read()
        try:
            return r.status, json.loads(raw)
        except ValueError:
            return r.status, raw


async def status(session: aiohttp.ClientSession, sim: Simulator, call_id: str) -> str:
    code, body = await get(session, f"{sim.base_url}/api/v1/calls/status/{call_id}/")
    assert code == 200, body
    assert body["id"] == call_id and body["type"] == "voip"
    return str(body["status"])


# --------------------------------------------------------------------- trigger


async def test_trigger_creates_a_queued_call_and_logs_it(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    body = {"to": TO, "agentId": "agent-1", "context": {"name": "Ada"}, "from": "+15550000001"}
    code, answer = await trigger(session, sim, body)
    assert code == 200
    assert answer["status"] == "Queued" and answer["type"] == "voip"
    call_id = answer["id"]
    assert sim.calls[call_id].to == TO
    assert sim.calls[call_id].from_number == "+15550000001"
    [record] = sim.triggers
    assert record.to == TO and record.agent_id == "agent-1"
    assert record.context == {"name": "Ada"} and record.from_number == "+15550000001"
    assert record.scheduled_at is None
    assert record.call_id == call_id and record.created and record.answered_status == 200
    assert sim.calls_placed_to(TO) == 1 and sim.calls_placed_to("+15559999999") == 0
    assert sim.placed_counts() == {TO: 1}
    assert sim.request_count["trigger"] == 1
    assert sim.trigger_count == 1 and sim.created_count == 1


async def test_call_ids_are_unique_under_concurrency(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    results = await asyncio.gather(*(trigger(session, sim) for _ in range(200)))
    ids = {answer["id"] for code, answer in results if code == 200}
    assert len(ids) == 200
    assert sim.calls_placed_to(TO) == 200


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("not json", "request body must be a JSON object"),
        ([1, 2], "request body must be a JSON object"),
        ({"agentId": "a"}, "to is required"),
        ({"to": "", "agentId": "a"}, "to is required"),
        ({"to": "5551234567", "agentId": "a"}, "to must be an E.164 phone number"),
        ({"to": "+0551234567", "agentId": "a"}, "to must be an E.164 phone number"),
        ({"to": "+12345", "agentId": "a"}, "to must be an E.164 phone number"),
        ({"to": "+1234567890123456", "agentId": "a"}, "to must be an E.164 phone number"),
        ({"to": 15551234567, "agentId": "a"}, "to must be an E.164 phone number"),
        ({"to": TO}, "agentId is required"),
        ({"to": TO, "agentId": ""}, "agentId is required"),
        ({"to": TO, "agentId": 7}, "agentId must be a string"),
        ({"to": TO, "agentId": "a", "context": [1]}, "context must be a JSON object"),
        ({"to": TO, "agentId": "a", "context": "x"}, "context must be a JSON object"),
        ({"to": TO, "agentId": "a", "scheduledAt": "2030-01-01 13:00"}, "yyyy-mm-ddThh:mm"),
        ({"to": TO, "agentId": "a", "scheduledAt": "2030-01-01T13:00:00"}, "yyyy-mm-ddThh:mm"),
        ({"to": TO, "agentId": "a", "scheduledAt": "2030-13-01T13:00"}, "not a valid date"),
        ({"to": TO, "agentId": "a", "scheduledAt": "2030-01-01T11:59"}, "in the past"),
        ({"to": TO, "agentId": "a", "scheduleAt": "2029-12-31T23:00"}, "in the past"),
        ({"to": TO, "agentId": "a", "from": "0800"}, "from must be an E.164 phone number"),
    ],
)
async def test_trigger_validation(
    sim: Simulator, session: aiohttp.ClientSession, body: Any, message: str
) -> None:
    url = sim.base_url + TRIGGER
    data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    async with session.post(url, data=data, headers=HEADERS) as r:
        assert r.status == 400
        assert r.content_type == "application/json"
        assert message in (await r.json())["message"]
    [record] = sim.triggers
    assert not record.created and record.call_id is None and record.answered_status == 400
    assert sim.calls == {} and sim.created_count == 0


async def test_owned_numbers_and_known_agents(
    clock: ManualClock, session: aiohttp.ClientSession
) -> None:
    config = SimulatorConfig(owned_numbers={"+15550000001"}, known_agents={"agent-1"})
    async with Simulator(config, clock=clock) as sim:
        code, answer = await trigger(session, sim, {"to": TO, "agentId": "nope"})
        assert (code, answer["message"]) == (400, "agentId does not name an agent of this account")
        body = {"to": TO, "agentId": "agent-1", "from": "+15550000002"}
        code, answer = await trigger(session, sim, body)
        assert (code, answer["message"]) == (400, "from is not a number owned by this account")
        code, _ = await trigger(session, sim, {**body, "from": "+15550000001"})
        assert code == 200


# -------------------------------------------------------------------- scheduled


async def test_scheduled_call_waits_then_follows_the_timeline(
    sim: Simulator, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    # The wall clock is 12:00:10; 12:01 is 50 simulated (= real, scale 1) seconds away.
    code, answer = await trigger(
        session, sim, {"to": TO, "agentId": "a", "scheduledAt": "2030-01-01T12:01"}
    )
    assert (code, answer["status"]) == (200, "Scheduled")
    assert sim.triggers[0].scheduled_at == "2030-01-01T12:01"
    assert await status(session, sim, answer["id"]) == "Scheduled"
    clock.advance(49)
    assert await status(session, sim, answer["id"]) == "Scheduled"
    clock.advance(2)
    assert await status(session, sim, answer["id"]) == "Queued"
    clock.advance(2)
    assert await status(session, sim, answer["id"]) == "Started"


async def test_old_spelling_and_current_minute_are_accepted(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    # "scheduleAt" (the older docs' spelling) works, and 12:00 is within the current minute.
    code, answer = await trigger(
        session, sim, {"to": TO, "agentId": "a", "scheduleAt": "2030-01-01T12:00"}
    )
    assert (code, answer["status"]) == (200, "Scheduled")
    assert sim.triggers[0].scheduled_at == "2030-01-01T12:00"
    assert await status(session, sim, answer["id"]) == "Queued"  # its time has come


async def test_scheduled_wait_is_compressed_by_time_scale(session: aiohttp.ClientSession) -> None:
    clock = ManualClock()
    when = datetime.fromtimestamp(clock.wall(), timezone.utc) + timedelta(minutes=10)
    config = SimulatorConfig(time_scale=60.0, lifecycle=FIXED)
    async with Simulator(config, clock=clock, wall_clock=clock.wall) as sim:
        body = {"to": TO, "agentId": "a", "scheduledAt": when.strftime("%Y-%m-%dT%H:%M")}
        code, answer = await trigger(session, sim, body)
        assert code == 200
        clock.advance(5)  # 300 simulated seconds: still waiting
        assert await status(session, sim, answer["id"]) == "Scheduled"
        clock.advance(10)  # 900 simulated seconds: past the (<= 10 min) wait
        assert await status(session, sim, answer["id"]) != "Scheduled"


# -------------------------------------------------------------------- lifecycle


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        # status at simulated t = 0, 1.9, 2.1, 4.9, 5.1, 14.9, 15.1
        ("completed", "Queued Queued Started Started In-Progress In-Progress Completed"),
        ("unanswered", "Queued Queued Started Started Unanswered Unanswered Unanswered"),
        ("busy", "Queued Queued Busy Busy Busy Busy Busy"),
        ("failed", "Queued Queued Failed Failed Failed Failed Failed"),
    ],
)
async def test_lifecycle_progression(
    session: aiohttp.ClientSession, outcome: str, expected: str
) -> None:
    clock = ManualClock()
    config = SimulatorConfig(time_scale=1.0, lifecycle=fixed(outcome))
    async with Simulator(config, clock=clock) as sim:
        _, answer = await trigger(session, sim)
        seen = []
        for t in (0, 1.9, 2.1, 4.9, 5.1, 14.9, 15.1):
            clock.set(t)
            seen.append(await status(session, sim, answer["id"]))
        assert seen == expected.split()
        timeline = sim.calls[answer["id"]].timeline()
        assert [s for _, s in timeline] == list(dict.fromkeys(expected.split()))


async def test_time_scale_speeds_calls_up(session: aiohttp.ClientSession) -> None:
    clock = ManualClock()
    config = SimulatorConfig(time_scale=60.0, lifecycle=FIXED)
    async with Simulator(config, clock=clock) as sim:
        _, answer = await trigger(session, sim)
        clock.advance(0.1)  # 6 simulated seconds
        assert await status(session, sim, answer["id"]) == "In-Progress"
        clock.advance(0.2)  # 18 simulated seconds
        assert await status(session, sim, answer["id"]) == "Completed"


async def test_default_lifecycle_with_real_clock_is_drawn_from_the_mix() -> None:
    sim = Simulator(SimulatorConfig(seed=1))
    calls = [sim._new_call(TO, "a", None, 0.0) for _ in range(2000)]
    outcomes = [c.outcome for c in calls]
    assert 0.6 < outcomes.count("Completed") / 2000 < 0.8
    assert {"Completed", "Unanswered", "Busy", "Failed"} == set(outcomes)
    assert all(1.0 <= c.queue_delay <= 4.0 and 20 <= c.talk_time <= 180 for c in calls)


async def test_seeded_runs_are_reproducible(session: aiohttp.ClientSession) -> None:
    runs = []
    for _ in range(2):
        async with Simulator(SimulatorConfig(seed=42)) as sim:
            for _ in range(5):
                await trigger(session, sim)
            runs.append([(c.id, c.outcome, c.talk_time) for c in sim.calls.values()])
    assert runs[0] == runs[1]


async def test_set_status_and_set_outcome(
    sim: Simulator, session: aiohttp.ClientSession, clock: ManualClock
) -> None:
    _, answer = await trigger(session, sim)
    call_id = answer["id"]
    sim.set_status(call_id, "completed")
    assert await status(session, sim, call_id) == "Completed"
    assert sim.status_of(call_id) == "Completed"
    sim.set_status(call_id, "voicemail")  # undocumented: answered as given
    assert await status(session, sim, call_id) == "voicemail"
    sim.set_status(call_id, None)  # back to the timeline
    assert await status(session, sim, call_id) == "Queued"
    sim.set_outcome(call_id, "BUSY")
    clock.advance(3)
    assert await status(session, sim, call_id) == "Busy"
    with pytest.raises(KeyError):
        sim.set_status("no-such-call", "Completed")
    with pytest.raises(ValueError):
        sim.set_outcome(call_id, "exploded")
    assert canonical_status("IN-PROGRESS") == "In-Progress"


# ----------------------------------------------------------- status and auth


async def test_status_not_found_and_path_without_slash(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    code, body = await get(session, f"{sim.base_url}/api/v1/calls/status/nope/")
    assert (code, body) == (404, {"message": "call not found"})
    _, answer = await trigger(session, sim)
    code, _ = await get(session, f"{sim.base_url}/api/v1/calls/status/{answer['id']}")
    assert code == 404


@pytest.mark.parametrize("headers", [{}, {"x-dq-api-key": "wrong"}, {"x-dq-api-key": ""}])
async def test_every_endpoint_requires_the_api_key(
    sim: Simulator, session: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    _, answer = await trigger(session, sim)
    sim.set_status(answer["id"], "Completed")
    base = sim.base_url
    requests = [
        ("POST", base + TRIGGER),
        ("GET", f"{base}/api/v1/calls/status/{answer['id']}/"),
        ("GET", f"{base}/api/v1/calls/e2e/{answer['id']}/recordings"),
        ("GET", f"{base}/recordings/{answer['id']}.wav"),
    ]
    for method, url in requests:
        async with session.request(
            method, url, json={"to": TO, "agentId": "a"}, headers=headers
        ) as r:
            assert r.status == 401, url
            assert "api key" in (await r.json())["message"]
    assert len(sim.triggers) == 1  # refused triggers are not logged...
    assert sim.request_count["trigger"] == 2  # ...but counted
    assert sim.created_count == 1


async def test_extra_api_keys_are_accepted(session: aiohttp.ClientSession) -> None:
    async with Simulator(SimulatorConfig(extra_api_keys={"second"})) as sim:
        async with session.post(
            sim.base_url + TRIGGER,
            json={"to": TO, "agentId": "a"},
            headers={"X-DQ-API-KEY": "second"},
        ) as r:
            assert r.status == 200


# ------------------------------------------------------------------ recordings


@pytest.mark.parametrize("shape", ["object", "list", "string"])
async def test_recordings_shapes_and_download(
    session: aiohttp.ClientSession, shape: RecordingsShape
) -> None:
    clock = ManualClock()
    config = SimulatorConfig(
        time_scale=1.0, lifecycle=FIXED, recordings_shape=shape, recording_size=100_044
    )
    async with Simulator(config, clock=clock) as sim:
        _, answer = await trigger(session, sim)
        call_id = answer["id"]
        rec_url = f"{sim.base_url}/api/v1/calls/e2e/{call_id}/recordings"
        code, body = await get(session, rec_url)
        assert (code, body) == (404, {"message": "recording not available"})
        code, _ = await get(session, f"{sim.base_url}/recordings/{call_id}.wav")
        assert code == 404
        clock.advance(16)  # completed
        code, body = await get(session, rec_url)
        assert code == 200
        expected = f"{sim.base_url}/recordings/{call_id}.wav"
        assert (
            body
            == {"object": {"recordings": [expected]}, "list": [expected], "string": expected}[shape]
        )

        async with session.get(expected, headers=HEADERS) as r:
            assert r.status == 200 and r.content_type == "audio/wav"
            chunks = [chunk async for chunk in r.content.iter_chunked(8192)]
        data = b"".join(chunks)
        assert len(chunks) > 1 and len(data) == 100_044
        riff, size, wave = struct.unpack("<4sI4s", data[:12])
        assert (riff, size, wave) == (b"RIFF", 100_036, b"WAVE")
        assert data[36:40] == b"data" and set(data[44:]) == {0x80}
        assert sim.request_count["download"] == 2


async def test_recordings_unknown_call_and_keyless_download(session: aiohttp.ClientSession) -> None:
    async with Simulator(SimulatorConfig(recording_files_require_key=False)) as sim:
        code, body = await get(session, f"{sim.base_url}/api/v1/calls/e2e/nope/recordings")
        assert (code, body) == (404, {"message": "call not found"})
        _, answer = await trigger(session, sim)
        sim.set_status(answer["id"], "Completed")
        async with session.get(f"{sim.base_url}/recordings/{answer['id']}.wav") as r:
            assert r.status == 200
            assert len(await r.read()) == sim.config.recording_size


# -------------------------------------------------------------- scripted faults


async def test_scripted_503_with_retry_after_creates_nothing(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    sim.inject(Fault.status(503, headers={"Retry-After": "1"}), endpoint="trigger")
    async with session.post(
        sim.base_url + TRIGGER, json={"to": TO, "agentId": "a"}, headers=HEADERS
    ) as r:
        assert r.status == 503 and r.headers["Retry-After"] == "1"
        assert (await r.json())["message"] == "service unavailable"
    [record] = sim.triggers
    assert not record.created and record.answered_status == 503 and sim.calls == {}
    assert sim.pending_faults == 0
    code, _ = await trigger(session, sim)  # consumed: the next one goes through
    assert code == 200


async def test_scripted_html_500_and_http_date_429(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    sim.inject(Fault.status(500, "<html><body>Oops</body></html>"))
    sim.inject(Fault.status(429, "", headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}))
    sim.inject(Fault.status(502, b"\x00\x01"))
    async with session.post(
        sim.base_url + TRIGGER, json={"to": TO, "agentId": "a"}, headers=HEADERS
    ) as r:
        assert r.status == 500 and r.content_type == "text/html"
        assert "Oops" in await r.text()
    async with session.get(f"{sim.base_url}/api/v1/calls/status/x/", headers=HEADERS) as r:
        assert r.status == 429 and r.headers["Retry-After"] == "Wed, 21 Oct 2015 07:28:00 GMT"
        assert await r.read() == b""
    async with session.get(f"{sim.base_url}/api/v1/calls/status/x/", headers=HEADERS) as r:
        assert r.status == 502 and await r.read() == b"\x00\x01"
    assert sim.calls == {}


async def test_scripted_error_after_create(sim: Simulator, session: aiohttp.ClientSession) -> None:
    sim.inject(Fault.status(504, create=True), endpoint="trigger")
    code, body = await trigger(session, sim)
    assert code == 504 and body == {"message": "gateway timeout"}
    [record] = sim.triggers
    assert record.created and record.answered_status == 504
    assert sim.calls_placed_to(TO) == 1 and record.call_id in sim.calls


async def test_after_create_fault_does_not_hide_validation_errors(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    sim.inject(Fault.status(500, create=True), endpoint="trigger")
    code, _ = await trigger(session, sim, {"to": "bad", "agentId": "a"})
    assert code == 400 and sim.pending_faults == 0


async def test_reset_before_create(sim: Simulator, session: aiohttp.ClientSession) -> None:
    sim.inject(Fault.reset(), endpoint="trigger")
    with pytest.raises(aiohttp.ClientConnectionError):
        await trigger(session, sim)
    [record] = sim.triggers
    assert not record.created and record.answered_status is None and sim.calls == {}
    code, _ = await trigger(session, sim)  # the server is still fine afterwards
    assert code == 200


async def test_reset_after_create_logs_a_created_call(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    sim.inject(Fault.reset(create=True), endpoint="trigger")
    with pytest.raises(aiohttp.ClientConnectionError):
        await trigger(session, sim)
    [record] = sim.triggers
    assert record.created and record.call_id in sim.calls and record.answered_status is None
    assert sim.calls_placed_to(TO) == 1


async def test_reset_on_status_is_seen_through_aiohttp_retry(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    # aiohttp silently retries an idempotent request once after a disconnect,
    # so a single reset on a GET is invisible to it: two are needed.
    sim.inject(Fault.reset(), endpoint="status", times=2)
    with pytest.raises(aiohttp.ClientConnectionError):
        await get(session, f"{sim.base_url}/api/v1/calls/status/x/")
    assert sim.request_count["status"] == 2


async def test_delay_after_create_times_the_client_out(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    sim.inject(Fault.delay(30.0), endpoint="trigger")  # stopping the simulator cuts it short
    # The client gives up long after the request is in, far before the answer.
    with pytest.raises(asyncio.TimeoutError):
        await trigger(session, sim, timeout=aiohttp.ClientTimeout(total=1.0))
    [record] = sim.triggers
    assert record.created and record.call_id in sim.calls


async def test_delay_before_create_drops_the_request_if_the_client_left(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    sim.inject(Fault.delay(1.5, create=False), endpoint="trigger")
    # Time enough for the request to arrive even on a loaded machine; far
    # less than the delay.
    with pytest.raises(asyncio.TimeoutError):
        await trigger(session, sim, timeout=aiohttp.ClientTimeout(total=0.5))
    for _ in range(1000):  # let the held-back request come to its end (10 s at most)
        if not sim._sleepers:
            break
        await asyncio.sleep(0.01)
    assert not sim._sleepers
    [record] = sim.triggers
    assert not record.created and record.answered_status is None and sim.calls == {}


async def test_short_delay_still_answers(sim: Simulator, session: aiohttp.ClientSession) -> None:
    sim.inject(Fault.delay(0.05, create=False))
    sim.inject(Fault.delay(0.05, create=True))
    assert (await trigger(session, sim))[0] == 200
    assert (await trigger(session, sim))[0] == 200
    assert sim.created_count == 2


async def test_redirect(sim: Simulator, session: aiohttp.ClientSession) -> None:
    sim.inject(Fault.redirect("https://elsewhere.invalid/steal"), endpoint="status")
    async with session.get(
        f"{sim.base_url}/api/v1/calls/status/x/", headers=HEADERS, allow_redirects=False
    ) as r:
        assert r.status == 302 and r.headers["Location"] == "https://elsewhere.invalid/steal"


async def test_scripted_faults_match_endpoints_in_order(
    sim: Simulator, session: aiohttp.ClientSession
) -> None:
    sim.inject(Fault.status(500), endpoint="status")
    sim.inject(Fault.status(502), endpoint="any", times=2)
    sim.inject(Fault.status(503), endpoint="trigger")
    status_url = f"{sim.base_url}/api/v1/calls/status/x/"
    assert (await trigger(session, sim))[0] == 502  # the status fault is skipped
    assert (await get(session, status_url))[0] == 500
    assert (await get(session, status_url))[0] == 502
    assert (await trigger(session, sim))[0] == 503
    assert (await trigger(session, sim))[0] == 200
    sim.inject(Fault.status(500), endpoint="recordings", times=None)
    for _ in range(3):
        assert (await get(session, f"{sim.base_url}/api/v1/calls/e2e/x/recordings"))[0] == 500
    sim.clear_faults()
    assert (await get(session, f"{sim.base_url}/api/v1/calls/e2e/x/recordings"))[0] == 404
    with pytest.raises(ValueError):
        sim.inject(Fault.reset(), endpoint="calls")
    with pytest.raises(ValueError):
        sim.inject(Fault.reset(), times=0)


# ---------------------------------------------------------------- random faults


@pytest.mark.parametrize(
    ("faults", "expected"),
    [
        (FaultConfig(error_500_rate=1.0), 500),
        (FaultConfig(error_503_rate=1.0), 503),
        (FaultConfig(reset_before_create_rate=1.0), None),
        (FaultConfig(reset_after_create_rate=1.0), None),
    ],
)
async def test_random_faults_at_rate_one(
    session: aiohttp.ClientSession, faults: FaultConfig, expected: int | None
) -> None:
    async with Simulator(SimulatorConfig(faults=faults)) as sim:
        if expected is None:
            with pytest.raises(aiohttp.ClientConnectionError):
                await trigger(session, sim)
        else:
            async with session.post(sim.base_url + TRIGGER, json={}, headers=HEADERS) as r:
                assert r.status == expected
                if expected == 503:
                    assert r.headers["Retry-After"] == "1"
        created = faults.reset_after_create_rate == 1.0
        assert sim.created_count == int(created)
        assert sim.triggers[0].created is created


async def test_random_slow_answer_creates_the_call(session: aiohttp.ClientSession) -> None:
    async with Simulator(
        SimulatorConfig(faults=FaultConfig(slow_rate=1.0, slow_delay=30.0))
    ) as sim:  # the slow answer is cut short by stopping the simulator
        with pytest.raises(asyncio.TimeoutError):
            await trigger(session, sim, timeout=aiohttp.ClientTimeout(total=1.0))
        assert sim.created_count == 1


async def test_random_faults_are_seeded_and_spare_the_download(
    session: aiohttp.ClientSession,
) -> None:
    faults = FaultConfig(error_500_rate=0.3, error_503_rate=0.2)
    runs = []
    for _ in range(2):
        async with Simulator(SimulatorConfig(seed=7, faults=faults)) as sim:
            runs.append([(await trigger(session, sim))[0] for _ in range(100)])
    assert runs[0] == runs[1]
    assert 30 < runs[0].count(200) < 70 and {200, 500, 503} == set(runs[0])
    async with Simulator(SimulatorConfig(faults=FaultConfig(error_500_rate=1.0))) as sim:
        call = sim._new_call(TO, "a", None, 0.0)
        sim.set_status(call.id, "Completed")
        assert (await get(session, f"{sim.base_url}/recordings/{call.id}.wav"))[0] == 200


async def test_latency_is_added(session: aiohttp.ClientSession) -> None:
    async with Simulator(SimulatorConfig(faults=FaultConfig(latency=(0.1, 0.1)))) as sim:
        loop = asyncio.get_running_loop()
        start = loop.time()
        assert (await trigger(session, sim))[0] == 200
        assert loop.time() - start >= 0.09


async def test_rate_limit_answers_429_with_retry_after(session: aiohttp.ClientSession) -> None:
    clock = ManualClock()
    config = SimulatorConfig(
        extra_api_keys={"other"}, faults=FaultConfig(rate_limit=0.5, rate_limit_burst=2)
    )
    async with Simulator(config, clock=clock) as sim:
        assert (await trigger(session, sim))[0] == 200
        assert (await trigger(session, sim))[0] == 200
        async with session.post(
            sim.base_url + TRIGGER, json={"to": TO, "agentId": "a"}, headers=HEADERS
        ) as r:
            assert r.status == 429 and r.headers["Retry-After"] == "2"
            assert (await r.json())["message"] == "rate limit exceeded"
        assert sim.triggers[-1].answered_status == 429 and not sim.triggers[-1].created
        # Another key has its own bucket.
        async with session.post(
            sim.base_url + TRIGGER,
            json={"to": TO, "agentId": "a"},
            headers={"x-dq-api-key": "other"},
        ) as r:
            assert r.status == 200
        clock.advance(2.0)  # one token back
        assert (await trigger(session, sim))[0] == 200
        assert (await trigger(session, sim))[0] == 429
        assert sim.created_count == 4


# ------------------------------------------------------------- counters, config


async def test_without_trigger_log_only_counters_are_kept(session: aiohttp.ClientSession) -> None:
    async with Simulator(SimulatorConfig(record_triggers=False)) as sim:
        for _ in range(3):
            await trigger(session, sim)
        await trigger(session, sim, {"to": "bad", "agentId": "a"})
        assert sim.triggers == []
        assert sim.trigger_count == 4 and sim.created_count == 3
        assert sim.calls_placed_to(TO) == 3
        sim.clear()
        assert sim.calls == {} and sim.trigger_count == 0 and sim.calls_placed_to(TO) == 0


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        LifecycleConfig(queue_delay=(5, 1))
    with pytest.raises(ValueError):
        LifecycleConfig(outcomes={"exploded": 1})
    with pytest.raises(ValueError):
        LifecycleConfig(outcomes={"completed": 0})
    with pytest.raises(ValueError):
        FaultConfig(error_500_rate=0.6, error_503_rate=0.6)
    with pytest.raises(ValueError):
        FaultConfig(endpoints={"nowhere"})
    with pytest.raises(TypeError):
        SimulatorConfig(extra_api_keys="abc")
    with pytest.raises(ValueError):
        SimulatorConfig(time_scale=0)
    assert LifecycleConfig(outcomes=[("Completed", 1), ("busy", 1)]).outcomes == (
        ("completed", 1.0),
        ("busy", 1.0),
    )
    assert hash(SimulatorConfig()) == hash(SimulatorConfig())


async def test_app_is_embeddable(session: aiohttp.ClientSession) -> None:
    sim = Simulator()
    assert sim.app[SIMULATOR_APP_KEY] is sim
    with pytest.raises(RuntimeError):
        _ = sim.base_url
    await sim.start()
    try:
        with pytest.raises(RuntimeError):
            await sim.start()
    finally:
        await sim.stop()
        await sim.stop()  # idempotent


async def test_stop_does_not_wait_for_held_back_answers(session: aiohttp.ClientSession) -> None:
    sim = Simulator()
    await sim.start()
    sim.inject(Fault.delay(60), endpoint="trigger")
    request = asyncio.ensure_future(trigger(session, sim))
    for _ in range(500):  # until the request has arrived
        if sim.triggers:
            break
        await asyncio.sleep(0.01)
    await asyncio.wait_for(sim.stop(), 5)
    with pytest.raises(aiohttp.ClientConnectionError):
        await request


# --------------------------------------------------------- thread and fixtures


def sync_request(url: str, body: Any = None, key: str = KEY) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url, data=data, headers={"x-dq-api-key": key, "Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_simulator_thread_serves_synchronous_code() -> None:
    with SimulatorThread(SimulatorConfig(api_key="k")) as sim:
        assert sim.api_key == "k" and sim.base_url == f"http://127.0.0.1:{sim.port}"
        code, answer = sync_request(sim.base_url + TRIGGER, {"to": TO, "agentId": "a"}, key="k")
        assert code == 200
        sim.set_status(answer["id"], "Busy")
        code, body = sync_request(f"{sim.base_url}/api/v1/calls/status/{answer['id']}/", key="k")
        assert (code, body["status"]) == (200, "Busy")
        assert sim.status_of(answer["id"]) == "Busy"
        sim.inject(Fault.status(503), endpoint="trigger")
        code, _ = sync_request(sim.base_url + TRIGGER, {"to": TO, "agentId": "a"}, key="k")
        assert code == 503
        assert sim.calls_placed_to(TO) == 1 and sim.placed_counts() == {TO: 1}
        assert [t.answered_status for t in sim.triggers] == [200, 503]
        assert sim.request_count["status"] == 1 and sim.trigger_count == 2
        assert sim.created_count == 1 and answer["id"] in sim.calls
        url = sim.base_url
    with pytest.raises(urllib.error.URLError):
        sync_request(url + TRIGGER, {"to": TO, "agentId": "a"})


def test_simulator_thread_reports_bind_failures() -> None:
    with SimulatorThread() as first:
        with pytest.raises(OSError):
            SimulatorThread(port=first.port).start()


def test_fixture(voicehub_simulator: SimulatorThread) -> None:
    assert voicehub_simulator.config == SimulatorConfig()
    code, _ = sync_request(voicehub_simulator.base_url + TRIGGER, {"to": TO, "agentId": "a"})
    assert code == 200 and voicehub_simulator.calls_placed_to(TO) == 1


async def test_factory_fixture_from_an_async_test(
    voicehub_simulator_factory: pytest_plugin.SimulatorFactory, session: aiohttp.ClientSession
) -> None:
    clock = ManualClock()
    sim = voicehub_simulator_factory(SimulatorConfig(api_key="other", lifecycle=FIXED), clock=clock)
    async with session.post(
        sim.base_url + TRIGGER, json={"to": TO, "agentId": "a"}, headers={"x-dq-api-key": "other"}
    ) as r:
        call_id = (await r.json())["id"]
    clock.advance(1)  # 60 simulated seconds at the default scale
    assert sim.status_of(call_id) == "Completed"


def test_plugin_registers_the_fixtures(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Autoload off: the inner session must load the plugin exactly once, by -p.
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makepyfile(
        """
        import json, urllib.request

        def test_it(voicehub_simulator, voicehub_simulator_factory):
            other = voicehub_simulator_factory()
            assert other.base_url != voicehub_simulator.base_url
            req = urllib.request.Request(
                voicehub_simulator.base_url + "/api/v1/calls/status/nope/",
                headers={"x-dq-api-key": voicehub_simulator.api_key},
            )
            try:
                urllib.request.urlopen(req)
            except urllib.error.HTTPError as exc:
                assert exc.code == 404
        """
    )
    result = pytester.runpytest("-p", "voicehub_async.simulator.pytest_plugin")
    result.assert_outcomes(passed=1)


# ------------------------------------------------------------------- __main__


def test_command_line_options_build_a_config() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        ["--port", "0", "--time-scale", "120", "--outcomes", "completed=1,busy=1",
         "--latency", "0", "0.1", "--rate-limit", "50", "--error-503-rate", "0.1",
         "--recordings-shape", "list", "--no-record-triggers", "--extra-api-key", "k2"]
    )  # fmt: skip
    config = config_from_args(args)
    assert config.time_scale == 120 and config.extra_api_keys == {"k2"}
    assert config.lifecycle.outcomes == (("completed", 1.0), ("busy", 1.0))
    assert config.faults.latency == (0.0, 0.1) and config.faults.rate_limit == 50
    assert config.faults.error_503_rate == 0.1 and config.recordings_shape == "list"
    assert not config.record_triggers
    assert config_from_args(parser.parse_args([])) == SimulatorConfig()


@pytest.fixture
def simulator_process() -> Iterator[subprocess.Popen[str]]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "voicehub_async.simulator", "--port", "0", "--api-key", "cli-key"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(10)
        assert proc.stdout is not None
        proc.stdout.close()


def test_module_entry_point_prints_its_url(simulator_process: subprocess.Popen[str]) -> None:
    assert simulator_process.stdout is not None
    line = simulator_process.stdout.readline()
    assert line.startswith("VoiceHub simulator listening on http://127.0.0.1:")
    assert line.rstrip().endswith("(api key: cli-key)")
    url = line.split(" on ")[1].split()[0]
    code, answer = sync_request(url + TRIGGER, {"to": TO, "agentId": "a"}, key="cli-key")
    assert (code, answer["status"]) == (200, "Queued")
    simulator_process.terminate()
    assert simulator_process.wait(10) == 0
