"""The ``voicehub`` command line, run in-process against a real simulator.

Each command is checked for its human and ``--json`` output and its exit code
(0 ok, 1 API error, 2 bad input), that errors are one line without a traceback,
and that the API key never appears in anything printed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from voicehub_async.cli import main
from voicehub_async.simulator import Fault, LifecycleConfig, SimulatorConfig, SimulatorThread
from voicehub_async.simulator.pytest_plugin import SimulatorFactory

API_KEY = "sk-test-TOPSECRET-0123456789"
NUMBER = "+14155550123"


@pytest.fixture
def sim(
    voicehub_simulator_factory: SimulatorFactory, monkeypatch: pytest.MonkeyPatch
) -> SimulatorThread:
    """A simulator with a recognisable key, and the environment pointing at it."""
    # Calls stay queued for a long while unless a test pins their status, so
    # nothing depends on how fast the machine is.
    config = SimulatorConfig(api_key=API_KEY, lifecycle=LifecycleConfig(queue_delay=(1e6, 1e6)))
    simulator = voicehub_simulator_factory(config)
    monkeypatch.setenv("VOICEHUB_API_KEY", API_KEY)
    monkeypatch.setenv("VOICEHUB_BASE_URL", simulator.base_url)
    return simulator


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run ``voicehub argv...`` in-process; check nothing leaked; return (code, out, err)."""
    code = main(list(argv))
    captured = capsys.readouterr()
    for text in (captured.out, captured.err):
        assert API_KEY not in text
        assert "Traceback" not in text
    return code, captured.out, captured.err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    """Run with ``--json`` and parse stdout, which must be exactly one JSON object."""
    code, out, _ = run(capsys, *argv, "--json")
    lines = out.splitlines()
    assert len(lines) == 1, out
    payload = json.loads(lines[0])
    assert isinstance(payload, dict)
    return code, payload


def place_call(capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    code, payload = run_json(capsys, "call", "--to", NUMBER, "--agent", "agent-1", *extra)
    assert code == 0
    return str(payload["id"])


def in_an_hour() -> datetime:
    return (datetime.now(timezone.utc) + timedelta(hours=1)).replace(second=0, microsecond=0)


# -- call -----------------------------------------------------------------------------


def test_call_prints_the_new_call(sim: SimulatorThread, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys, "call", "--to", NUMBER, "--agent", "agent-1", "--context", '{"name": "Ada"}'
    )
    assert code == 0, err
    assert err == ""
    assert "Call placed" in out
    assert "Queued" in out
    assert NUMBER in out
    [record] = list(sim.triggers)
    assert record.to == NUMBER
    assert record.agent_id == "agent-1"
    assert record.call_id is not None and record.call_id in out
    assert "Ada" in str(record.context)


def test_call_json(sim: SimulatorThread, capsys: pytest.CaptureFixture[str]) -> None:
    code, payload = run_json(
        capsys, "call", "--to", "(415) 555-0123", "--agent", "agent-1", "--default-region", "us"
    )
    assert code == 0
    assert payload["status"] == "Queued"
    assert payload["to"] == NUMBER  # normalised to E.164 before sending
    assert payload["terminal"] is False
    assert payload["scheduled_at"] is None
    assert sim.calls_placed_to(NUMBER) == 1
    assert sim.status_of(payload["id"]) == "Queued"


@pytest.mark.parametrize("suffix", ["+02:00", "Z"])
def test_call_scheduled_with_an_offset(
    sim: SimulatorThread, capsys: pytest.CaptureFixture[str], suffix: str
) -> None:
    when = in_an_hour()
    local = when.astimezone(timezone(timedelta(hours=2))) if suffix != "Z" else when
    text = local.replace(tzinfo=None).isoformat(timespec="minutes") + suffix
    expected = when.strftime("%Y-%m-%dT%H:%M")

    code, payload = run_json(capsys, "call", "--to", NUMBER, "--agent", "a", "--at", text)
    assert code == 0
    assert payload["status"] == "Scheduled"
    assert payload["scheduled_at"] == expected + "Z"
    [record] = list(sim.triggers)
    assert record.scheduled_at == expected  # sent in UTC

    code, out, _ = run(capsys, "call", "--to", NUMBER, "--agent", "a", "--at", text)
    assert code == 0
    assert "Call scheduled" in out
    assert f"{expected} UTC" in out


@pytest.mark.parametrize(
    ("args", "field", "words"),
    [
        (["--to", "12"], "--to", "'12'"),
        (["--to", "4155550123"], "--to", "country code"),
        (["--context", "{name: Ada}"], "--context", "not valid JSON"),
        (["--context", "[1, 2]"], "--context", "JSON object"),
        (["--at", "2030-01-31T09:30"], "--at", "add an offset"),
        (["--at", "next tuesday"], "--at", "ISO 8601"),
        (["--at", "2001-01-31T09:30Z"], "--at", "future"),
        (["--from", "not a number"], "--from", "not a phone number"),
        (["--agent", " "], "--agent", "non-empty"),
    ],
)
def test_bad_input_exits_2_before_sending(
    sim: SimulatorThread,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    field: str,
    words: str,
) -> None:
    argv = {"--to": NUMBER, "--agent": "agent-1"}
    extra = dict(zip(args[::2], args[1::2], strict=True))
    flat = [item for pair in {**argv, **extra}.items() for item in pair]

    code, out, err = run(capsys, "call", *flat)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"voicehub: error: {field}")
    assert words in err

    code, payload = run_json(capsys, "call", *flat)
    assert code == 2
    assert payload["exit_code"] == 2
    assert payload["error"]["field"] == field
    assert payload["error"]["kind"] == "invalid_input"
    assert list(sim.triggers) == []


