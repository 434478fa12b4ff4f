"""Hostile contacts files never lose a row: every row read ends with exactly one
results line, bad ones ``invalid`` naming their line, the rest dialed once.

The campaign tests go through ``voicehub campaign`` against the simulator over
real sockets; the reader tests check what each kind of damage becomes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from voicehub_async.campaign.contacts import (
    MAX_ROW_CHARS,
    ContactsError,
    csv_columns,
    fingerprint_file,
    read_contacts,
    row_request,
)
from voicehub_async.cli import main
from voicehub_async.errors import InvalidRequestError
from voicehub_async.simulator import FaultConfig, LifecycleConfig, SimulatorConfig, SimulatorThread
from voicehub_async.simulator.pytest_plugin import SimulatorFactory

API_KEY = "sk-input-SECRET-0123456789"
FAST = LifecycleConfig(queue_delay=(1.0, 2.0), ring_time=(1.0, 3.0), talk_time=(5.0, 20.0))


def number(i: int) -> str:
    return f"+1415555{i:04d}"


@pytest.fixture
def sim(
    voicehub_simulator_factory: SimulatorFactory, monkeypatch: pytest.MonkeyPatch
) -> SimulatorThread:
    config = SimulatorConfig(
        api_key=API_KEY, time_scale=200, lifecycle=FAST, faults=FaultConfig(latency=(0.0, 0.01))
    )
    simulator = voicehub_simulator_factory(config)
    monkeypatch.setenv("VOICEHUB_API_KEY", API_KEY)
    monkeypatch.setenv("VOICEHUB_BASE_URL", simulator.base_url)
    return simulator


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def results(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as stream:
        return list(csv.DictReader(stream))


def write_rows(path: Path, rows: list[list[str]], header: list[str]) -> Path:
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_a_140000_character_field_in_row_61_is_one_invalid_row(
    sim: SimulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The exact case of issue 10: a legal CSV of 200 rows whose row 61 has a
    # field over csv's default limit (131,072). It used to abort the campaign
    # after 28-30 calls with exit 2 and no results file.
    limit_before = csv.field_size_limit()
    rows = [[number(i), f"n{i}", "x" * 140_000 if i == 61 else "ok"] for i in range(1, 201)]
    source = write_rows(tmp_path / "contacts.csv", rows, ["to", "name", "notes"])

    code, out, err = run(capsys, "campaign", str(source), "--agent", "a1", "--json",
                         "--poll-interval", "0.05")  # fmt: skip
    assert code == 0, err  # every row has a final outcome; the invalid one is reported
    summary = json.loads(out)
    assert summary["total"] == 200
    assert summary["counts"].get("invalid") == 1
    lines = results(tmp_path / "contacts.results.csv")
    assert [line["row"] for line in lines] == [str(i) for i in range(1, 201)]
    bad = lines[60]
    assert bad["status"] == "invalid" and not bad["call_id"]
    # Its line as a spreadsheet shows it (the header is line 1), and the reason.
    assert "line 62" in bad["error"] and "over the limit" in bad["error"]
    assert "notes" in bad["error"]
    # Every other row was dialed, once; row 61 never.
    placed = sim.placed_counts()
    assert number(61) not in placed
    assert placed == {number(i): 1 for i in range(1, 201) if i != 61}
    assert all(line["call_id"] for i, line in enumerate(lines, 1) if i != 61)
    # csv's process-wide field limit was neither needed nor changed.
    assert csv.field_size_limit() == limit_before

    # A second run resumes: nothing is sent again, the invalid row stays reported.
    code, out, _ = run(capsys, "campaign", str(source), "--agent", "a1", "--json")
    assert code == 0 and json.loads(out)["requests"] == 0
    assert sim.trigger_count == 199
    assert results(tmp_path / "contacts.results.csv")[60]["status"] == "invalid"


@pytest.mark.parametrize(
    ("tail", "reason"),
    [
        (b'+14155550300,"never closed\n+14155550301,swallowed\n', "never closed"),
        (b"+14155550300,caf\xe9 latin-1\n+14155550301,after\n", "not UTF-8"),
    ],
    ids=["broken-quote-at-the-end", "undecodable-bytes"],
)
def test_damage_near_the_end_never_aborts_a_running_campaign(
    sim: SimulatorThread,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    tail: bytes,
    reason: str,
) -> None:
    good = "".join(f"{number(i)},n{i}\n" for i in range(1, 41)).encode()
    source = tmp_path / "contacts.csv"
    source.write_bytes(b"to,name\n" + good + tail)

    code, _, err = run(capsys, "campaign", str(source), "--agent", "a1", "--json", "--no-poll")
    assert code == 0, err
    lines = results(tmp_path / "contacts.results.csv")
    bad = [line for line in lines if line["status"] == "invalid"]
    assert len(bad) == 1 and reason in bad[0]["error"] and "line 42" in bad[0]["error"]
    assert sim.placed_counts()[number(40)] == 1
    assert number(300) not in sim.placed_counts()  # the damaged row itself: never dialed
    if reason == "not UTF-8":
        # Undecodable bytes spoil their row only: the next one is read and dialed.
        assert len(lines) == 42 and sim.placed_counts()[number(301)] == 1
    else:
        # The open quote swallowed the rest of the file into that row: not dialed.
        assert len(lines) == 41 and number(301) not in sim.placed_counts()
    assert sim.trigger_count == len(lines) - 1


def test_semicolons_and_another_number_column(
    sim: SimulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # As European spreadsheets write it, with the number under another name.
    source = tmp_path / "contacts.csv"
    source.write_text("Phone;Name\n+14155550401;Ada\n\n\n+14155550402;Alan\n", encoding="utf-8")
    code, out, err = run(
        capsys, "campaign", str(source), "--agent", "a1", "--column", "to=phone", "--json",
        "--no-poll", "--progress-interval", "0.05",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["total"] == 2  # blank lines are not contacts
    progress = [line for line in err.splitlines() if "rows " in line]
    assert progress and all("/2" in line for line in progress), progress
    assert sim.placed_counts() == {"+14155550401": 1, "+14155550402": 1}
    contexts = sorted(json.dumps(t.context) for t in sim.triggers)
    assert contexts == ['{"Name": "Ada"}', '{"Name": "Alan"}']


def test_a_column_option_naming_no_column_is_refused_before_sending(
    sim: SimulatorThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_rows(tmp_path / "c.csv", [[number(1)]], ["to"])
    code, _, err = run(capsys, "campaign", str(source), "--agent", "a1", "--column", "to=phone")
    assert code == 2 and "phone" in err
    code, _, err = run(capsys, "campaign", str(source), "--agent", "a1", "--column", "nope=to")
    assert code == 2 and "--column" in err
    assert sim.trigger_count == 0


# -- the reader alone ----------------------------------------------------------------


def test_a_row_over_the_limit_is_skipped_to_its_real_end(tmp_path: Path) -> None:
    # A quoted cell with line breaks and doubled quotes, too large: the rows
    # after it are read as usual, and line numbers are a spreadsheet's.
    big = '"' + ('a ""quoted"" word\n' * 5000) + '"'
    source = tmp_path / "c.csv"
    source.write_text(f"to,notes\n{number(1)},x\n{number(2)},{big}\n{number(3)},y\n")
    rows = list(read_contacts(source))
    assert [(r.row, r.line) for r in rows] == [(1, 2), (2, 3), (3, 4)]
    assert rows[1].problem is not None and "over the limit" in rows[1].problem
    assert rows[1].column == "notes" and rows[2].fields == {"to": number(3), "notes": "y"}
    with pytest.raises(InvalidRequestError) as info:
        row_request(rows[1], "a")
    assert info.value.field == "notes" and "line 3" in info.value.reason


def test_a_row_just_under_the_limit_is_read(tmp_path: Path) -> None:
    source = tmp_path / "c.csv"
    cell = "z" * (MAX_ROW_CHARS - 40)
    source.write_text(f"to,notes\n{number(1)},{cell}\n")
    (row,) = read_contacts(source)
    assert row.problem is None and row.fields["notes"] == cell


def test_a_lowered_process_wide_csv_limit_spoils_rows_not_the_file(tmp_path: Path) -> None:
    # Another library may lower csv.field_size_limit: the row is refused with
    # csv's reason, the next one is read.
    source = tmp_path / "c.csv"
    source.write_text(f"to,notes\n{number(1)},{'w' * 500}\n{number(2)},ok\n")
    before = csv.field_size_limit(100)
    try:
        first, second = read_contacts(source)
    finally:
        csv.field_size_limit(before)
    assert first.problem is not None and "field larger than field limit" in first.problem
    assert second.problem is None and second.fields["to"] == number(2)


def test_a_huge_single_line_is_read_in_bounded_pieces(tmp_path: Path) -> None:
    # A 5 MB line without any line break, as a binary file renamed .csv would be.
    source = tmp_path / "c.csv"
    source.write_text(f"to\n{number(1)}\n" + "q" * 5_000_000 + f"\n{number(2)}\n")
    rows = list(read_contacts(source))
    assert [r.problem is None for r in rows] == [True, False, True]
    assert rows[2].fields["to"] == number(2)


def test_jsonl_damage_is_one_row_each(tmp_path: Path) -> None:
    source = tmp_path / "c.jsonl"
    source.write_bytes(
        b'{"to": "+14155550101"}\n'
        + b"[" * 20_000
        + b"]" * 20_000
        + b"\n"
        + b'{"to": "+14155550102", "n": '
        + b"9" * 5000
        + b"}\n"
        + b'{"to": "+14155550103", "name": "caf\xe9"}\n'
        + b'{"to": "+14155550104", "notes": "'
        + b"x" * 70_000
        + b'"}\n'
        + b'{"to": "+14155550105"}\n'
    )
    rows = list(read_contacts(source))
    assert [r.row for r in rows] == [1, 2, 3, 4, 5, 6]
    problems = [r.problem for r in rows]
    assert problems[0] is None and problems[5] is None
    assert problems[1] is not None and "line 2" in problems[1]
    assert problems[2] is not None and "not JSON" in problems[2]
    assert problems[3] is not None and "UTF-8" in problems[3]
    assert problems[4] is not None and "over the limit" in problems[4]


def test_naive_scheduled_at_is_refused_as_the_cli_refuses_it(tmp_path: Path) -> None:
    source = tmp_path / "c.csv"
    source.write_text(
        f"to,scheduled_at\n{number(1)},2030-01-31T09:30\n{number(2)},2030-01-31T09:30Z\n"
    )
    naive, aware = read_contacts(source)
    with pytest.raises(InvalidRequestError) as info:
        row_request(naive, "a")
    assert info.value.field == "scheduled_at" and "no time zone" in info.value.reason
    assert "line 2" in info.value.reason and "2030-01-31T09:30Z" in info.value.reason
    assert row_request(aware, "a").scheduled_at is not None


def test_delimiter_detection_and_column_errors(tmp_path: Path) -> None:
    tsv = tmp_path / "c.tsv"
    tsv.write_text(f"to\tname, first\n{number(1)}\tAda\n")
    assert csv_columns(tsv) == ["to", "name, first"]
    quoted = tmp_path / "q.csv"
    quoted.write_text(f'to;"a,b,c"\n{number(1)};x\n')
    assert csv_columns(quoted) == ["to", "a,b,c"]
    both = tmp_path / "both.csv"
    both.write_text(f"phone,to\n{number(1)},x\n")
    with pytest.raises(ContactsError, match="rename one"):
        read_contacts(both, columns={"to": "phone"})
    with pytest.raises(ValueError, match="not a column"):
        read_contacts(both, columns={"phone": "to"})


def test_the_row_estimate_counts_no_blank_lines(tmp_path: Path) -> None:
    source = tmp_path / "c.csv"
    source.write_text(f"to\n\n{number(1)}\n  \n,,\n{number(2)}")
    assert fingerprint_file(source).approx_rows == 3  # the header and two contacts


def test_an_unusable_header_fails_before_any_row(tmp_path: Path) -> None:
    source = tmp_path / "c.csv"
    source.write_bytes(b"t\xf6,name\n+14155550101,a\n")
    with pytest.raises(ContactsError, match="UTF-8"):
        read_contacts(source)
    source.write_text('to,"name\n+14155550101,a\n')
    with pytest.raises(ContactsError, match="never closed"):
        read_contacts(source)
    source.write_text("to," + "h" * MAX_ROW_CHARS + "\n+14155550101,a\n")
    with pytest.raises(ContactsError, match="over 65,536 characters"):
        read_contacts(source)


def test_exit_2_says_nothing_was_sent_only_when_true(
    sim: SimulatorThread,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = write_rows(tmp_path / "c.csv", [[number(i)] for i in range(1, 31)], ["phone"])
    code, _, err = run(capsys, "campaign", str(source), "--agent", "a1")
    assert code == 2 and "nothing was sent" in err and sim.trigger_count == 0

    # Should reading ever fail after calls went out (the reader itself no
    # longer does; an I/O error could), the exit status and the words say so.
    import voicehub_async.campaign.runner as runner

    def failing_after_150(*args: object, **kwargs: object) -> object:
        rows = read_contacts(*args, **kwargs)  # type: ignore[arg-type]

        def generate() -> object:
            for contact in rows:
                if contact.row > 150:
                    raise ContactsError("the file went away")
                yield contact

        return generate()

    source = write_rows(tmp_path / "d.csv", [[number(i)] for i in range(1, 301)], ["to"])
    monkeypatch.setattr(runner, "read_contacts", failing_after_150)
    code, _, err = run(
        capsys, "campaign", str(source), "--agent", "a1", "--no-poll", "--concurrency", "4"
    )
    assert code == 1 and "nothing was sent" not in err, (err, sim.trigger_count)
    assert "calls were placed" in err and "run the same command again" in err
    assert 1 <= sim.trigger_count <= 150


def test_jsonl_keys_follow_the_column_option(tmp_path: Path) -> None:
    source = tmp_path / "c.jsonl"
    source.write_text(json.dumps({"Phone": number(1), "to": "not this one", "name": "Ada"}) + "\n")
    (row,) = read_contacts(source, columns={"to": "phone"})
    # The chosen column is the number; the one it supersedes is not read.
    assert row.fields == {"to": number(1), "name": "Ada"}
    assert row_request(row, "a").to == number(1)


def test_a_lone_surrogate_escape_in_jsonl_spoils_its_row_only(tmp_path: Path) -> None:
    source = tmp_path / "c.jsonl"
    source.write_text(
        '{"to": "+14155550101", "name": "\\ud800"}\n'
        '{"to": "+14155550102", "name": "\\ud55c\\uae00"}\n'  # Hangul: fine
    )
    bad, good = read_contacts(source)
    assert bad.problem is not None and "surrogate" in bad.problem
    assert good.problem is None and good.fields["name"] == "\ud55c\uae00"
