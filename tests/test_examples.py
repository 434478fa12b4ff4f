"""The web-backend examples (examples/*.py), run against the simulator.

FastAPI through Starlette's TestClient (which runs the lifespan), aiohttp
through aiohttp.test_utils; both against a SimulatorThread over real sockets.
Each test checks what the example promises: one shared client, a call placed
exactly once, status from polling and from webhooks, the ambiguous case
reported and not retried, and a cancelled request that does not lose its call.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from voicehub_async.simulator import Fault, LifecycleConfig, SimulatorConfig, SimulatorThread
from voicehub_async.simulator.pytest_plugin import SimulatorFactory

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SECRET = "whsec-example"
NUMBER = "+14155550123"

#: Calls that end within about a tenth of a second of real time.
QUICK = SimulatorConfig(
    time_scale=60,
    lifecycle=LifecycleConfig(queue_delay=(0.5, 1), ring_time=(0.5, 1), talk_time=(1, 2)),
)
#: Calls that last minutes: only a webhook (or a test) ends them in time.
SLOW = SimulatorConfig(time_scale=1)


def _load(name: str) -> ModuleType:
    """Import examples/<name>.py (examples/ is not a package)."""
    module_name = f"voicehub_examples_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # pydantic resolves annotations through it
    spec.loader.exec_module(module)
    return module


def _settings(module: ModuleType, sim: SimulatorThread, **overrides: Any) -> Any:
    options: dict[str, Any] = {
        "api_key": sim.api_key,
        "webhook_secret": SECRET,
        "base_url": sim.base_url,
        "poll_interval": 0.05,
        "max_poll_interval": 0.2,
    }
    options.update(overrides)
    return module.Settings(**options)


def _event(call_id: str, status: str, event_id: str = "evt-1") -> bytes:
    return json.dumps(
        {
            "eventType": "CallStatusChanged",
            "eventId": event_id,
            "timestamp": "2030-01-01T00:00:00Z",
            "callId": call_id,
            "status": status,
            "agentId": "agent-1",
        }
    ).encode()


async def _wait_for(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


# -- FastAPI -------------------------------------------------------------------------------


@pytest.fixture
def fastapi_module() -> ModuleType:
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    return _load("fastapi_app")


@contextlib.asynccontextmanager
async def _fastapi(module: ModuleType, sim: SimulatorThread) -> AsyncIterator[tuple[Any, Any]]:
    """The example app with its lifespan running, and an httpx client on its
    ASGI transport (which, unlike a server, runs no lifespan of its own)."""
    import httpx

    app = module.create_app(_settings(module, sim))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app.test") as http:
            yield app, http


async def test_fastapi_places_a_call_once_and_follows_it(
    fastapi_module: ModuleType, voicehub_simulator_factory: SimulatorFactory
) -> None:
    sim = voicehub_simulator_factory(QUICK)
    async with _fastapi(fastapi_module, sim) as (app, http):
        hub = app.state.voicehub  # made by the lifespan, once
        answer = await http.post("/calls", json={"to": "(415) 555-0123", "agent_id": "agent-1"})
        assert answer.status_code == 422  # no country code: refused before sending
        assert answer.json()["field"] == "to"
        assert sim.trigger_count == 0

        answer = await http.post("/calls", json={"to": NUMBER, "agent_id": "agent-1"})
        assert answer.status_code == 201, answer.text
        call_id = answer.json()["id"]
        assert answer.json()["status"] == "queued"
        assert sim.calls_placed_to(NUMBER) == 1

        async def final() -> dict[str, Any] | None:
            body: dict[str, Any] = (await http.get(f"/calls/{call_id}")).json()
            return body if body["final"] else None

        status = await _wait_for(final)
        assert status["status"] in {"completed", "unanswered", "busy", "failed"}
        assert status["source"] == "poll"
        # One client for the whole process: the same object served every request.
        assert app.state.voicehub is hub
        assert sim.calls_placed_to(NUMBER) == 1
        # A call this process did not place is looked up at VoiceHub.
        assert (await http.get("/calls/no-such-call")).status_code == 404
        assert not hub.client.closed
    assert hub.client.closed  # closed at shutdown


async def test_fastapi_webhook_feeds_the_poller(
    fastapi_module: ModuleType, voicehub_simulator_factory: SimulatorFactory
) -> None:
    sim = voicehub_simulator_factory(SLOW)
    async with _fastapi(fastapi_module, sim) as (app, http):
        placed = await http.post("/calls", json={"to": NUMBER, "agent_id": "agent-1"})
        call_id = placed.json()["id"]
        wrong = await http.post(
            "/webhooks/voicehub",
            content=_event(call_id, "completed"),
            headers={"x-webhook-secret": "wrong"},
        )
        assert wrong.status_code == 401
        assert (await http.get(f"/calls/{call_id}")).json()["final"] is False

        pushed = await http.post(
            "/webhooks/voicehub",
            content=_event(call_id, "completed"),
            headers={"x-webhook-secret": SECRET, "content-type": "application/json"},
        )
        assert pushed.status_code == 200, pushed.text

        async def final() -> dict[str, Any] | None:
            body: dict[str, Any] = (await http.get(f"/calls/{call_id}")).json()
            return body if body["final"] else None

        status = await _wait_for(final)  # the board follows the poller's changes
        assert status["status"] == "completed"
        assert status["final"] is True
        assert status["source"] == "webhook"
        assert call_id not in app.state.voicehub.poller  # no more reads for it
        repeat = await http.post(
            "/webhooks/voicehub",
            content=_event(call_id, "completed"),
            headers={"x-webhook-secret": SECRET},
        )
        assert repeat.json() == {"status": "duplicate"}


async def test_fastapi_ambiguous_trigger_is_reported_not_retried(
    fastapi_module: ModuleType, voicehub_simulator_factory: SimulatorFactory
) -> None:
    sim = voicehub_simulator_factory(QUICK)
    async with _fastapi(fastapi_module, sim) as (_, http):
        sim.inject(Fault.status(500, create=True), endpoint="trigger")
        answer = await http.post("/calls", json={"to": NUMBER, "agent_id": "agent-1"})
        assert answer.status_code == 502
        assert answer.json()["error"] == "ambiguous"
        assert "MAY have been placed" in answer.json()["message"]
        assert sim.trigger_count == 1  # sent once, never re-sent
        assert sim.calls_placed_to(NUMBER) == 1

        # 503s prove nothing was placed: the client retries them, and when it
        # gives up the app says the call was not placed and may be retried.
        sim.inject(Fault.status(503, headers={"Retry-After": "0"}), endpoint="trigger", times=10)
        answer = await http.post("/calls", json={"to": NUMBER, "agent_id": "agent-1"})
        assert answer.status_code == 503
        assert answer.json()["error"] == "not_placed"
        assert sim.calls_placed_to(NUMBER) == 1


# -- aiohttp ----------------------------------------------------------------------------------


@pytest.fixture
def aiohttp_module() -> ModuleType:
    return _load("aiohttp_app")


async def test_aiohttp_places_follows_and_takes_webhooks(
    aiohttp_module: ModuleType, voicehub_simulator_factory: SimulatorFactory
) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    sim = voicehub_simulator_factory(SLOW)
    app = aiohttp_module.create_app(_settings(aiohttp_module, sim))
    async with TestClient(TestServer(app)) as client:
        bad = await client.post("/calls", json={"to": "not a number", "agent_id": "agent-1"})
        assert bad.status == 422
        assert (await bad.json())["field"] == "to"

        answer = await client.post("/calls", json={"to": NUMBER, "agent_id": "agent-1"})
        assert answer.status == 201, await answer.text()
        call_id = (await answer.json())["id"]
        assert sim.calls_placed_to(NUMBER) == 1

        async def status() -> dict[str, Any]:
            response = await client.get(f"/calls/{call_id}")
            body: dict[str, Any] = await response.json()
            return body

        assert (await status())["final"] is False
        pushed = await client.post(
            "/webhooks/voicehub",
            data=_event(call_id, "in-progress"),
            headers={"x-webhook-secret": SECRET, "content-type": "application/json"},
        )
        assert pushed.status == 200

        async def talking() -> dict[str, Any] | None:
            body = await status()
            return body if body["status"] == "in-progress" else None

        assert (await _wait_for(talking))["source"] == "webhook"

        # The simulator ends the call; polling (the webhook's safety net) sees it.
        sim.set_status(call_id, "completed")
        final = await _wait_for(lambda: _final(status))
        assert final["status"] == "completed"
        hub = app[aiohttp_module.VOICEHUB]
    assert hub.client.closed  # the shared client is closed at cleanup


async def _final(status: Callable[[], Any]) -> dict[str, Any] | None:
    body: dict[str, Any] = await status()
    return body if body["final"] else None


async def test_aiohttp_cancelled_request_still_records_its_call(
    aiohttp_module: ModuleType, voicehub_simulator_factory: SimulatorFactory
) -> None:
    """A request handler cancelled while its trigger is in flight: the SDK
    raises CancelledError and retries nothing; the example's shielded task
    lets the trigger finish, so the call is recorded and tracked."""
    from aiohttp.test_utils import TestClient, TestServer

    sim = voicehub_simulator_factory(SLOW)
    app = aiohttp_module.create_app(_settings(aiohttp_module, sim))
    async with TestClient(TestServer(app)) as client:
        hub = app[aiohttp_module.VOICEHUB]
        # The call is created at once, but its answer is held back 1.5 s: time
        # enough, even on a loaded machine, to cancel the handler before it.
        sim.inject(Fault.delay(1.5, create=True), endpoint="trigger")
        request = aiohttp_module.CallRequest(to=NUMBER, agent_id="agent-1")
        handler = asyncio.create_task(hub.place_call(request))
        await _wait_for(_async(lambda: sim.calls_placed_to(NUMBER) == 1))
        handler.cancel()  # as a framework does to a handler whose request is abandoned
        with pytest.raises(asyncio.CancelledError):
            await handler
        assert sim.calls_placed_to(NUMBER) == 1
        call_id = next(iter(sim.calls))
        # The trigger finished in its own task: the call is known and tracked.
        await _wait_for(_async(lambda: hub.board.get(call_id) is not None))
        assert call_id in hub.poller
        response = await client.get(f"/calls/{call_id}")
        assert (await response.json())["id"] == call_id
        assert sim.trigger_count == 1  # and it was never re-sent


def _async(check: Callable[[], Any]) -> Callable[[], Any]:
    async def wrapped() -> Any:
        return check()

    return wrapped


async def test_aiohttp_shutdown_waits_for_triggers_in_flight(
    aiohttp_module: ModuleType, voicehub_simulator_factory: SimulatorFactory
) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    sim = voicehub_simulator_factory(SLOW)
    app = aiohttp_module.create_app(_settings(aiohttp_module, sim))
    client = TestClient(TestServer(app))
    await client.start_server()
    hub = app[aiohttp_module.VOICEHUB]
    sim.inject(Fault.delay(0.3, create=True), endpoint="trigger")
    trigger = asyncio.create_task(
        hub.place_call(aiohttp_module.CallRequest(to=NUMBER, agent_id="agent-1"))
    )
    await _wait_for(_async(lambda: sim.calls_placed_to(NUMBER) == 1))
    await client.close()  # shutdown while the trigger waits for its answer
    call = await trigger
    assert hub.board.get(call.id) is not None  # the answer arrived before the client closed
    assert hub.client.closed


async def test_sdk_cancelled_trigger_raises_and_is_never_resent(
    voicehub_simulator_factory: SimulatorFactory,
) -> None:
    """What the README says of the bare client: cancelling a task awaiting a
    trigger raises CancelledError in it, nothing is retried, and the call may
    have been placed all the same (here it was) without the caller learning
    its id. Hence the examples' shielded trigger task."""
    from voicehub_async import VoiceHubClient

    sim = voicehub_simulator_factory(SLOW)
    # Held back long enough to cancel the task before the answer, even on a
    # loaded machine.
    sim.inject(Fault.delay(1.5, create=True), endpoint="trigger")
    async with VoiceHubClient(sim.api_key, base_url=sim.base_url) as client:
        trigger = asyncio.create_task(client.trigger_call(NUMBER, "agent-1"))
        await _wait_for(_async(lambda: sim.calls_placed_to(NUMBER) == 1))
        trigger.cancel()
        with pytest.raises(asyncio.CancelledError):
            await trigger
        # Until the held-back answer is over on the server: no second attempt.
        await _wait_for(_async(lambda: not sim.simulator._sleepers))
    assert sim.trigger_count == 1
    assert sim.calls_placed_to(NUMBER) == 1


