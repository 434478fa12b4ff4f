"""The journal and its group commit: marks on disk before they return, few commits."""

from __future__ import annotations

import asyncio
import csv
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from voicehub_async.campaign.groupcommit import GroupCommitter
from voicehub_async.campaign.journal import (
    Journal,
    JournalError,
    JournalMismatchError,
    JournalOp,
    MarkSending,
    RecordInvalid,
)
from voicehub_async.campaign.results import write_results


def committed_state(path: Path, row: int) -> str | None:
    """The row's state as another connection sees it: committed data only."""
    with sqlite3.connect(path) as db:
        found = db.execute("SELECT state FROM rows WHERE row = ?", (row,)).fetchone()
    return None if found is None else str(found[0])


def mark(row: int) -> MarkSending:
    return MarkSending(row, f"h{row}", f"+1415555{row:04d}", 1, time.time())


class Broken(JournalOp):
    """A write whose SQL cannot run."""

    def statements(self) -> list[tuple[str, tuple[object, ...]]]:
        return [("INSERT INTO no_such_table VALUES (?)", (1,))]


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    opened = Journal.open(tmp_path / "j.db")
    yield opened
    opened.close()


@pytest.mark.parametrize("durability", ["normal", "full"])
async def test_a_mark_is_committed_when_it_returns(tmp_path: Path, durability: str) -> None:
    journal = Journal.open(tmp_path / "j.db", durability=durability)  # type: ignore[arg-type]
    try:
        committer = GroupCommitter(journal)
        await asyncio.gather(*(committer.mark(mark(row)) for row in (1, 2, 3)))
        assert committed_state(journal.path, 1) == "sending"
        await committer.mark(mark(4))
        assert committed_state(journal.path, 4) == "sending"
        await committer.aclose()
        assert committer.commits == 2
    finally:
        journal.close()


async def test_concurrent_marks_share_commits(journal: Journal) -> None:
    committer = GroupCommitter(journal)
    await asyncio.gather(*(committer.mark(mark(row)) for row in range(1, 301)))
    # All 300 on disk, in a handful of commits rather than 300.
    with sqlite3.connect(journal.path) as db:
        assert db.execute("SELECT COUNT(*) FROM rows WHERE state = 'sending'").fetchone()[0] == 300
    assert committer.commits <= 10
    await committer.aclose()


async def test_writes_without_a_mark_are_flushed_after_a_short_delay(journal: Journal) -> None:
    committer = GroupCommitter(journal, max_delay=0.01)
    now = time.time()
    committer.write(RecordInvalid(5, "h5", "x", "to: bad", now))
    assert committed_state(journal.path, 5) is None
    for _ in range(200):
        await asyncio.sleep(0.01)
        if committed_state(journal.path, 5) == "invalid":
            break
    assert committed_state(journal.path, 5) == "invalid"
    await committer.aclose()


async def test_a_failed_commit_fails_its_marks_and_stops_the_committer(journal: Journal) -> None:
    committer = GroupCommitter(journal)
    with pytest.raises(sqlite3.Error):
        await committer.mark(Broken())
    with pytest.raises(JournalError, match="cannot be written"):
        await committer.mark(mark(2))
    assert committed_state(journal.path, 2) is None
    await committer.aclose()


def test_bind_refuses_another_file(tmp_path: Path) -> None:
    journal = Journal.open(tmp_path / "j.db")
    try:
        assert journal.bind({"source_sha256": "aaa", "agent_id": "x"}, describe={}) is True
        assert journal.bind({"source_sha256": "aaa", "agent_id": "x"}, describe={}) is False
        with pytest.raises(JournalMismatchError, match="another contacts file"):
            journal.bind({"source_sha256": "bbb", "agent_id": "x"}, describe={})
        with pytest.raises(JournalMismatchError, match="agent_id"):
            journal.bind({"source_sha256": "aaa", "agent_id": "y"}, describe={})
    finally:
        journal.close()


def test_one_run_per_journal(tmp_path: Path) -> None:
    first = Journal.open(tmp_path / "j.db")
    try:
        with pytest.raises(JournalError, match="in use by another campaign"):
            Journal.open(tmp_path / "j.db")
    finally:
        first.close()
    Journal.open(tmp_path / "j.db").close()  # released


def test_wal_mode(journal: Journal) -> None:
    with sqlite3.connect(journal.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_results_have_one_line_per_row(journal: Journal, tmp_path: Path) -> None:
    committer = GroupCommitter(journal)
    await committer.mark(mark(2))
    now = time.time()
    committer.write(RecordInvalid(4, "h4", "12", "to: not a valid phone number", now))
    await committer.aclose()
    out = tmp_path / "results.csv"
    assert write_results(out, journal.iter_rows(), total=5) == 5
    with out.open() as stream:
        rows = list(csv.DictReader(stream))
    assert [r["row"] for r in rows] == ["1", "2", "3", "4", "5"]
    assert [r["status"] for r in rows] == ["pending", "sending", "pending", "invalid", "pending"]
    assert rows[3]["error"] == "to: not a valid phone number"


def test_a_migration_that_fails_half_way_leaves_the_old_journal_as_it_was(
    tmp_path: Path,
) -> None:
    # A 0.1 journal whose rows table cannot take one of the new columns: the
    # upgrade fails after its first steps, and must undo them all.
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
        db.execute(
            "CREATE TABLE rows (row INTEGER PRIMARY KEY, input_hash TEXT NOT NULL, number TEXT, "
            "state TEXT NOT NULL, call_id TEXT, attempts INTEGER, updated_at REAL, note TEXT)"
        )
        db.execute("INSERT INTO rows VALUES (1, 'h1', '+14155550001', 'completed', 'c1', 1, 0, '')")
    with pytest.raises(JournalError):
        Journal.open(path)
    with sqlite3.connect(path) as db:
        columns = [c[1] for c in db.execute("PRAGMA table_info(rows)")]
        tables = {t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        version = db.execute("SELECT value FROM meta").fetchone()
    assert "dials" not in columns and "attempts" not in tables and version == ("1",)
    with pytest.raises(JournalError, match="cannot use"):  # not "in use": the lock was released
        Journal.open(path)