def test_naive_time_is_refused_with_a_clear_fix(
    sim: SimulatorThread, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "call", "--to", NUMBER, "--agent", "a", "--at", "2030-01-31T09:30")
    assert code == 2
    assert "no time zone" in err
    assert "2030-01-31T09:30Z" in err


def test_context_from_a_file(
    sim: SimulatorThread, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    context = tmp_path / "context.json"
    context.write_text('{"order": 42}', encoding="utf-8")
    assert place_call(capsys, "--context", f"@{context}")
    [record] = list(sim.triggers)
    assert "42" in str(record.context)


def test_missing_key_exits_2(
    sim: SimulatorThread, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VOICEHUB_API_KEY")
    code, _, err = run(capsys, "call", "--to", NUMBER, "--agent", "a")
    assert code == 2
    assert "VOICEHUB_API_KEY" in err
    assert list(sim.triggers) == []
    # Bad input is reported first, even without a key.
    code, _, err = run(capsys, "call", "--to", "12", "--agent", "a")
    assert code == 2
    assert "--to" in err


def test_plain_http_to_another_host_is_refused(
    sim: SimulatorThread, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "status", "x", "--base-url", "http://voicehub.example.com")
    assert code == 2
    assert "https" in err


def test_ambiguous_trigger_says_not_to_rerun(
    sim: SimulatorThread, capsys: pytest.CaptureFixture[str]
) -> None:
    sim.inject(Fault.reset(create=True), endpoint="trigger")
    code, out, err = run(capsys, "call", "--to", NUMBER, "--agent", "a")
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1
    assert "MAY HAVE BEEN PLACED" in err
    assert "re-run" in err
    assert sim.calls_placed_to(NUMBER) == 1  # and it was not sent again

    sim.inject(Fault.status(500, create=True), endpoint="trigger")
    code, payload = run_json(capsys, "call", "--to", NUMBER, "--agent", "a")
    assert code == 1
    assert payload["error"]["kind"] == "ambiguous"
    assert "re-run" in payload["error"]["message"]
    assert sim.calls_placed_to(NUMBER) == 2


def test_refused_trigger_exits_1(sim: SimulatorThread, capsys: pytest.CaptureFixture[str]) -> None:
    sim.inject(Fault.status(400, body={"message": "agent does not exist"}), endpoint="trigger")
    code, out, err = run(capsys, "call", "--to", NUMBER, "--agent", "a")
    assert code == 1
    assert out == ""
    assert "agent does not exist" in err
    assert sim.calls_placed_to(NUMBER) == 0


def test_wrong_key_exits_1_without_printing_it(
    sim: SimulatorThread, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    call_id = place_call(capsys)
    wrong = "sk-test-WRONGKEY-987654321"
    monkeypatch.setenv("VOICEHUB_API_KEY", wrong)
    code, out, err = main(["status", call_id]), *capsys.readouterr()
    assert code == 1
    assert "401" in err
    assert "VOICEHUB_API_KEY" in err
    assert wrong not in out + err
    assert "Traceback" not in err


def test_unreachable_service_exits_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VOICEHUB_API_KEY", API_KEY)
    # Port 9 (discard) on loopback: nothing listens there in a test environment.
    code, out, err = run(
        capsys, "status", "some-call", "--base-url", "http://127.0.0.1:9", "--timeout", "2"
    )
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1
    assert "could not connect" in err


# -- status -----------------------------------------------------------------------------


def test_status(sim: SimulatorThread, capsys: pytest.CaptureFixture[str]) -> None:
    call_id = place_call(capsys)
    code, out, err = run(capsys, "status", call_id)
    assert code == 0, err
    assert call_id in out
    assert "Queued" in out
    assert "final:" in out

    sim.set_status(call_id, "busy")
    code, payload = run_json(capsys, "status", call_id)
    assert code == 0
    assert payload == {
        "id": call_id,
        "status": "Busy",
        "type": "voip",
        "terminal": True,
        "attempts": 1,
    }


def test_status_of_an_unknown_call_exits_1(
    sim: SimulatorThread, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "status", "no-such-call")
    assert code == 1
    assert out == ""
    assert "no call with id 'no-such-call'" in err
    code, payload = run_json(capsys, "status", "no-such-call")
    assert code == 1
    assert payload["error"]["kind"] == "not_found"
    assert payload["exit_code"] == 1


# -- recording ----------------------------------------------------------------------------


def test_recording(
    sim: SimulatorThread, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    call_id = place_call(capsys)

    code, _, err = run(capsys, "recording", call_id)  # not over yet: no recording
    assert code == 1
    assert "no recording" in err

    sim.set_status(call_id, "completed")
    code, out, _ = run(capsys, "recording", call_id)
    assert code == 0
    assert f"/recordings/{call_id}.wav" in out

    code, payload = run_json(capsys, "recording", call_id)
    assert code == 0
    assert payload["call_id"] == call_id
    [url] = payload["urls"]
    assert url.startswith(sim.base_url)

    target = tmp_path / "call.wav"
    code, out, _ = run(capsys, "recording", call_id, "--download", str(target))
    assert code == 0
    assert target.read_bytes()[:4] == b"RIFF"
    assert str(target) in out

    folder = tmp_path / "recordings"
    folder.mkdir()
    code, payload = run_json(capsys, "recording", call_id, "--download", str(folder))
    assert code == 0
    [saved] = payload["saved"]
    assert Path(saved["path"]) == folder / f"{call_id}.wav"
    assert saved["bytes"] == (folder / f"{call_id}.wav").stat().st_size > 44


def test_recording_download_into_a_missing_folder_exits_2(
    sim: SimulatorThread, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(
        capsys, "recording", "some-call", "--download", str(tmp_path / "nope" / "x.wav")
    )
    assert code == 2
    assert "does not exist" in err
    assert sim.simulator.request_count["recordings"] == 0


# -- the program ------------------------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from voicehub_async import __version__

    code, out, _ = run(capsys, "--version")
    assert code == 0
    assert out == f"voicehub {__version__}\n"


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys)
    assert code == 2
    assert "COMMAND" in err
    code, _, err = run(capsys, "call", "--agent", "a")
    assert code == 2
    assert "--to" in err
    code, _, _ = run(capsys, "no-such-command")
    assert code == 2


def _env_without_key() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("VOICEHUB_")}


def test_help_from_a_subprocess() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "voicehub_async.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env_without_key(),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for command in ("call", "status", "recording", "simulate"):
        assert command in done.stdout


@pytest.fixture
def simulate_process() -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "voicehub_async.cli", "simulate", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env_without_key(),
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def test_simulate_serves_until_terminated(simulate_process: subprocess.Popen[str]) -> None:
    assert simulate_process.stdout is not None
    line = simulate_process.stdout.readline()  # blocks until it listens (or dies)
    assert "listening on http://127.0.0.1:" in line, line
    base_url = line.split("listening on ", 1)[1].split()[0]
    key = line.rsplit("api key: ", 1)[1].rstrip(")\n")

    request = urllib.request.Request(
        f"{base_url}/api/v1/calls/status/no-such-call/", headers={"x-dq-api-key": key}
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    info.value.close()
    assert info.value.code == 404

    simulate_process.terminate()
    assert simulate_process.wait(timeout=10) == 0