# -- one error shape, worded for HTTP clients ------------------------------------------------

#: (method, path, body) -> (status, error code, field or None): the same answers from both apps.
ERROR_CASES = [
    (("post", "/calls", {"to": "(415) 555-0103", "agent_id": "agent-1"}),
     (422, "invalid_input", "to")),
    (("post", "/calls", {"agent_id": "agent-1"}), (422, "invalid_input", "to")),
    (("post", "/calls", {"to": NUMBER}), (422, "invalid_input", "agent_id")),
    (("get", "/no/such/route", None), (404, "not_found", None)),
    (("get", "/calls/call-that-does-not-exist", None), (404, "not_found", None)),
    (("delete", "/calls", None), (405, "method_not_allowed", None)),
]  # fmt: skip


def _check_error(status: int, body: Any, expected: tuple[int, str, str | None]) -> None:
    want_status, want_error, want_field = expected
    assert status == want_status, body
    assert isinstance(body, dict) and set(body) <= {"error", "message", "field"}, body
    assert body["error"] == want_error and isinstance(body["message"], str) and body["message"]
    assert body.get("field") == want_field
    # Advice for the SDK's own users (the client's option, the command line's
    # flag) means nothing to an HTTP client.
    assert "--default-region" not in body["message"]
    assert "default_region" not in body["message"]
    if want_field == "to" and "555-0103" in json.dumps(body):
        assert "international format" in body["message"] and "+14155550123" in body["message"]


