"""The results file: one line per contact, written from the journal.

It is regenerated in full from the journal at the end of every run (fresh or
resumed), streaming rows in order, so it is always complete and never holds
two answers for one row. It is written to a temporary file and renamed, so a
crash while writing leaves the previous version intact.

CSV by default; a name ending in ``.jsonl``/``.ndjson`` gives JSON lines.
Columns: ``row, to, call_id, status, attempts, error, recording_url``, where
``status`` is the row's final state: a call status (``completed``, ``busy``,
...), or ``invalid``, ``ambiguous``, ``not_sent``, ``lost``, or a state the run
stopped in (``queued``, ``pending`` for rows never reached...).
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

from .journal import JournalRow

__all__ = ["RESULT_COLUMNS", "write_results"]

RESULT_COLUMNS: Final = (
    "row",
    "to",
    "call_id",
    "status",
    "attempts",
    "error",
    "recording_url",
    "scheduled_at",
)


def _record(row: JournalRow) -> dict[str, Any]:
    return {
        "row": row.row,
        "to": row.number,
        "call_id": row.call_id,
        "status": row.state,
        "attempts": row.attempts,
        "error": row.error,
        "recording_url": row.recording_url,
        "scheduled_at": row.scheduled_at,
    }


def write_results(path: str | Path, rows: Iterable[JournalRow], total: int | None = None) -> int:
    """Write ``rows`` (in row order) to ``path``; returns the number of lines.

    Rows missing from the journal up to ``total`` (never reached) are written
    as ``pending`` so that the file has exactly one line per contact.
    """
    path = Path(path)
    jsonl = path.suffix.lower() in (".jsonl", ".ndjson")
    directory = path.parent if str(path.parent) else Path(".")
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=directory)
    count = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            writer = None if jsonl else csv.writer(out)
            if writer is not None:
                writer.writerow(RESULT_COLUMNS)
            for row in _with_gaps(rows, total):
                record = _record(row)
                if writer is None:
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")
                else:
                    writer.writerow(
                        ["" if record[c] is None else record[c] for c in RESULT_COLUMNS]
                    )
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
