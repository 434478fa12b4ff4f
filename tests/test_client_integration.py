"""The client against the simulator over real sockets on 127.0.0.1.

Every endpoint, every error class, and above all the retry rules of the
non-idempotent trigger: the simulator's log shows exactly how many triggers
reached it and how many calls were placed. Waits between attempts go through
an injected sleep, so Retry-After is checked by value and nothing waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import socket
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from voicehub_async import (
    AmbiguousTriggerError,
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    CallStatus,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RedirectError,
    RetryPolicy,
    ServerError,
    Timeout,
    UnexpectedResponseError,
    VoiceHubClient,
)
from voicehub_async.simulator import Fault, SimulatorConfig, SimulatorThread, pytest_plugin

# The plugin's fixtures, also when the pytest11 entry point is not installed.
voicehub_simulator = pytest_plugin.voicehub_simulator
voicehub_simulator_factory = pytest_plugin.voicehub_simulator_factory

TO = "+14155550123"
AGENT = "agent-1"
#: Read timeout for the tests that provoke one: short, but far above a local answer.
READ_TIMEOUT = Timeout(connect=10.0, read=1.0)
#: How long a delayed answer is held back: far above READ_TIMEOUT.
LONG_DELAY = 10.0


class Sleeps:
    """An injected sleep: records each wait and yields without waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(0)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def sim(voicehub_simulator_factory: pytest_plugin.SimulatorFactory) -> SimulatorThread:
    return voicehub_simulator_factory(SimulatorConfig(known_agents={AGENT, "agent-2"}))


def make_client(
    sim: SimulatorThread, sleeps: Sleeps, *, max_retries: int = 3, **options: Any
) -> VoiceHubClient:
    ambiguous = options.pop("retry_ambiguous_triggers", False)
    return VoiceHubClient(
        options.pop("api_key", sim.api_key),
        base_url=options.pop("base_url", sim.base_url),
        retry_policy=RetryPolicy(
            max_retries=max_retries, retry_ambiguous_triggers=ambiguous, sleep=sleeps
        ),
        **options,
    )


@pytest.fixture
async def client(sim: SimulatorThread, sleeps: Sleeps) -> AsyncIterator[VoiceHubClient]:
    async with make_client(sim, sleeps) as client:
        yield client


class OtherHost:
    """A second tiny aiohttp server on 127.0.0.1 that records every request.

    ``/partial`` promises 100000 bytes, sends 1000 and drops the connection.
    """

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _partial(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path, dict(request.headers)))
        response = web.StreamResponse(headers={"Content-Type": "audio/wav"})
        response.content_length = 100_000
        await response.prepare(request)
        await response.write(b"RIFF" + b"\x00" * 996)
        assert request.transport is not None
        request.transport.abort()
        return response

    async def _any(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path, dict(request.headers)))
        return web.json_response({"id": "stolen", "status": "Queued", "type": "voip"})

    async def __aenter__(self) -> OtherHost:
        app = web.Application()
        app.router.add_get("/partial", self._partial)
        app.router.add_route("*", "/{tail:.*}", self._any)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


@pytest.fixture
async def other_host() -> AsyncIterator[OtherHost]:
    async with OtherHost() as host:
        yield host


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 nobody listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    yield port


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# -- every endpoint ----------------------------------------------------------------------------


async def test_trigger_and_get_call(client: VoiceHubClient, sim: SimulatorThread) -> None:
    call = await client.trigger_call(TO, AGENT, context={"name": "Ada"})
    assert call.status == CallStatus.QUEUED
    assert call.type == "voip"
    assert call.attempts == 1
    [record] = sim.triggers
    assert (record.to, record.agent_id, record.context) == (TO, AGENT, {"name": "Ada"})
    assert record.call_id == call.id and record.created
    assert sim.calls_placed_to(TO) == 1

    again = await client.get_call(call.id)
    assert again.id == call.id
    assert again.attempts == 1
    sim.set_status(call.id, "completed")
    done = await client.get_call(call.id)
    assert done.status == CallStatus.COMPLETED
    assert done.is_terminal
    assert str(done.status) == "Completed"


