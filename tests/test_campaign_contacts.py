"""The contacts reader: CSV and JSONL rows, bad rows kept with a reason, streaming."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from voicehub_async.campaign.contacts import (
    ContactsError,
    detect_format,
    fingerprint_file,
    read_contacts,
    row_request,
)
from voicehub_async.errors import InvalidRequestError


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_rows_known_columns_and_context(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.csv",
        "To,Agent ID,from,scheduledAt,name,order\n"
        "+14155550100,,,,Ada,1\n"
        "\n"
        ",,,, ,\n"
        "+14155550101,agent-x,+14155550199,2030-01-31T09:30Z,Alan,2\n",
    )
    rows = list(read_contacts(path))
    assert [r.row for r in rows] == [1, 2]  # blank lines are not contacts
    first = row_request(rows[0], "agent-default")
    assert first.to == "+14155550100"
    assert first.agent_id == "agent-default"
    assert first.context == {"name": "Ada", "order": "1"}
    assert first.scheduled_at is None and first.from_number is None
    second = row_request(rows[1], "agent-default")
    assert second.agent_id == "agent-x"
    assert second.from_number == "+14155550199"
    assert second.scheduled_at == datetime(2030, 1, 31, 9, 30, tzinfo=timezone.utc)


def test_jsonl_rows_and_bad_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.jsonl",
        json.dumps({"to": "+14155550100", "context": {"name": "Ada"}, "tier": 2})
        + "\n\nnot json\n[1, 2]\n"
        + json.dumps({"to": "+14155550101", "scheduled_at": "2030-01-31T09:30+02:00"})
        + "\n",
    )
    rows = list(read_contacts(path))
    assert [r.row for r in rows] == [1, 2, 3, 4]
    assert row_request(rows[0], "a").context == {"name": "Ada", "tier": 2}
    assert rows[1].problem is not None and "not JSON" in rows[1].problem
    assert rows[2].problem is not None and "not a JSON object" in rows[2].problem
    with pytest.raises(InvalidRequestError):
        row_request(rows[1], "a")
    when = row_request(rows[3], "a").scheduled_at
    assert when is not None and when.utcoffset() is not None
    assert when.astimezone(timezone.utc).hour == 7


@pytest.mark.parametrize(
    ("line", "field", "reason"),
    [
        (",Ada", "to", "no number"),
        ("+14155550100,Ada,extra", "row", "cells"),
    ],
)
def test_bad_csv_rows_name_the_problem(tmp_path: Path, line: str, field: str, reason: str) -> None:
    path = write(tmp_path / "c.csv", f"to,name\n{line}\n")
    (row,) = read_contacts(path)
    with pytest.raises(InvalidRequestError) as info:
        row_request(row, "a")
    assert info.value.field == field
    assert reason in info.value.reason


def test_unparseable_time_and_missing_agent(tmp_path: Path) -> None:
    path = write(tmp_path / "c.csv", "to,scheduled_at\n+14155550100,tomorrow\n+14155550100,\n")
    bad_time, no_time = read_contacts(path)
    with pytest.raises(InvalidRequestError) as info:
        row_request(bad_time, "a")
    assert info.value.field == "scheduled_at"
    with pytest.raises(InvalidRequestError) as info:
        row_request(no_time, None)
    assert info.value.field == "agent_id" and "--agent" in info.value.reason


def test_file_without_to_column_fails_before_any_row(tmp_path: Path) -> None:
    path = write(tmp_path / "c.csv", "phone,name\n+14155550100,Ada\n")
    with pytest.raises(ContactsError, match="no 'to' column"):
        read_contacts(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ContactsError, match="cannot read"):
        read_contacts(tmp_path / "nope.csv")
    with pytest.raises(ContactsError):
        fingerprint_file(tmp_path / "nope.csv")


def test_rows_are_streamed_not_loaded(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    with path.open("w") as out:
        out.write("to\n")
        for i in range(5000):
            out.write(f"+1415555{i:04d}\n")
    rows = read_contacts(path)
    first = next(rows)
    assert first.row == 1
    # A generator over an open file: nothing past what was asked is parsed.
    assert not isinstance(rows, list)
    assert sum(1 for _ in rows) == 4999


def test_digest_tells_rows_apart_and_is_stable(tmp_path: Path) -> None:
    path = write(tmp_path / "c.csv", "to,name\n+14155550100,Ada\n+14155550100,Alan\n")
    a, b = read_contacts(path)
    again, _ = read_contacts(path)
    assert a.digest != b.digest
    assert a.digest == again.digest


def test_fingerprint_and_format(tmp_path: Path) -> None:
    one = write(tmp_path / "a.csv", "to\n+14155550100\n")
    two = write(tmp_path / "b.csv", "to\n+14155550101\n")
    assert fingerprint_file(one).sha256 != fingerprint_file(two).sha256
    assert fingerprint_file(one).approx_rows == 2
    assert detect_format(one) == "csv"
    assert detect_format(write(tmp_path / "x.ndjson", "{}\n")) == "jsonl"
    assert detect_format(write(tmp_path / "noext", '{"to": "+1"}\n')) == "jsonl"
