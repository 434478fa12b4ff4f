"""The results file: one line per contact, written from the journal.

It is regenerated in full from the journal at the end of every run (fresh or
resumed), streaming rows in order, so it is always complete and never holds
two answers for one row. It is written to a temporary file and renamed, so a
crash while writing leaves the previous version intact.

CSV by default; a name ending in ``.jsonl``/``.ndjson`` gives JSON lines.
Columns (:data:`RESULT_COLUMNS`): ``row, to, call_id, status, attempts,
error, recording_url, scheduled_at, requests, note``, where ``status`` is the
row's final state: a call status (``completed``, ``busy``, ...), or
``invalid``, ``ambiguous``, ``not_sent``, ``lost``, ``duplicate``,
``suppressed``, or a state the run stopped in (``queued``, ``scheduled``,
``redial`` for a redial due later, ``pending`` for rows never reached...).
``attempts`` is the number of times the contact was dialed, ``call_id`` the
latest attempt's call, ``requests`` the trigger requests made (retries
included), ``note`` says why a row was not dialed or its time was moved.

:func:`write_attempts` writes the ``attempts`` table the same way: one line
per dial (``--attempts-out``).
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final

from .journal import AttemptRow, JournalRow, waiting_kind

__all__ = ["ATTEMPT_COLUMNS", "HORIZON_NOTE", "RESULT_COLUMNS", "write_attempts", "write_results"]

RESULT_COLUMNS: Final = (
    "row",
    "to",
    "call_id",
    "status",
    "attempts",
    "error",
    "recording_url",
    "scheduled_at",
    "requests",
    "note",
)
ATTEMPT_COLUMNS: Final = (
    "row",
    "attempt",
    "to",
    "call_id",
    "status",
    "requests",
    "error",
    "scheduled_at",
    "sent_at",
    "queued_at",
    "started_at",
    "finished_at",
)


def _record(row: JournalRow) -> dict[str, Any]:
    return {
        "row": row.row,
        "to": row.number,
        "call_id": row.call_id,
        "status": row.state,
        "attempts": row.dials,
        "error": row.error,
        "recording_url": row.recording_url,
        "scheduled_at": row.scheduled_at,
        "requests": row.attempts,
        "note": row.note,
    }


def _iso(when: float | None) -> str | None:
    if when is None:
        return None
    return datetime.fromtimestamp(when, timezone.utc).isoformat(timespec="milliseconds")


def _attempt_record(attempt: AttemptRow) -> dict[str, Any]:
    return {
        "row": attempt.row,
        "attempt": attempt.attempt,
        "to": attempt.number,
        "call_id": attempt.call_id,
        "status": attempt.state,
        "requests": attempt.requests,
        "error": attempt.error,
        "scheduled_at": attempt.scheduled_at,
        "sent_at": _iso(attempt.sent_at),
        "queued_at": _iso(attempt.queued_at),
        "started_at": _iso(attempt.started_at),
        "finished_at": _iso(attempt.finished_at),
    }


#: The note of a row left waiting when a run stopped following at its horizon.
HORIZON_NOTE: Final = (
    "not final when this run stopped following it (--max-wait): run again to follow it"
)


def write_results(
    path: str | Path,
    rows: Iterable[JournalRow],
    total: int | None = None,
    *,
    horizon_reached: bool = False,
) -> int:
    """Write ``rows`` (in row order) to ``path``; returns the number of lines.

    Rows missing from the journal up to ``total`` (never reached) are written
    as ``pending`` so that the file has exactly one line per contact. With
    ``horizon_reached``, rows still waiting (a call scheduled later, a redial
    due later, a call still live) say so in their note.
    """
    records = map(_record, _with_gaps(rows, total))
    if horizon_reached:
        records = map(_note_waiting, records)
    return _write(path, RESULT_COLUMNS, records)


def _note_waiting(record: dict[str, Any]) -> dict[str, Any]:
    if waiting_kind(record["status"]) is not None and not record["note"]:
        record["note"] = HORIZON_NOTE
    return record


def write_attempts(path: str | Path, attempts: Iterable[AttemptRow]) -> int:
    """Write one line per dial attempt to ``path``; returns the number of lines."""
    return _write(path, ATTEMPT_COLUMNS, map(_attempt_record, attempts))


def _write(path: str | Path, columns: tuple[str, ...], records: Iterable[dict[str, Any]]) -> int:
    """Stream ``records`` to a temporary file beside ``path``, then rename it."""
    path = Path(path)
    jsonl = path.suffix.lower() in (".jsonl", ".ndjson")
    directory = path.parent if str(path.parent) else Path(".")
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=directory)
    count = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            writer = None if jsonl else csv.writer(out)
            if writer is not None:
                writer.writerow(columns)
            for record in records:
                if writer is None:
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")
                else:
                    writer.writerow(["" if record[c] is None else record[c] for c in columns])
                count += 1
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        raise
    return count


def _with_gaps(rows: Iterable[JournalRow], total: int | None) -> Iterable[JournalRow]:
    expected = 1
    for row in rows:
        while expected < row.row:
            yield _pending(expected)
            expected += 1
        yield row
        expected = row.row + 1
    if total is not None:
        while expected <= total:
            yield _pending(expected)
            expected += 1


def _pending(row: int) -> JournalRow:
    return JournalRow(row, "", None, "pending", None, None, 0, None, None, None)