async def test_numbers_normalised_before_sending(sim: SimulatorThread, sleeps: Sleeps) -> None:
    async with make_client(sim, sleeps, default_region="US") as client:
        await client.trigger_call("(415) 555-0123", AGENT, from_number="415.555.0199")
    [record] = sim.triggers
    assert (record.to, record.from_number) == ("+14155550123", "+14155550199")


async def test_schedule_sends_utc_minutes(client: VoiceHubClient, sim: SimulatorThread) -> None:
    plus_two = timezone(timedelta(hours=2))
    when = (datetime.now(plus_two) + timedelta(hours=3)).replace(second=0, microsecond=0)
    call = await client.trigger_call(TO, AGENT, scheduled_at=when)
    assert call.status == CallStatus.SCHEDULED
    [record] = sim.triggers
    assert record.scheduled_at == when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M")
    assert record.context is None and record.from_number is None


async def test_unknown_status_tolerated(client: VoiceHubClient, sim: SimulatorThread) -> None:
    call = await client.trigger_call(TO, AGENT)
    sim.set_status(call.id, "Voicemail-Left")
    seen = await client.get_call(call.id)
    assert str(seen.status) == "Voicemail-Left"
    assert not seen.status.is_known
    assert not seen.is_terminal


@pytest.mark.parametrize("shape", ["string", "list", "object"])
async def test_recordings_every_shape_and_download(
    voicehub_simulator_factory: pytest_plugin.SimulatorFactory,
    sleeps: Sleeps,
    tmp_path: Path,
    shape: Any,
) -> None:
    sim = voicehub_simulator_factory(SimulatorConfig(recordings_shape=shape))
    async with make_client(sim, sleeps) as client:
        call = await client.trigger_call(TO, AGENT)
        with pytest.raises(NotFoundError):  # not completed yet: no recording
            await client.get_recordings(call.id)
        sim.set_status(call.id, "completed")
        recordings = await client.get_recordings(call.id)
        expected = f"{sim.base_url}/recordings/{call.id}.wav"
        assert recordings.urls == (expected,)
        assert recordings.url == expected
        assert recordings.call_id == call.id

        target = tmp_path / "call.wav"
        assert await client.download_recording(expected, target) == target
    data = target.read_bytes()
    assert len(data) == sim.config.recording_size
    assert data.startswith(b"RIFF")
    assert leftovers(tmp_path) == ["call.wav"]  # the temp file was renamed, not copied


async def test_download_replaces_an_existing_file_only_when_complete(
    client: VoiceHubClient, sim: SimulatorThread, tmp_path: Path
) -> None:
    call = await client.trigger_call(TO, AGENT)
    sim.set_status(call.id, "completed")
    url = (await client.get_recordings(call.id)).urls[0]
    target = tmp_path / "call.wav"
    target.write_bytes(b"old")
    sim.inject(Fault.reset(), endpoint="download", times=None)
    with pytest.raises(APIConnectionError):
        await client.download_recording(url, target, max_retries=1)
    assert target.read_bytes() == b"old"
    assert leftovers(tmp_path) == ["call.wav"]
    sim.clear_faults()
    await client.download_recording(url, target)
    assert len(target.read_bytes()) == sim.config.recording_size


async def test_broken_download_leaves_no_file(
    client: VoiceHubClient, sim: SimulatorThread, sleeps: Sleeps, tmp_path: Path
) -> None:
    call = await client.trigger_call(TO, AGENT)
    sim.set_status(call.id, "completed")
    url = (await client.get_recordings(call.id)).urls[0]
    sim.inject(Fault.reset(), endpoint="download", times=None)
    with pytest.raises(APIConnectionError) as info:
        await client.download_recording(url, tmp_path / "call.wav")
    assert info.value.attempts == 4  # a download is a read: retried
    assert len(sleeps.waits) == 3
    assert leftovers(tmp_path) == []


async def test_truncated_download_leaves_no_file(
    client: VoiceHubClient, other_host: OtherHost, tmp_path: Path
) -> None:
    with pytest.raises(APIConnectionError) as info:
        await client.download_recording(
            f"{other_host.base_url}/partial", tmp_path / "call.wav", max_retries=0
        )
    assert info.value.sent
    assert leftovers(tmp_path) == []
    # Another host than the API's: the key was not sent to it.
    [(_, _, headers)] = other_host.requests
    assert "x-dq-api-key" not in {name.lower() for name in headers}


