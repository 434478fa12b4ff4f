"""Errors that keep the service's answer never keep the key: message, body,
headers (names and values), str, repr and the traceback, through the real
client against a server on 127.0.0.1 that echoes the key everywhere it can."""

from __future__ import annotations

import traceback
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from voicehub_async import (
    AmbiguousTriggerError,
    APIStatusError,
    AuthenticationError,
    CallRequest,
    UnexpectedResponseError,
    VoiceHubClient,
    VoiceHubError,
)
from voicehub_async.errors import REDACTED, error_message

KEY = "dq_live_ECHOED_9c1e77a0b3f4d2"


def texts_of(error: BaseException) -> list[str]:
    """Everything a person might log or print of ``error``."""
    texts = [str(error), repr(error), repr(error.args), repr(vars(error))]
    texts.append("".join(traceback.format_exception(error)))
    for name in ("message", "body"):
        texts.append(str(getattr(error, name, "")))
    headers = getattr(error, "headers", {})
    texts += [f"{name}: {value}" for name, value in headers.items()]
    cause = getattr(error, "cause", None)
    if cause is not None:
        texts += texts_of(cause)
    return texts


def assert_no_key(error: BaseException) -> None:
    for text in texts_of(error):
        assert KEY not in text, text[:300]
        assert KEY[-10:] not in text, text[:300]  # nor a recognisable part


def echoing_headers(request: web.Request) -> dict[str, str]:
    given = request.headers.get("x-dq-api-key", "")
    return {
        "WWW-Authenticate": f'ApiKey realm="voicehub", error="invalid_key", key="{given}"',
        "X-Echo-Key": given,
        f"X-Debug-{given}": "1",  # even a header's name
    }


@pytest.fixture
async def echo_server() -> AsyncIterator[str]:
    async def status(request: web.Request) -> web.Response:
        given = request.headers.get("x-dq-api-key", "")
        return web.json_response(
            {"message": f"key {given} is revoked", "key": given},
            status=401,
            headers=echoing_headers(request),
        )

    async def trigger(request: web.Request) -> web.Response:
        given = request.headers.get("x-dq-api-key", "")
        return web.Response(
            status=500,
            text=f"<html><title>crash for {given}</title></html>",
            headers=echoing_headers(request),
        )

    async def recordings(request: web.Request) -> web.Response:
        given = request.headers.get("x-dq-api-key", "")
        return web.Response(status=200, text=f"not json, but your key: {given}")

    app = web.Application()
    app.router.add_get("/api/v1/calls/status/{id}/", status)
    app.router.add_post("/api/v1/calls/api-call", trigger)
    app.router.add_get("/api/v1/calls/e2e/{id}/recordings", recordings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_a_401_echoing_the_key_in_its_headers_is_redacted(echo_server: str) -> None:
    async with VoiceHubClient(KEY, base_url=echo_server, max_retries=0) as client:
        with pytest.raises(AuthenticationError) as info:
            await client.get_call("c-1")
    error = info.value
    assert_no_key(error)
    # Redacted, not dropped: the rest of the answer is still there to read.
    assert error.headers["WWW-Authenticate"] == (
        f'ApiKey realm="voicehub", error="invalid_key", key="{REDACTED}"'
    )
    assert error.headers["X-Echo-Key"] == REDACTED
    assert f"X-Debug-{REDACTED}" in error.headers
    assert error.message == f"key {REDACTED} is revoked"
    assert REDACTED in error.body


async def test_an_ambiguous_trigger_keeps_a_redacted_cause(echo_server: str) -> None:
    request = CallRequest(to="+14155550123", agent_id="agent-1")
    async with VoiceHubClient(KEY, base_url=echo_server, max_retries=0) as client:
        with pytest.raises(AmbiguousTriggerError) as info:
            await client.trigger(request)
    assert isinstance(info.value.cause, APIStatusError)
    assert info.value.cause.headers["X-Echo-Key"] == REDACTED
    assert_no_key(info.value)


async def test_a_success_answer_that_is_not_json_is_redacted(echo_server: str) -> None:
    async with VoiceHubClient(KEY, base_url=echo_server, max_retries=0) as client:
        with pytest.raises(UnexpectedResponseError) as info:
            await client.get_recordings("c-1")
    assert_no_key(info.value)
    assert REDACTED in info.value.body


def test_the_key_is_redacted_before_the_body_is_cut() -> None:
    # A key straddling the body limit would otherwise leave its first half.
    body = "x" * 1990 + KEY
    error = APIStatusError(400, "bad", body, {"Set": KEY}, secret=KEY)
    assert KEY[:8] not in error.body and error.headers == {"Set": REDACTED}
    assert isinstance(error, VoiceHubError)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"message": "to is invalid"}', "to is invalid"),
        (b'{"error": {"message": "nested"}}', "nested"),
        (b'{"detail": ["a", "b"]}', "a; b"),
        (b"<html><title> Bad Gateway </title></html>", "Bad Gateway"),
        (b"plain words", "plain words"),
        (b"[" * 20000 + b"]" * 20000, "Reason"),  # deep nesting: RecursionError, not a crash
        (b'{"message": ' + b"1" * 5000 + b"}", "Reason"),  # more digits than int() takes
        (b'{"message": "caf\xe9"}', "Reason"),  # not UTF-8
        (b"", "Reason"),
        (b'{"message": "' + b"m" * 5000 + b'"}', "m" * 497 + "..."),
    ],
)
def test_error_message_reads_any_body(body: bytes, expected: str) -> None:
    assert error_message(body, "Reason") == expected
