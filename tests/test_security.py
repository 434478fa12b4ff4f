"""The API key never leaks: not in repr, logs, exceptions, nor to another host.

One run drives the client through every path it has (success, each error
class, retries, ambiguous triggers, timeouts, resets, redirects, downloads,
connection failures) with logging at DEBUG everywhere, then searches every log
line and every exception for the key.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import traceback
from collections.abc import AsyncIterator, Awaitable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from voicehub_async import (
    AuthenticationError,
    CallRequest,
    RetryPolicy,
    Timeout,
    VoiceHubClient,
    VoiceHubError,
)
from voicehub_async.simulator import Fault, SimulatorConfig, SimulatorThread, pytest_plugin

voicehub_simulator_factory = pytest_plugin.voicehub_simulator_factory

#: Keys that look like real ones, so that a leak (even of a part) is easy to find.
SECRET_KEY = "dq_live_SECRET_4f9a2c7e1b8d"
WRONG_KEY = "dq_live_WRONG_77e1c0ffee42"
TO = "+14155550123"


async def no_sleep(_: float) -> None:
    await asyncio.sleep(0)


class Listener:
    """A tiny aiohttp server on 127.0.0.1 standing for "another host"; records requests."""

    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def _any(self, request: web.Request) -> web.Response:
        self.headers.append(dict(request.headers))
        return web.Response(body=b"RIFF....", content_type="audio/wav")

    async def __aenter__(self) -> Listener:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._any)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    async with Listener() as server:
        yield server


@pytest.fixture
def sim(voicehub_simulator_factory: pytest_plugin.SimulatorFactory) -> SimulatorThread:
    return voicehub_simulator_factory(SimulatorConfig(api_key=SECRET_KEY, known_agents={"agent-1"}))


def texts_of(error: BaseException) -> list[str]:
    """Everything a caller might print of ``error``: str, repr, traceback, chained errors."""
    out = ["".join(traceback.format_exception(error))]
    seen: set[int] = set()
    current: BaseException | None = error
    stack = [error]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        out += [str(current), repr(current), repr(current.args)]
        out += [repr(v) for v in vars(current).values()] if hasattr(current, "__dict__") else []
        stack += [current.__cause__, current.__context__]  # type: ignore[list-item]
        cause = getattr(current, "cause", None)
        if isinstance(cause, BaseException):
            stack.append(cause)
    return out


def assert_no_key(texts: list[str], *keys: str) -> None:
    for text in texts:
        for key in keys:
            assert key not in text, f"key leaked in: {text[:300]!r}"
            assert key[-12:] not in text, f"part of the key leaked in: {text[:300]!r}"


def test_repr_never_shows_the_key() -> None:
    client = VoiceHubClient(SECRET_KEY)
    assert_no_key([repr(client), str(client)], SECRET_KEY)
    assert "redacted" in repr(client)


async def test_key_absent_from_every_log_line_and_error(
    sim: SimulatorThread,
    listener: Listener,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    errors: list[BaseException] = []

    async def expect_error(awaitable: Awaitable[Any]) -> None:
        try:
            await awaitable
        except VoiceHubError as error:
            errors.append(error)
        else:  # pragma: no cover - a path meant to fail succeeded
            raise AssertionError("expected a VoiceHubError")

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]

    policy = RetryPolicy(max_retries=2, sleep=no_sleep)
    async with VoiceHubClient(
        SECRET_KEY, base_url=sim.base_url, retry_policy=policy, default_region="US"
    ) as client:
        assert_no_key([repr(client)], SECRET_KEY)
        # success paths
        call = await client.trigger_call("(415) 555-0123", "agent-1", context={"name": "Ada"})
        await client.trigger(
            CallRequest(
                to=TO,
                agent_id="agent-1",
                scheduled_at=datetime.now(timezone.utc) + timedelta(hours=1),
            )
        )
        await client.get_call(call.id)
        sim.set_status(call.id, "completed")
        recordings = await client.get_recordings(call.id)
        await client.download_recording(recordings.urls[0], tmp_path / "a.wav")
        elsewhere = f"http://127.0.0.1:{listener.port}/b.wav"
        await client.download_recording(elsewhere, tmp_path / "b.wav")
        # refused before sending
        await expect_error(client.trigger_call("12", "agent-1"))
        await expect_error(client.get_call(""))
        await expect_error(client.download_recording("http://example.com/x.wav", tmp_path / "x"))
        # every status class
        await expect_error(client.trigger_call(TO, "agent-2"))  # 400
        for code in (403, 404, 422, 500, 502, 503, 504):
            sim.inject(Fault.status(code), endpoint="status", times=None)
            await expect_error(client.get_call(call.id))
            sim.clear_faults()
        sim.inject(Fault.status(502, "<html><title>Bad Gateway</title></html>"), endpoint="status")
        sim.inject(Fault.status(500, ""), endpoint="status", times=2)
        await expect_error(client.get_call(call.id))
        await expect_error(client.get_call("no-such-call"))
        sim.inject(Fault.rate_limited(1), endpoint="trigger", times=None)
        await expect_error(client.trigger_call(TO, "agent-1"))
        sim.clear_faults()
        # the service echoing the key back in an error body
        sim.inject(
            Fault.status(400, {"message": f"key {SECRET_KEY} is not allowed"}), endpoint="status"
        )
        await expect_error(client.get_call(call.id))
        assert "<redacted>" in str(errors[-1])
        # ambiguous triggers: 5xx, reset, read timeout
        for fault in (Fault.status(500, create=True), Fault.reset(create=True)):
            sim.inject(fault, endpoint="trigger")
            await expect_error(client.trigger_call(TO, "agent-1"))
        sim.inject(Fault.delay(10.0), endpoint="trigger")
        await expect_error(
            client.trigger_call(TO, "agent-1", timeout=Timeout(connect=10, read=1.0))
        )
        # retried resets and timeouts on a read
        sim.inject(Fault.reset(), endpoint="status", times=2)
        await client.get_call(call.id)
        sim.inject(Fault.delay(10.0), endpoint="status")
        await client.get_call(call.id, timeout=Timeout(connect=10, read=1.0))
        # redirects to another host, on the API and on a download
        sim.inject(Fault.redirect(f"http://127.0.0.1:{listener.port}/steal"), times=None)
        await expect_error(client.trigger_call(TO, "agent-1"))
        await expect_error(client.get_call(call.id))
        await expect_error(client.download_recording(recordings.urls[0], tmp_path / "c.wav"))
        sim.clear_faults()
        # broken download
        sim.inject(Fault.reset(), endpoint="download", times=None)
        await expect_error(client.download_recording(recordings.urls[0], tmp_path / "d.wav"))
        sim.clear_faults()

    # a wrong key (401) and a service that cannot be reached
    async with VoiceHubClient(WRONG_KEY, base_url=sim.base_url, retry_policy=policy) as client:
        await expect_error(client.get_call(call.id))
        assert isinstance(errors[-1], AuthenticationError)
        assert_no_key([repr(client)], WRONG_KEY)
    async with VoiceHubClient(
        SECRET_KEY, base_url=f"http://127.0.0.1:{closed_port}", retry_policy=policy
    ) as client:
        await expect_error(client.trigger_call(TO, "agent-1"))
        await expect_error(client.get_call("c"))

    # The key went to the API host only.
    assert len(listener.headers) == 1  # the download from "another host", without the key
    for headers in listener.headers:
        assert_no_key([repr(headers)], SECRET_KEY)

    kinds = {type(e).__name__ for e in errors}
    assert {
        "InvalidRequestError",
        "BadRequestError",
        "PermissionDeniedError",
        "NotFoundError",
        "RateLimitError",
        "ServerError",
        "AmbiguousTriggerError",
        "RedirectError",
        "AuthenticationError",
        "APIConnectionError",
    } <= kinds
    texts = [text for error in errors for text in texts_of(error)]
    assert_no_key(texts, SECRET_KEY, WRONG_KEY)

    assert caplog.records, "the run logged nothing: the test would prove nothing"
    assert any(r.name == "voicehub_async" and r.levelno == logging.DEBUG for r in caplog.records)
    lines = [caplog.text] + [r.getMessage() for r in caplog.records]
    lines += [repr(r.args) for r in caplog.records]
    assert_no_key(lines, SECRET_KEY, WRONG_KEY)


async def test_key_echoed_in_an_error_body_is_redacted(sim: SimulatorThread) -> None:
    async with VoiceHubClient(SECRET_KEY, base_url=sim.base_url, max_retries=0) as client:
        sim.inject(
            Fault.status(401, f"<html><title>key {SECRET_KEY} revoked</title></html>"),
            endpoint="status",
        )
        with pytest.raises(AuthenticationError) as info:
            await client.get_call("c")
    assert info.value.message == "key <redacted> revoked"
    assert SECRET_KEY not in info.value.body
    assert "<redacted>" in info.value.body


@pytest.mark.parametrize(
    "url", ["http://voicehub.dataqueue.ai", "http://192.168.1.10:8080", "http://[::ffff:10.0.0.1]"]
)
def test_plain_http_refused_off_loopback(url: str) -> None:
    with pytest.raises(ValueError, match="https") as info:
        VoiceHubClient(SECRET_KEY, base_url=url)
    assert_no_key([str(info.value)], SECRET_KEY)


def test_no_key_in_env_error_either(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICEHUB_API_KEY", SECRET_KEY)
    monkeypatch.setenv("VOICEHUB_BASE_URL", "http://insecure.example")
    with pytest.raises(ValueError) as info:
        VoiceHubClient()
    assert_no_key(texts_of(info.value), SECRET_KEY)


@pytest.mark.parametrize("key", ["dq_live_SECRET\n4f9a2c7e1b8d", "dq_live_SECRET\x004f9a2c7e1b8d"])
def test_key_with_control_characters_refused_without_showing_it(key: str) -> None:
    with pytest.raises(VoiceHubError, match="control characters") as info:
        VoiceHubClient(key)
    assert_no_key(texts_of(info.value), "SECRET", "4f9a2c7e1b8d")
