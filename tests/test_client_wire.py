"""The exact shape of every request on the wire (aioresponses), and the client's configuration.

Behaviour across a real network (errors, retries, timeouts) is tested against
the simulator in test_client_integration.py; here only what is sent is pinned.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses
from yarl import URL

from voicehub_async import (
    CallRequest,
    CallStatus,
    InvalidRequestError,
    RetryPolicy,
    Timeout,
    VoiceHubClient,
    VoiceHubError,
)

BASE = "https://voicehub.dataqueue.ai"
TRIGGER_URL = f"{BASE}/api/v1/calls/api-call"
QUEUED = {"id": "call-1", "status": "Queued", "type": "voip"}


@pytest.fixture
def mocked(mock_aiohttp: aioresponses) -> aioresponses:
    return mock_aiohttp


@pytest.fixture
async def client(api_key: str) -> AsyncIterator[VoiceHubClient]:
    async with VoiceHubClient(api_key, default_region="US", max_retries=0) as client:
        yield client


def sent(mock: aioresponses, method: str, url: str) -> list[dict[str, Any]]:
    """The keyword arguments of every request sent to ``method url``."""
    return [call.kwargs for call in mock.requests.get((method, URL(url)), [])]


# -- trigger ---------------------------------------------------------------------------------


async def test_trigger_wire(client: VoiceHubClient, mocked: aioresponses, api_key: str) -> None:
    mocked.post(TRIGGER_URL, payload=QUEUED)
    call = await client.trigger_call(
        "(415) 555-0123",
        "agent-7",
        context={"name": "Ada", "order": 42},
        scheduled_at=datetime(2099, 3, 4, 15, 30, 45, tzinfo=timezone(timedelta(hours=2))),
        from_number="+1 415 555 0199",
    )
    assert call.id == "call-1"
    assert call.status == CallStatus.QUEUED
    assert call.type == "voip"
    assert call.attempts == 1
    [request] = sent(mocked, "POST", TRIGGER_URL)
    assert request["headers"]["x-dq-api-key"] == api_key
    assert request["json"] == {
        "to": "+14155550123",
        "agentId": "agent-7",
        "context": {"name": "Ada", "order": 42},
        "scheduledAt": "2099-03-04T13:30",
        "from": "+14155550199",
    }
    assert request["allow_redirects"] is False


async def test_trigger_omits_optional_fields(client: VoiceHubClient, mocked: aioresponses) -> None:
    mocked.post(TRIGGER_URL, payload=QUEUED)
    await client.trigger_call("+14155550123", "agent-7")
    [request] = sent(mocked, "POST", TRIGGER_URL)
    assert request["json"] == {"to": "+14155550123", "agentId": "agent-7"}


async def test_trigger_scheduled_answer(client: VoiceHubClient, mocked: aioresponses) -> None:
    mocked.post(TRIGGER_URL, payload={"id": "c2", "status": "Scheduled", "type": "voip"})
    call = await client.trigger(
        CallRequest(
            to="+14155550123",
            agent_id="a",
            scheduled_at=datetime.now(timezone.utc) + timedelta(hours=1),
        )
    )
    assert call.status == CallStatus.SCHEDULED
    assert not call.is_terminal


async def test_invalid_request_sends_nothing(client: VoiceHubClient, mocked: aioresponses) -> None:
    with pytest.raises(InvalidRequestError) as info:
        await client.trigger_call("12", "agent-7")
    assert info.value.field == "to"
    assert mocked.requests == {}


async def test_no_country_code_refused_without_default_region(
    api_key: str, mocked: aioresponses
) -> None:
    async with VoiceHubClient(api_key) as client:
        with pytest.raises(InvalidRequestError) as info:
            await client.trigger_call("(415) 555-0123", "agent-7")
    assert info.value.field == "to"
    assert "default_region" in str(info.value)
    assert mocked.requests == {}


async def test_prepared_request_sent_as_is(client: VoiceHubClient, mocked: aioresponses) -> None:
    mocked.post(TRIGGER_URL, payload=QUEUED)
    prepared = client.prepare(CallRequest(to="415-555-0123", agent_id="a"))
    assert prepared.to == "+14155550123"
    with pytest.warns(DeprecationWarning, match="prepared"):  # still works for one release
        await client.trigger(prepared, prepared=True)
    [request] = sent(mocked, "POST", TRIGGER_URL)
    assert request["json"] == {"to": "+14155550123", "agentId": "a"}


async def test_per_request_timeout(client: VoiceHubClient, mocked: aioresponses) -> None:
    mocked.post(TRIGGER_URL, payload=QUEUED)
    await client.trigger_call("+14155550123", "a", timeout=Timeout(connect=1, read=2, total=5))
    [request] = sent(mocked, "POST", TRIGGER_URL)
    timeout = request["timeout"]
    assert (timeout.total, timeout.sock_connect, timeout.sock_read) == (5, 1, 2)


# -- reads -------------------------------------------------------------------------------------


async def test_get_call_wire(client: VoiceHubClient, mocked: aioresponses, api_key: str) -> None:
    url = f"{BASE}/api/v1/calls/status/call-1/"
    mocked.get(url, payload={"id": "call-1", "status": "in-progress", "type": "voip"})
    call = await client.get_call("call-1")
    assert call.status == CallStatus.IN_PROGRESS
    [request] = sent(mocked, "GET", url)
    assert request["headers"]["x-dq-api-key"] == api_key
    assert request.get("json") is None
    assert request["allow_redirects"] is False


async def test_call_id_is_quoted_into_one_segment(
    client: VoiceHubClient, mocked: aioresponses
) -> None:
    url = f"{BASE}/api/v1/calls/status/a%2F..%2Fb%3Fx/"
    mocked.get(URL(url, encoded=True), payload={"id": "a/../b?x", "status": "queued"})
    await client.get_call("a/../b?x")
    assert len(mocked.requests) == 1
    [(_, sent_url)] = mocked.requests
    assert sent_url.raw_path == "/api/v1/calls/status/a%2F..%2Fb%3Fx/"


@pytest.mark.parametrize("call_id", ["", "  ", None, 3])
async def test_bad_call_id_refused(
    client: VoiceHubClient, mocked: aioresponses, call_id: Any
) -> None:
    with pytest.raises(InvalidRequestError) as info:
        await client.get_call(call_id)
    assert info.value.field == "call_id"
    with pytest.raises(InvalidRequestError):
        await client.get_recordings(call_id)
    assert mocked.requests == {}


async def test_get_recordings_wire(
    client: VoiceHubClient, mocked: aioresponses, api_key: str
) -> None:
    url = f"{BASE}/api/v1/calls/e2e/call-1/recordings"
    mocked.get(
        url,
        payload={
            "callId": "call-1",
            "recordings": ["/files/call-1.wav", "https://cdn.example/x.wav", "files/y.wav"],
        },
    )
    recordings = await client.get_recordings("call-1")
    assert recordings.urls == (
        f"{BASE}/files/call-1.wav",
        "https://cdn.example/x.wav",
        f"{BASE}/files/y.wav",
    )
    [request] = sent(mocked, "GET", url)
    assert request["headers"]["x-dq-api-key"] == api_key


async def test_download_sends_key_only_to_the_api_host(
    client: VoiceHubClient, mocked: aioresponses, api_key: str, tmp_path: Path
) -> None:
    own = f"{BASE}/files/call-1.wav"
    other = "https://storage.example.com/call-1.wav?sig=abc"
    mocked.get(own, body=b"RIFF-own")
    mocked.get(other, body=b"RIFF-other")
    first = await client.download_recording("/files/call-1.wav", tmp_path / "a.wav")
    second = await client.download_recording(other, tmp_path / "b.wav")
    assert first.read_bytes() == b"RIFF-own"
    assert second.read_bytes() == b"RIFF-other"
    [to_own] = sent(mocked, "GET", own)
    [to_other] = sent(mocked, "GET", other)
    assert to_own["headers"]["x-dq-api-key"] == api_key
    assert not to_other.get("headers")
    # The key never follows a redirect; a keyless storage URL may redirect (to a CDN).
    assert to_own["allow_redirects"] is False and to_other["allow_redirects"] is True


async def test_download_refuses_plain_http(client: VoiceHubClient, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError) as info:
        await client.download_recording("http://storage.example.com/a.wav", tmp_path / "a.wav")
    assert info.value.field == "url"
    assert not (tmp_path / "a.wav").exists()


async def test_trailing_slash_in_base_url(api_key: str, mocked: aioresponses) -> None:
    mocked.get(f"{BASE}/api/v1/calls/status/c/", payload={"id": "c", "status": "queued"})
    async with VoiceHubClient(api_key, base_url=BASE + "/") as client:
        assert client.base_url == BASE
        await client.get_call("c")


# -- configuration ---------------------------------------------------------------------------------


def test_no_key_names_the_variable() -> None:
    with pytest.raises(VoiceHubError, match="VOICEHUB_API_KEY"):
        VoiceHubClient()
    with pytest.raises(VoiceHubError, match="VOICEHUB_API_KEY"):
        VoiceHubClient("   ")


async def test_env_fallbacks(monkeypatch: pytest.MonkeyPatch, mocked: aioresponses) -> None:
    monkeypatch.setenv("VOICEHUB_API_KEY", "env-key")
    monkeypatch.setenv("VOICEHUB_BASE_URL", "http://127.0.0.1:9")
    url = "http://127.0.0.1:9/api/v1/calls/status/c/"
    mocked.get(url, payload={"id": "c", "status": "queued"})
    async with VoiceHubClient() as client:
        assert client.base_url == "http://127.0.0.1:9"
        await client.get_call("c")
    [request] = sent(mocked, "GET", url)
    assert request["headers"]["x-dq-api-key"] == "env-key"


def test_explicit_arguments_beat_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICEHUB_API_KEY", "env-key")
    monkeypatch.setenv("VOICEHUB_BASE_URL", "https://env.example")
    client = VoiceHubClient("arg-key", base_url="https://arg.example")
    assert client.base_url == "https://arg.example"
    assert client._api_key == "arg-key"


def test_default_base_url() -> None:
    assert VoiceHubClient("k").base_url == BASE


@pytest.mark.parametrize(
    "url",
    [
        "http://voicehub.dataqueue.ai",
        "http://10.0.0.5:8080",
        "http://localhost.evil.example",
        "ftp://voicehub.dataqueue.ai",
        "voicehub.dataqueue.ai",
        "https://",
        "http://0.0.0.0:80",
    ],
)
def test_insecure_or_malformed_base_url_refused(url: str) -> None:
    with pytest.raises(ValueError):
        VoiceHubClient("k", base_url=url)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080",
        "http://localhost:1",
        "http://[::1]:8080",
        "http://127.9.9.9",
        "http://api.localhost",
        "https://example.com/prefix",
    ],
)
def test_loopback_http_and_https_accepted(url: str) -> None:
    assert VoiceHubClient("k", base_url=url).base_url == url


def test_constructed_outside_a_loop_without_a_session() -> None:
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()
    client = VoiceHubClient("k")
    assert client._session is None


async def test_session_created_lazily_and_closed_by_aclose(
    api_key: str, mocked: aioresponses
) -> None:
    client = VoiceHubClient(api_key, max_retries=0)
    assert client._session is None
    mocked.get(f"{BASE}/api/v1/calls/status/c/", payload={"id": "c", "status": "queued"})
    await client.get_call("c")
    session = client._session
    assert session is not None and not session.closed
    await client.aclose()
    assert session.closed
    assert client.closed
    with pytest.raises(RuntimeError, match="closed"):
        await client.get_call("c")


async def test_session_passed_in_is_used_and_not_closed(api_key: str, mocked: aioresponses) -> None:
    mocked.get(f"{BASE}/api/v1/calls/status/c/", payload={"id": "c", "status": "queued"})
    async with aiohttp.ClientSession() as session:
        async with VoiceHubClient(api_key, session=session) as client:
            assert client._session is session
            await client.get_call("c")
        assert not session.closed
        await client.aclose()
        assert not session.closed


def test_timeout_and_policy_options() -> None:
    client = VoiceHubClient("k", timeout=5, max_retries=7, retry_ambiguous_triggers=True)
    assert client.timeout == Timeout(total=None, connect=5.0, read=5.0)
    assert client.retry_policy.max_retries == 7
    assert client.retry_policy.retry_ambiguous_triggers
    policy = RetryPolicy(max_retries=1)
    assert VoiceHubClient("k", retry_policy=policy).retry_policy is policy
    with pytest.raises(ValueError):
        VoiceHubClient("k", max_connections=0)
    with pytest.raises(ValueError):
        Timeout(read=0)


def test_default_region_checked_once_at_construction() -> None:
    assert VoiceHubClient("k", default_region="gb").default_region == "GB"
    assert VoiceHubClient("k", default_region=None).default_region is None
    with pytest.raises(ValueError, match="'USA'"):
        VoiceHubClient("k", default_region="USA")
