"""Crash and interrupt tests: the campaign runs in a subprocess, the simulator in
this one (a background thread), so its trigger log survives every kill.

* SIGKILL at several random moments while triggers are in flight, resuming
  each time until done: every row ends with an outcome, and no number was
  dialed twice (rows cut off mid-trigger end ``ambiguous``; only
  ``--redial-ambiguous`` dials them again).
* SIGINT mid-run: the triggers in flight finish, nothing is left ``sending``,
  the exit status is 130, and the same command resumes to the end.
"""

from __future__ import annotations

import csv
import os
import random
import selectors
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from voicehub_async.simulator import FaultConfig, LifecycleConfig, SimulatorConfig, SimulatorThread
from voicehub_async.simulator.pytest_plugin import SimulatorFactory

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals"),
]

API_KEY = "sk-crash-test-0123456789"
ROWS = 120
FINAL = {"completed", "unanswered", "busy", "failed", "cancelled"}


@pytest.fixture
def sim(voicehub_simulator_factory: SimulatorFactory) -> SimulatorThread:
    # Latency keeps triggers on the wire long enough for a kill to land
    # between a row's mark and its answer; the fast clock ends calls quickly.
    config = SimulatorConfig(
        api_key=API_KEY,
        time_scale=600,
        seed=11,
        lifecycle=LifecycleConfig(queue_delay=(1.0, 5.0), ring_time=(2.0, 10.0),
                                  talk_time=(10.0, 60.0)),
        faults=FaultConfig(latency=(0.02, 0.08)),
    )  # fmt: skip
    return voicehub_simulator_factory(config)


def write_contacts(path: Path) -> Path:
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["to", "name"])
        for i in range(ROWS):
            writer.writerow([f"+1415555{i:04d}", f"n{i}"])
    return path


def start(sim: SimulatorThread, tmp_path: Path, *extra: str) -> subprocess.Popen[str]:
    env = dict(os.environ, VOICEHUB_API_KEY=API_KEY, VOICEHUB_BASE_URL=sim.base_url)
    command = [
        sys.executable, "-m", "voicehub_async.cli", "campaign", str(tmp_path / "contacts.csv"),
        "--agent", "agent-crash", "--journal", str(tmp_path / "run.db"),
        "--out", str(tmp_path / "results.csv"), "--concurrency", "6", "--rate", "60",
        "--poll-interval", "0.1", "--progress-interval", "60", *extra,
    ]  # fmt: skip
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_until(condition: Callable[[], bool], process: subprocess.Popen[str], limit: float) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if condition():
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.005)
    return False