async def test_download_error_status_leaves_no_file(
    client: VoiceHubClient, sim: SimulatorThread, tmp_path: Path
) -> None:
    with pytest.raises(NotFoundError):
        await client.download_recording("/recordings/nope.wav", tmp_path / "call.wav")
    assert leftovers(tmp_path) == []


async def test_many_concurrent_triggers_share_the_pool(
    client: VoiceHubClient, sim: SimulatorThread
) -> None:
    numbers = [f"+1415555{n:04d}" for n in range(100, 140)]
    calls = await asyncio.gather(*(client.trigger_call(n, AGENT) for n in numbers))
    assert len({c.id for c in calls}) == len(numbers)
    assert sim.created_count == len(numbers)
    assert all(sim.calls_placed_to(n) == 1 for n in numbers)


# -- every error class -----------------------------------------------------------------------


async def test_400_bad_request_with_the_service_message(
    client: VoiceHubClient, sim: SimulatorThread, sleeps: Sleeps
) -> None:
    with pytest.raises(BadRequestError) as info:
        await client.trigger_call(TO, "agent-of-someone-else")
    err = info.value
    assert err.status == 400
    assert err.message == "agentId does not name an agent of this account"
    assert "agentId does not name an agent" in str(err)
    assert '"message"' in err.body
    assert err.attempts == 1
    assert len(sim.triggers) == 1 and sim.created_count == 0
    assert sleeps.waits == []


@pytest.mark.parametrize(
    ("fault", "cls", "message"),
    [
        (
            Fault.status(422, {"message": "scheduledAt is in the past"}),
            BadRequestError,
            "scheduledAt is in the past",
        ),
        (
            Fault.status(
                400,
                {
                    "statusCode": 400,
                    "message": ["to is bad", "from is bad"],
                    "error": "Bad Request",
                },
            ),
            BadRequestError,
            "to is bad; from is bad",
        ),
        (
            Fault.status(403, {"error": {"message": "agent belongs to another account"}}),
            PermissionDeniedError,
            "agent belongs to another account",
        ),
        (Fault.status(404, {"detail": "no such call"}), NotFoundError, "no such call"),
        (Fault.status(418, "I'm a teapot"), APIStatusError, "I'm a teapot"),
    ],
)
async def test_error_classes_and_messages(
    client: VoiceHubClient,
    sim: SimulatorThread,
    fault: Any,
    cls: type[APIStatusError],
    message: str,
) -> None:
    sim.inject(fault, endpoint="status")
    with pytest.raises(APIStatusError) as info:
        await client.get_call("some-call")
    assert type(info.value) is cls
    assert info.value.status == fault.code
    assert info.value.message == message
    assert info.value.attempts == 1


async def test_401_wrong_key(sim: SimulatorThread, sleeps: Sleeps) -> None:
    async with make_client(sim, sleeps, api_key="not-the-key") as client:
        with pytest.raises(AuthenticationError) as info:
            await client.trigger_call(TO, AGENT)
    assert info.value.status == 401
    assert info.value.message == "invalid api key"
    assert info.value.attempts == 1
    assert sim.created_count == 0


async def test_404_unknown_call(client: VoiceHubClient) -> None:
    with pytest.raises(NotFoundError) as info:
        await client.get_call("no-such-call")
    assert info.value.message == "call not found"
    assert info.value.attempts == 1


async def test_429_rate_limit_error_carries_retry_after(
    client: VoiceHubClient, sim: SimulatorThread
) -> None:
    sim.inject(Fault.rate_limited(7), endpoint="trigger")
    with pytest.raises(RateLimitError) as info:
        await client.trigger_call(TO, AGENT, max_retries=0)
    assert info.value.status == 429
    assert info.value.retry_after == 7
    assert info.value.message == "rate limit exceeded"
    assert info.value.headers["Retry-After"] == "7"


