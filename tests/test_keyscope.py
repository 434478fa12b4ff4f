"""Where the key may go (keyscope), and the client's one request path over real sockets.

The URL rules are pure; the request path (downloads streamed, latency in
the logs, the /api/v1 hint, orjson bodies) runs against the simulator.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from voicehub_async import InvalidRequestError, NotFoundError, VoiceHubClient
from voicehub_async.keyscope import KeyScope, check_base_url, looks_like_api_path
from voicehub_async.simulator import SimulatorConfig, SimulatorThread, pytest_plugin

voicehub_simulator = pytest_plugin.voicehub_simulator
voicehub_simulator_factory = pytest_plugin.voicehub_simulator_factory

SCOPE = KeyScope("https://api.example.com/base")


@pytest.mark.parametrize(
    ("url", "with_key"),
    [
        ("https://api.example.com/base/rec.wav", True),
        ("https://API.example.com:443/other/rec.wav", True),  # same origin, spelled otherwise
        ("/rec.wav", True),  # relative: the API's
        ("https://api.example.com:8443/rec.wav", False),
        ("https://user@api.example.com/rec.wav", False),
        ("https://storage.example.com/rec.wav", False),
        ("https://api.example.com.evil.test/rec.wav", False),
    ],
)
def test_the_key_goes_to_the_api_origin_only(url: str, with_key: bool) -> None:
    absolute, key = SCOPE.download_url(url)
    assert key is with_key
    assert absolute.startswith("https://")


def test_downloads_and_analysis_over_https_only() -> None:
    with pytest.raises(InvalidRequestError, match="https only"):
        SCOPE.download_url("http://storage.example.com/a.wav")
    with pytest.raises(InvalidRequestError, match="https only"):
        SCOPE.api_path("http://api.example.com/base/x")
    local = KeyScope("http://127.0.0.1:8080")
    url = "http://127.0.0.1:8080/r.wav"
    assert local.download_url(url) == (url, True)


def test_analysis_urls_must_be_on_the_origin_under_the_base_path() -> None:
    assert SCOPE.api_path("https://api.example.com/base/results/1?x=2") == "/results/1?x=2"
    with pytest.raises(InvalidRequestError, match="not on the API host"):
        SCOPE.api_path("https://evil.test/base/results/1")
    with pytest.raises(InvalidRequestError, match="outside the API's base path"):
        SCOPE.api_path("https://api.example.com/other/results/1")
    with pytest.raises(InvalidRequestError, match="non-empty"):
        SCOPE.api_path(" ")


def test_base_url_rules() -> None:
    assert check_base_url("https://h.example/") == "https://h.example"
    for bad in ("http://h.example", "ftp://h.example", "https://u:p@h.example", "https://h/?q=1"):
        with pytest.raises(ValueError):
            check_base_url(bad)
    assert looks_like_api_path("https://h.example/api/v1") == "https://h.example"
    assert looks_like_api_path("https://h.example/api/v1/calls/") == "https://h.example"
    assert looks_like_api_path("https://h.example/proxy") is None


@pytest.fixture
def sim(voicehub_simulator_factory: pytest_plugin.SimulatorFactory) -> SimulatorThread:
    return voicehub_simulator_factory(SimulatorConfig())


async def test_a_base_url_ending_in_api_v1_is_explained(sim: SimulatorThread) -> None:
    async with VoiceHubClient(sim.api_key, base_url=sim.base_url + "/api/v1/") as client:
        with pytest.raises(NotFoundError) as info:
            await client.trigger_call("+14155550123", "agent-1", max_retries=0)
    message = str(info.value)
    assert "looks wrong" in message
    assert repr(sim.base_url) in message  # what it should be
    assert sim.api_key not in message


async def test_every_request_logs_its_real_latency_downloads_included(
    sim: SimulatorThread, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="voicehub_async")
    async with VoiceHubClient(sim.api_key, base_url=sim.base_url) as client:
        call = await client.trigger_call("+14155550123", "agent-1")
        sim.set_status(call.id, "completed")
        recordings = await client.get_recordings(call.id)
        assert recordings.url is not None
        target = await client.download_recording(recordings.url, tmp_path / "r.wav")
    assert target.stat().st_size == sim.config.recording_size
    lines = [r for r in caplog.records if r.getMessage().count(" -> 200 ")]
    paths = [str(r.args[1]) for r in lines if isinstance(r.args, tuple)]  # type: ignore[index]
    assert any(path.endswith(".wav") for path in paths)  # the download is logged too
    for record in lines:
        assert isinstance(record.args, tuple)
        assert record.args[-1] > 0  # milliseconds measured, not a placeholder
    assert sim.api_key not in caplog.text


async def test_a_context_only_json_can_encode_is_sent(sim: SimulatorThread) -> None:
    # Validation follows json's rules (an integer beyond 64 bits is fine);
    # the orjson encoder falls back to json rather than failing the request.
    async with VoiceHubClient(sim.api_key, base_url=sim.base_url) as client:
        call = await client.trigger_call("+14155550123", "agent-1", context={"n": 2**70, 1: "a"})
    assert call.id
    [record] = list(sim.triggers)
    assert record.context == {"n": 2**70, "1": "a"}