async def test_fastapi_errors_have_one_shape(
    fastapi_module: ModuleType, voicehub_simulator_factory: SimulatorFactory
) -> None:
    sim = voicehub_simulator_factory(QUICK)
    async with _fastapi(fastapi_module, sim) as (_app, http):
        for (method, path, body), expected in ERROR_CASES:
            answer = await http.request(method, path, json=body)
            _check_error(answer.status_code, answer.json(), expected)
    assert sim.trigger_count == 0


async def test_aiohttp_errors_have_one_shape(
    aiohttp_module: ModuleType, voicehub_simulator_factory: SimulatorFactory
) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    sim = voicehub_simulator_factory(QUICK)
    app = aiohttp_module.create_app(_settings(aiohttp_module, sim))
    async with TestClient(TestServer(app)) as client:
        for (method, path, body), expected in ERROR_CASES:
            answer = await client.request(method, path, json=body)
            _check_error(answer.status, await answer.json(), expected)
    assert sim.trigger_count == 0


def test_aiohttp_example_binds_loopback_by_default(
    aiohttp_module: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    served: list[dict[str, Any]] = []
    monkeypatch.setattr(aiohttp_module.web, "run_app", lambda app, **kw: served.append(kw))
    monkeypatch.setenv("VOICEHUB_API_KEY", "key")
    monkeypatch.setenv("VOICEHUB_WEBHOOK_SECRET", "secret")
    monkeypatch.delenv("HOST", raising=False)
    monkeypatch.delenv("PORT", raising=False)
    aiohttp_module.main()
    monkeypatch.setenv("HOST", "0.0.0.0")
    aiohttp_module.main()
    assert [(kw["host"], kw["port"]) for kw in served] == [("127.0.0.1", 8000), ("0.0.0.0", 8000)]