async def test_5xx_server_error_after_retries(
    client: VoiceHubClient, sim: SimulatorThread, sleeps: Sleeps
) -> None:
    sim.inject(Fault.status(500), endpoint="status", times=None)
    with pytest.raises(ServerError) as info:
        await client.get_call("some-call", max_retries=2)
    assert info.value.status == 500
    assert info.value.message == "internal server error"
    assert info.value.attempts == 3
    assert len(sleeps.waits) == 2
    assert sim.request_count["status"] == 3


async def test_html_error_body(client: VoiceHubClient, sim: SimulatorThread) -> None:
    html = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
    sim.inject(Fault.status(502, html), endpoint="status")
    with pytest.raises(ServerError) as info:
        await client.get_call("some-call", max_retries=0)
    assert info.value.message == "502 Bad Gateway"
    assert info.value.body == html


async def test_empty_error_body(client: VoiceHubClient, sim: SimulatorThread) -> None:
    sim.inject(Fault.status(500, ""), endpoint="status")
    with pytest.raises(ServerError) as info:
        await client.get_call("some-call", max_retries=0)
    assert info.value.message == "Internal Server Error"
    assert info.value.body == ""


@pytest.mark.parametrize("body", ["not json at all", {"no": "call here"}, ["x"]])
async def test_success_without_a_call(
    client: VoiceHubClient, sim: SimulatorThread, body: Any
) -> None:
    sim.inject(Fault.status(200, body), endpoint="status")
    with pytest.raises(UnexpectedResponseError):
        await client.get_call("some-call")
    # On a trigger the same answer is ambiguous: the call was probably placed.
    sim.inject(Fault.status(200, body), endpoint="trigger")
    with pytest.raises(AmbiguousTriggerError) as info:
        await client.trigger_call(TO, AGENT)
    assert isinstance(info.value.cause, UnexpectedResponseError)
    assert len(sim.triggers) == 1


async def test_redirect_to_another_host_not_followed(
    client: VoiceHubClient, sim: SimulatorThread, other_host: OtherHost, api_key: str
) -> None:
    location = f"{other_host.base_url}/api/v1/calls/api-call"
    sim.inject(Fault.redirect(location), endpoint="any", times=3)
    with pytest.raises(RedirectError) as info:
        await client.trigger_call(TO, AGENT)
    assert info.value.status == 302
    assert location in str(info.value)
    assert "base_url" in str(info.value)
    assert info.value.attempts == 1
    with pytest.raises(RedirectError):
        await client.get_call("some-call")
    with pytest.raises(RedirectError):
        await client.get_recordings("some-call")
    assert other_host.requests == []
    assert sim.created_count == 0


async def test_download_redirect_not_followed(
    client: VoiceHubClient, sim: SimulatorThread, other_host: OtherHost, tmp_path: Path
) -> None:
    sim.inject(Fault.redirect(f"{other_host.base_url}/x.wav"), endpoint="download")
    with pytest.raises(RedirectError):
        await client.download_recording("/recordings/x.wav", tmp_path / "x.wav")
    assert other_host.requests == []
    assert leftovers(tmp_path) == []


# -- Retry-After ---------------------------------------------------------------------------------


async def test_retry_after_seconds_honoured(
    client: VoiceHubClient, sim: SimulatorThread, sleeps: Sleeps
) -> None:
    sim.inject(Fault.rate_limited(3), endpoint="status")
    sim.inject(Fault.status(503, headers={"Retry-After": "2"}), endpoint="status")
    call = await client.trigger_call(TO, AGENT)
    seen = await client.get_call(call.id)
    assert sleeps.waits == [3, 2]
    assert seen.attempts == 3


async def test_retry_after_http_date_honoured(
    client: VoiceHubClient, sim: SimulatorThread, sleeps: Sleeps
) -> None:
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    sim.inject(Fault.rate_limited(date), endpoint="trigger")
    call = await client.trigger_call(TO, AGENT)
    assert call.attempts == 2
    [wait] = sleeps.waits
    assert 15 <= wait <= 30  # whole seconds in the header; generous for a loaded machine


async def test_retry_after_capped_by_policy(sim: SimulatorThread, sleeps: Sleeps) -> None:
    async with VoiceHubClient(
        sim.api_key,
        base_url=sim.base_url,
        retry_policy=RetryPolicy(retry_after_max=5, sleep=sleeps),
    ) as client:
        sim.inject(Fault.rate_limited(3600), endpoint="trigger")
        await client.trigger_call(TO, AGENT)
    assert sleeps.waits == [5]


