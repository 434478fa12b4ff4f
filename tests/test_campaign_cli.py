"""``voicehub campaign`` and ``voicehub demo`` in-process: output, JSON, exit codes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from voicehub_async.cli import main
from voicehub_async.simulator import FaultConfig, LifecycleConfig, SimulatorConfig, SimulatorThread
from voicehub_async.simulator.pytest_plugin import SimulatorFactory

API_KEY = "sk-campaign-SECRET-0123456789"
FAST = LifecycleConfig(queue_delay=(1.0, 2.0), ring_time=(1.0, 3.0), talk_time=(5.0, 20.0))


@pytest.fixture
def sim(
    voicehub_simulator_factory: SimulatorFactory, monkeypatch: pytest.MonkeyPatch
) -> SimulatorThread:
    config = SimulatorConfig(
        api_key=API_KEY, time_scale=200, lifecycle=FAST, faults=FaultConfig(latency=(0.01, 0.02))
    )
    simulator = voicehub_simulator_factory(config)
    monkeypatch.setenv("VOICEHUB_API_KEY", API_KEY)
    monkeypatch.setenv("VOICEHUB_BASE_URL", simulator.base_url)
    return simulator


def contacts(tmp_path: Path, count: int, name: str = "contacts.csv") -> Path:
    path = tmp_path / name
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["to", "first_name"])
        for i in range(count):
            writer.writerow([f"+1415555{i:04d}", f"n{i}"])
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    for text in (out, err):
        assert API_KEY not in text
        assert "Traceback" not in text
    return code, out, err


def test_plain_progress_lines_when_not_a_terminal(
    sim: SimulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = contacts(tmp_path, 150)
    code, out, _ = run(
        capsys, "campaign", str(source), "--agent", "a1", "--concurrency", "4",
        "--progress-interval", "0.05", "--poll-interval", "0.05",
    )  # fmt: skip
    assert code == 0
    lines = [line for line in out.splitlines() if line.startswith("campaign [")]
    assert len(lines) >= 3
    assert any("dialing: rows" in line and "calls/s" in line for line in lines)
    assert lines[-1].startswith("campaign [") and "done: rows 150/150" in lines[-1]
    assert "\x1b[" not in out  # no cursor movement or colours in a log
    assert "Outcomes" in out and "trigger latency" in out
    assert (tmp_path / "contacts.results.csv").exists()


def test_json_summary_and_a_resume(
    sim: SimulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = contacts(tmp_path, 20)
    out_file = tmp_path / "out.jsonl"
    argv = ["campaign", str(source), "--agent", "a1", "--no-poll", "--out", str(out_file)]
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0
    (line,) = out.splitlines()
    summary = json.loads(line)
    assert summary["counts"] == {"queued": 20} and summary["exit_code"] == 0
    assert summary["journal"].endswith("out.journal.db")
    rows = [json.loads(x) for x in out_file.read_text().splitlines()]
    assert len(rows) == 20 and rows[0]["row"] == 1 and rows[0]["call_id"]
    assert "campaign [" in err  # the progress went to stderr, stdout is the JSON alone

    code, out, _ = run(capsys, *argv, "--json")
    assert code == 0 and json.loads(out)["resumed"] is True and json.loads(out)["requests"] == 0
    assert sim.trigger_count == 20


def test_another_file_with_the_same_journal_is_refused(
    sim: SimulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    journal = tmp_path / "run.db"
    first = contacts(tmp_path, 3, "a.csv")
    assert run(capsys, "campaign", str(first), "--agent", "a1", "--no-poll",
               "--journal", str(journal))[0] == 0  # fmt: skip
    second = tmp_path / "b.csv"
    second.write_text("to\n+14155559999\n")
    code, _, err = run(capsys, "campaign", str(second), "--agent", "a1", "--journal", str(journal))
    assert code == 2
    assert "belongs to another contacts file (a.csv" in err
    assert sim.calls_placed_to("+14155559999") == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--calling-hours", "9-5"], "--calling-hours"),
        (["--calling-hours-tz", "Europe/Paris"], "needs --calling-hours"),
        (["--concurrency", "0"], "at least 1"),
    ],
)
def test_bad_usage_exits_2_before_sending(
    sim: SimulatorThread,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    source = contacts(tmp_path, 2)
    code, _, err = run(capsys, "campaign", str(source), "--agent", "a1", *args)
    assert code == 2 and message in err
    assert sim.trigger_count == 0


def test_a_file_without_a_to_column(
    sim: SimulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "c.csv"
    source.write_text("phone\n+14155550100\n")
    code, _, err = run(capsys, "campaign", str(source), "--agent", "a1")
    assert code == 2 and "no 'to' column" in err
    code, _, err = run(capsys, "campaign", str(tmp_path / "missing.csv"), "--agent", "a1")
    assert code == 2 and "no contacts file" in err


def test_no_agent_anywhere_is_refused_before_the_journal(
    sim: SimulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = contacts(tmp_path, 2)
    journal = tmp_path / "run.db"
    code, _, err = run(capsys, "campaign", str(source), "--journal", str(journal))
    assert code == 2 and "give --agent" in err
    assert sim.trigger_count == 0 and not journal.exists()
    # an agent_id column is enough
    source.write_text("to,Agent ID\n+14155550100,a1\n")
    code, _, _ = run(capsys, "campaign", str(source), "--journal", str(journal), "--no-poll")
    assert code == 0 and sim.trigger_count == 1


def test_a_refused_key_stops_the_campaign(
    sim: SimulatorThread,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VOICEHUB_API_KEY", "sk-wrong-key-000")
    source = contacts(tmp_path, 300)
    code, _, err = run(capsys, "campaign", str(source), "--agent", "a1", "--concurrency", "2")
    assert code == 1 and "401" in err
    # Stopped at once rather than refused 300 times.
    assert sim.request_count["trigger"] < 20


def test_exit_1_when_rows_are_ambiguous(
    sim: SimulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from voicehub_async.simulator import Fault

    sim.inject(Fault.status(502), endpoint="trigger")
    source = contacts(tmp_path, 3)
    code, out, _ = run(capsys, "campaign", str(source), "--agent", "a1", "--no-poll",
                       "--concurrency", "1")  # fmt: skip
    assert code == 1
    assert "AMBIGUOUS" in out and "--redial-ambiguous" in out


def test_demo_runs_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "demo", "--calls", "60", "--dir", str(tmp_path), "--json")
    assert code == 0
    summary = json.loads(out)
    assert summary["total"] == 60 and summary["ok"] is True
    assert summary["demo"]["dialed_twice"] == 0
    assert sum(summary["counts"].values()) == 60
    assert (tmp_path / "results.csv").exists() and (tmp_path / "contacts.csv").exists()


def test_demo_shows_a_duplicate_suppressed_rows_and_redials(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "demo", "--calls", "60", "--dir", str(tmp_path))
    assert code == 0
    outcomes = {
        line.split()[0]: int(line.split()[1])
        for line in out.splitlines()
        if line.strip() and line.split()[0] in ("duplicate", "suppressed")
    }
    assert outcomes == {"duplicate": 1, "suppressed": 2}
    redials = [line for line in out.splitlines() if line.strip().startswith("redials")]
    assert redials and int(redials[0].split()[1]) > 0
    assert "no number was dialed more often than its attempts say" in out


def test_a_bad_do_not_call_list_is_a_usage_error_before_any_progress_line(
    sim: SimulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = contacts(tmp_path, 3)
    dnc = tmp_path / "dnc.txt"
    dnc.write_text("+14155550001\nN/A\n")
    code, out, err = run(capsys, "campaign", str(source), "--agent", "a1", "--suppress", str(dnc))
    assert code == 2
    assert "line 2" in err and "campaign [" not in out + err
    assert sim.trigger_count == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--redial", "busy,ambiguous"], "never redialed"),
        (["--redial", "busy", "--no-poll"], "needs --poll"),
        (["--calling-days", "weekdays"], "--calling-days"),
        (["--max-wait", "soon"], "not a duration"),
    ],
)
def test_bad_dialer_options_are_refused_before_anything_is_sent(
    sim: SimulatorThread,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    options: list[str],
    message: str,
) -> None:
    source = contacts(tmp_path, 2)
    code = 0
    try:
        code = main(["campaign", str(source), "--agent", "a1", *options])
    except SystemExit as exit:  # argparse's own usage errors
        code = int(exit.code or 0)
    _, err = capsys.readouterr()
    assert code == 2 and message in err
    assert sim.trigger_count == 0


def test_a_row_scheduled_for_2031_does_not_hold_the_campaign(
    sim: SimulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Issue 10's case: with polling on, a row scheduled years ahead used to
    # keep `voicehub campaign` running until then.
    source = tmp_path / "contacts.csv"
    source.write_text(
        "to,scheduled_at\n+14155550001,\n+14155550002,2031-06-01T09:00Z\n+14155550003,\n"
    )
    code, out, _ = run(
        capsys, "campaign", str(source), "--agent", "a1", "--poll-interval", "0.05",
        "--progress-interval", "60",
    )  # fmt: skip
    assert code == 1
    assert "unfinished: 1 scheduled for later, run again to follow them" in out
    with (tmp_path / "contacts.results.csv").open() as stream:
        rows = list(csv.DictReader(stream))
    assert rows[1]["status"] == "scheduled" and rows[1]["scheduled_at"] == "2031-06-01T09:00"
    assert sim.trigger_count == 3

    code, out, _ = run(capsys, "campaign", str(source), "--agent", "a1", "--json")
    assert code == 1 and sim.trigger_count == 3  # the resume follows it, dials nothing
    summary = json.loads(out)
    assert summary["later"] == 1 and summary["horizon_reached"] is True