def finish(process: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()  # a hung run fails the test without outliving it
        process.communicate()
        raise
    return process.returncode, out, err


def wait_for_output(process: subprocess.Popen[str], text: str, limit: float) -> tuple[str, str]:
    """Read the process's output until ``text`` shows up (or it exits, or ``limit``).

    Returns what was read from stdout and stderr; the rest is left for
    ``communicate``. Reads the pipes' file descriptors directly, so nothing
    sits in a Python buffer that ``communicate`` would not see.
    """
    streams = {process.stdout.fileno(): 0, process.stderr.fileno(): 1}  # type: ignore[union-attr]
    seen = [b"", b""]
    needle = text.encode()
    deadline = time.monotonic() + limit
    with selectors.DefaultSelector() as selector:
        for fd in streams:
            selector.register(fd, selectors.EVENT_READ)
        while needle not in seen[0] + seen[1] and selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            for key, _ in selector.select(remaining):
                chunk = os.read(key.fd, 65536)
                if chunk:
                    seen[streams[key.fd]] += chunk
                else:
                    selector.unregister(key.fd)
    return seen[0].decode(), seen[1].decode()


def results(tmp_path: Path) -> list[dict[str, str]]:
    with (tmp_path / "results.csv").open() as stream:
        return list(csv.DictReader(stream))


def journal_states(tmp_path: Path) -> dict[str, int]:
    with sqlite3.connect(tmp_path / "run.db") as db:
        return dict(db.execute("SELECT state, COUNT(*) FROM rows GROUP BY state").fetchall())


def test_sigkill_at_random_moments_never_dials_twice(sim: SimulatorThread, tmp_path: Path) -> None:
    write_contacts(tmp_path / "contacts.csv")
    rng = random.Random(2024)
    kills = 0
    for _ in range(4):
        process = start(sim, tmp_path)
        target = sim.trigger_count + 3
        # Kill once this run has sent a few triggers, at a random moment after.
        if wait_until(lambda: sim.trigger_count >= target, process, 20):  # noqa: B023
            time.sleep(rng.uniform(0.0, 0.4))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.communicate(timeout=30)
        if sim.trigger_count >= ROWS:
            break
    assert kills >= 2

    code, _, err = finish(start(sim, tmp_path))
    assert code in (0, 1), err
    rows = results(tmp_path)
    assert len(rows) == ROWS
    assert [int(r["row"]) for r in rows] == list(range(1, ROWS + 1))
    outcomes = {r["status"] for r in rows}
    assert outcomes <= FINAL | {"ambiguous"}, outcomes
    # The simulator's own log: no number placed twice.
    counts = sim.placed_counts()
    assert max(counts.values()) == 1
    # Every call the simulator created belongs to a row that knows its id,
    # or to a row reported ambiguous: nothing was lost.
    known_ids = {r["call_id"] for r in rows if r["call_id"]}
    ambiguous = {r["to"] for r in rows if r["status"] == "ambiguous"}
    for record in list(sim.triggers):
        if record.created:
            assert record.call_id in known_ids or record.to in ambiguous
    assert code == (1 if ambiguous else 0)

    # --redial-ambiguous dials exactly the ambiguous rows once more.
    placed_before = sim.placed_counts()
    code, _, err = finish(start(sim, tmp_path, "--redial-ambiguous"))
    assert code == 0, err
    after = sim.placed_counts()
    dialed_again = {n for n in after if after[n] > placed_before.get(n, 0)}
    assert dialed_again == {r["to"] for r in rows if r["status"] == "ambiguous"}
    assert {r["status"] for r in results(tmp_path)} <= FINAL


def test_sigint_lets_calls_in_flight_finish_then_resumes(
    sim: SimulatorThread, tmp_path: Path
) -> None:
    write_contacts(tmp_path / "contacts.csv")
    process = start(sim, tmp_path)
    assert wait_until(lambda: sim.trigger_count >= 20, process, 30)
    process.send_signal(signal.SIGINT)
    code, out, err = finish(process)
    assert code == 130, err
    assert "stopping" in err + out
    states = journal_states(tmp_path)
    assert "sending" not in states and "ambiguous" not in states, states
    sent_before = sim.trigger_count
    assert sent_before < ROWS
    rows = results(tmp_path)
    assert len(rows) == ROWS and any(r["status"] == "pending" for r in rows)

    code, out, err = finish(start(sim, tmp_path))
    assert code == 0, err
    assert {r["status"] for r in results(tmp_path)} <= FINAL
    assert sim.trigger_count == ROWS
    assert max(sim.placed_counts().values()) == 1


@pytest.mark.parametrize("first", [signal.SIGINT, signal.SIGTERM])
def test_a_second_signal_exits_at_once_and_the_journal_still_resumes(
    sim: SimulatorThread, tmp_path: Path, first: signal.Signals
) -> None:
    write_contacts(tmp_path / "contacts.csv")
    process = start(sim, tmp_path)
    assert wait_until(lambda: sim.trigger_count >= 15, process, 30)
    process.send_signal(first)
    # The second signal only once the first was handled: sent blindly a few
    # milliseconds later, on a loaded machine both can be pending together
    # (two SIGINTs merge into one; SIGINT is delivered before SIGTERM).
    early_out, early_err = wait_for_output(process, "stopping", 30)
    assert "stopping" in early_out + early_err, early_err
    process.send_signal(signal.SIGINT)
    started = time.monotonic()
    code, out, err = finish(process, timeout=30)
    out, err = early_out + out, early_err + err
    # It does not hang: at worst the abort's last-resort exit ends it 3 s on
    # (the bound leaves room for a loaded machine).
    assert time.monotonic() - started < 20
    assert code == 128 + int(first), err
    assert "aborting" in err + out

    code, out, err = finish(start(sim, tmp_path))
    assert code in (0, 1), err
    rows = results(tmp_path)
    assert len(rows) == ROWS and {r["status"] for r in rows} <= FINAL | {"ambiguous"}
    assert code == (1 if any(r["status"] == "ambiguous" for r in rows) else 0)
    counts = sim.placed_counts()
    assert max(counts.values()) == 1
    assert len(counts) + sum(r["status"] == "ambiguous" for r in rows) >= ROWS


@pytest.fixture
def busy_sim(voicehub_simulator_factory: SimulatorFactory) -> SimulatorThread:
    # Every call ends busy, quickly: every contact goes through its redials.
    config = SimulatorConfig(
        api_key=API_KEY,
        time_scale=600,
        seed=13,
        lifecycle=LifecycleConfig(
            queue_delay=(1.0, 5.0),
            ring_time=(2.0, 10.0),
            talk_time=(10.0, 60.0),
            outcomes={"busy": 1.0},
        ),
        faults=FaultConfig(latency=(0.02, 0.08)),
    )
    return voicehub_simulator_factory(config)


def test_sigkill_during_redials_places_no_extra_call(
    busy_sim: SimulatorThread, tmp_path: Path
) -> None:
    sim = busy_sim
    write_contacts(tmp_path / "contacts.csv")
    redials = (
        "--redial",
        "busy",
        "--redial-after",
        "0.5",
        "--max-attempts",
        "3",
        "--attempts-out",
        str(tmp_path / "attempts.csv"),
    )
    rng = random.Random(7)
    kills = 0
    for _ in range(5):
        process = start(sim, tmp_path, *redials)
        # Kill once redials are under way (more triggers than rows), at a random moment.
        target = max(sim.trigger_count, ROWS) + 5
        if wait_until(lambda: sim.trigger_count >= target, process, 40):  # noqa: B023
            time.sleep(rng.uniform(0.0, 0.4))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.communicate(timeout=30)
        if sim.trigger_count >= 3 * ROWS - 20:
            break
    assert kills >= 2

    code, _, err = finish(start(sim, tmp_path, *redials), timeout=120)
    assert code in (0, 1), err
    rows = results(tmp_path)
    assert len(rows) == ROWS
    # Never more than --max-attempts calls to a number, across every kill.
    placed = sim.placed_counts()
    assert max(placed.values()) <= 3
    # Every call the simulator created is an attempt the journal knows, or
    # belongs to an attempt reported ambiguous (not redialed after it).
    with (tmp_path / "attempts.csv").open() as stream:
        attempts = list(csv.DictReader(stream))
    known = {a["call_id"] for a in attempts if a["call_id"]}
    ambiguous_rows = {a["row"] for a in attempts if a["status"] == "ambiguous"}
    for record in list(sim.triggers):
        if record.created:
            assert record.call_id in known or any(
                r["to"] == record.to and r["row"] in ambiguous_rows for r in rows
            )
    for row in rows:
        if row["status"] == "busy":
            assert row["attempts"] == "3" and placed[row["to"]] == 3
        else:
            assert row["status"] == "ambiguous", row
            # Its last attempt may or may not have placed a call; never another after it.
            assert placed[row["to"]] <= int(row["attempts"])
    assert code == (1 if any(r["status"] == "ambiguous" for r in rows) else 0)