# -- the trigger is never re-sent when it may have reached the service ---------------------------


async def test_read_timeout_on_trigger_not_resent(
    client: VoiceHubClient, sim: SimulatorThread, sleeps: Sleeps
) -> None:
    sim.inject(Fault.delay(LONG_DELAY), endpoint="trigger")
    with pytest.raises(AmbiguousTriggerError) as info:
        await client.trigger_call(TO, AGENT, timeout=READ_TIMEOUT)
    err = info.value
    assert isinstance(err.cause, APITimeoutError)
    assert err.cause.sent
    assert err.attempts == 1
    assert err.cause.attempts == 1
    assert len(sim.triggers) == 1
    assert sim.trigger_count == 1
    assert sleeps.waits == []


async def test_read_timeout_on_get_call_retried(
    client: VoiceHubClient, sim: SimulatorThread, sleeps: Sleeps
) -> None:
    call = await client.trigger_call(TO, AGENT)
    sim.inject(Fault.delay(LONG_DELAY), endpoint="status")
    seen = await client.get_call(call.id, timeout=READ_TIMEOUT)
    assert seen.id == call.id
    assert seen.attempts == 2
    assert len(sleeps.waits) == 1
    assert sim.request_count["status"] == 2


@pytest.mark.parametrize("create", [True, False])
async def test_reset_on_trigger_is_ambiguous(
    client: VoiceHubClient, sim: SimulatorThread, create: bool
) -> None:
    sim.inject(Fault.reset(create=create), endpoint="trigger")
    with pytest.raises(AmbiguousTriggerError) as info:
        await client.trigger_call(TO, AGENT)
    assert type(info.value.cause) is APIConnectionError
    assert info.value.cause.sent
    assert len(sim.triggers) == 1
    assert sim.calls_placed_to(TO) == (1 if create else 0)


async def test_reset_on_get_call_retried(client: VoiceHubClient, sim: SimulatorThread) -> None:
    call = await client.trigger_call(TO, AGENT)
    # aiohttp itself re-sends an idempotent GET once on a dropped connection
    # (never a POST); three resets outlast that, so the client's retry shows.
    sim.inject(Fault.reset(), endpoint="status", times=3)
    seen = await client.get_call(call.id)
    assert seen.id == call.id
    assert seen.attempts >= 2
    assert sim.request_count["status"] == 4


@pytest.mark.parametrize("code", [500, 502, 504])
async def test_5xx_on_trigger_is_ambiguous(
    client: VoiceHubClient, sim: SimulatorThread, sleeps: Sleeps, code: int
) -> None:
    sim.inject(Fault.status(code, create=True), endpoint="trigger")
    with pytest.raises(AmbiguousTriggerError) as info:
        await client.trigger_call(TO, AGENT)
    assert isinstance(info.value.cause, ServerError)
    assert info.value.cause.status == code
    assert info.value.attempts == 1
    assert len(sim.triggers) == 1
    assert sim.calls_placed_to(TO) == 1
    assert sleeps.waits == []
    assert str(code) in str(info.value)


@pytest.mark.parametrize("fault", [Fault.status(503), Fault.rate_limited(1)])
async def test_503_and_429_on_trigger_retried_one_call(
    client: VoiceHubClient, sim: SimulatorThread, sleeps: Sleeps, fault: Any
) -> None:
    sim.inject(fault, endpoint="trigger", times=2)
    call = await client.trigger_call(TO, AGENT)
    assert call.attempts == 3
    assert len(sim.triggers) == 3
    assert sim.created_count == 1
    assert sim.calls_placed_to(TO) == 1
    assert [r.created for r in sim.triggers] == [False, False, True]
    assert len(sleeps.waits) == 2


async def test_503_on_trigger_exhausted_is_not_ambiguous(
    client: VoiceHubClient, sim: SimulatorThread
) -> None:
    sim.inject(Fault.status(503), endpoint="trigger", times=None)
    with pytest.raises(ServerError) as info:
        await client.trigger_call(TO, AGENT, max_retries=1)
    assert info.value.status == 503
    assert info.value.attempts == 2
    assert sim.created_count == 0


async def test_ambiguous_retry_is_opt_in(sim: SimulatorThread, sleeps: Sleeps) -> None:
    async with make_client(sim, sleeps, retry_ambiguous_triggers=True) as client:
        sim.inject(Fault.status(500, create=True), endpoint="trigger")
        call = await client.trigger_call(TO, AGENT)
    assert call.attempts == 2
    # The price of opting in: the first attempt had placed a call too.
    assert len(sim.triggers) == 2
    assert sim.calls_placed_to(TO) == 2


async def test_could_not_connect_retried_for_a_trigger(closed_port: int, sleeps: Sleeps) -> None:
    async with VoiceHubClient(
        "key",
        base_url=f"http://127.0.0.1:{closed_port}",
        retry_policy=RetryPolicy(max_retries=3, sleep=sleeps),
    ) as client:
        with pytest.raises(APIConnectionError) as info:
            await client.trigger_call(TO, AGENT)
    err = info.value
    assert not isinstance(err, AmbiguousTriggerError)
    assert not err.sent
    assert err.attempts == 4
    assert len(sleeps.waits) == 3
    assert f"127.0.0.1:{closed_port}" in str(err)


async def test_could_not_connect_then_the_service_is_back(
    sim: SimulatorThread, closed_port: int
) -> None:
    """A trigger refused at connect is re-sent, and reaches the service once it answers."""
    async with VoiceHubClient(sim.api_key, base_url=f"http://127.0.0.1:{closed_port}") as client:
        switched = False

        async def service_comes_back(_: float) -> None:
            # Between attempts the "service comes back": point the client at it.
            nonlocal switched
            client.base_url = sim.base_url
            switched = True

        client.retry_policy = RetryPolicy(max_retries=2, sleep=service_comes_back)
        call = await client.trigger_call(TO, AGENT)
    assert switched
    assert call.attempts == 2
    assert len(sim.triggers) == 1
    assert sim.calls_placed_to(TO) == 1


async def test_max_retries_zero_per_call(client: VoiceHubClient, sim: SimulatorThread) -> None:
    sim.inject(Fault.status(503), endpoint="trigger")
    with pytest.raises(ServerError) as info:
        await client.trigger_call(TO, AGENT, max_retries=0)
    assert info.value.attempts == 1
    assert len(sim.triggers) == 1


async def test_waiting_for_a_pooled_connection_is_not_ambiguous(
    sim: SimulatorThread, sleeps: Sleeps
) -> None:
    """A trigger that timed out waiting for a free connection was never sent."""
    async with make_client(sim, sleeps, max_connections=1, max_retries=0) as client:
        call = await client.trigger_call(TO, AGENT)
        sim.inject(Fault.delay(LONG_DELAY), endpoint="status")
        holder = asyncio.create_task(client.get_call(call.id))  # holds the only connection
        for _ in range(1000):  # until the server holds it (10 s at most)
            if sim.request_count["status"]:
                break
            await asyncio.sleep(0.01)
        with pytest.raises(APITimeoutError) as info:
            await client.trigger_call(TO, AGENT, timeout=Timeout(connect=0.5, read=10.0))
        holder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await holder
    assert not isinstance(info.value, AmbiguousTriggerError)
    assert not info.value.sent
    assert "getting a connection" in str(info.value)
    assert len(sim.triggers) == 1  # only the first trigger


@pytest.mark.parametrize("call_id", [None, "", "  ", {"nested": "id"}, ["id"], True], ids=repr)
async def test_trigger_answer_without_a_usable_call_id_is_ambiguous(
    client: VoiceHubClient, sim: SimulatorThread, call_id: Any
) -> None:
    # {"id": null, "status": "Queued"} is not a readable call: its id would be
    # stored and polled as "None" (or "", which breaks tracking on resume).
    sim.inject(Fault.status(200, {"id": call_id, "status": "Queued"}), endpoint="trigger")
    with pytest.raises(AmbiguousTriggerError) as info:
        await client.trigger_call(TO, AGENT)
    assert isinstance(info.value.cause, UnexpectedResponseError)
    assert len(sim.triggers) == 1
