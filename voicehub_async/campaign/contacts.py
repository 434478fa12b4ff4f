"""Reading a contacts file (CSV or JSONL) as a stream of rows.

A campaign's input can be a million rows, so the file is never loaded whole:
:func:`read_contacts` yields one :class:`ContactRow` at a time, and memory
stays flat whatever the file's size. A row that cannot even be read (a line
that is not a JSON object, a CSV row with more cells than the header) is
still yielded, with ``problem`` set, so that it ends in the results as
``invalid`` with its row number instead of stopping the campaign.

Row numbers count contacts, starting at 1, in the order of the file: the CSV
header and blank lines are not contacts and are not counted.

Columns: ``to`` (required), and optionally ``agent_id``, ``from`` and
``scheduled_at``; every other column goes into the call's ``context``. The
known names are matched without regard to case, ``-`` or spaces
(``Agent ID``, ``agentId`` and ``agent_id`` are the same column); other
columns keep their names as written. In JSONL a ``context`` key holding an
object is merged into the context.

``scheduled_at`` is ISO 8601 (``2030-01-31T09:30``, ``...+01:00``, ``...Z``);
a time without a zone is taken as UTC, the zone the SDK always sends.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Generator, Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final, Literal

import attrs

from voicehub_async._time import is_aware
from voicehub_async.errors import InvalidRequestError
from voicehub_async.models import CallRequest

__all__ = [
    "ContactRow",
    "ContactsError",
    "ContactsFormat",
    "SourceFingerprint",
    "detect_format",
    "fingerprint_file",
    "read_contacts",
    "row_request",
]

ContactsFormat = Literal["csv", "jsonl"]

#: The columns the campaign interprets, by their normalised spelling.
_KNOWN: Final = {
    "to": "to",
    "agentid": "agent_id",
    "from": "from",
    "fromnumber": "from",
    "scheduledat": "scheduled_at",
    "scheduleat": "scheduled_at",
}
_JSONL_SUFFIXES: Final = (".jsonl", ".ndjson", ".json")
_HASH_CHUNK: Final = 1 << 20


class ContactsError(Exception):
    """The contacts file as a whole cannot be used (missing, no ``to`` column).

    Unlike a bad row, which is recorded and skipped, this stops the campaign
    before anything is sent.
    """


@attrs.frozen(slots=True)
class ContactRow:
    """One contact as read: its row number, the hash of its content, its fields.

    ``fields`` maps the known column names (``to``, ``agent_id``, ``from``,
    ``scheduled_at``) and the other columns as written to their values.
    ``digest`` identifies the row's content in the journal, so that a resumed
    campaign can tell it is reading the same rows. ``problem`` is set when the
    row could not be read at all.
    """

    row: int
    digest: str
    fields: Mapping[str, Any]
    problem: str | None = None


@attrs.frozen
class SourceFingerprint:
    """What identifies a contacts file: the SHA-256 of its bytes, its size and
    an estimate of its number of rows (newlines), for the progress display."""

    sha256: str
    size: int
    approx_rows: int


def fingerprint_file(path: str | Path) -> SourceFingerprint:
    """Hash ``path`` in chunks (flat memory); raises :class:`ContactsError` if
    it cannot be read. Counting newlines on the way is nearly free and gives
    the progress bar a total."""
    digest = hashlib.sha256()
    size = lines = 0
    last = b"\n"
    try:
        with open(path, "rb") as stream:
            while chunk := stream.read(_HASH_CHUNK):
                digest.update(chunk)
                size += len(chunk)
                lines += chunk.count(b"\n")
                last = chunk[-1:]
    except OSError as exc:
        raise _unreadable(path, exc) from None
    if last != b"\n":
        lines += 1
    return SourceFingerprint(digest.hexdigest(), size, lines)


def detect_format(path: str | Path) -> ContactsFormat:
    """``jsonl`` for ``.jsonl``/``.ndjson``/``.json`` files, ``csv`` for
    ``.csv``; otherwise guessed from the first non-blank character."""
    suffix = Path(path).suffix.lower()
    if suffix in _JSONL_SUFFIXES:
        return "jsonl"
    if suffix in (".csv", ".tsv", ".txt"):
        return "csv"
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as stream:
            head = stream.read(4096).lstrip()
    except OSError as exc:
        raise _unreadable(path, exc) from None
    return "jsonl" if head.startswith("{") else "csv"


def _unreadable(path: str | Path, exc: OSError) -> ContactsError:
    return ContactsError(f"cannot read the contacts file {path}: {exc.strerror or exc}")


def _normalise_name(name: str) -> str:
    key = name.strip().lower().replace("_", "").replace("-", "").replace(" ", "")
    return _KNOWN.get(key, name.strip())


def _digest(text: str) -> str:
    """A short hash of a row's text as read (its cells, or its JSON line)."""
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def read_contacts(path: str | Path, format: ContactsFormat | None = None) -> Iterator[ContactRow]:
    """Yield the contacts of ``path`` one at a time.

    Raises :class:`ContactsError` when the file cannot be opened or a CSV file
    has no ``to`` column (checked before the first row is yielded).
    """
    kind = format or detect_format(path)
    try:
        stream = open(path, encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise _unreadable(path, exc) from None
    if kind == "csv":
        return _read_csv(stream, path)
    return _OwnedRows(_read_jsonl(stream), stream)


def _read_header(reader: Iterator[list[str]], path: str | Path) -> list[str] | None:
    """The normalised column names: the first non-blank line (None if none)."""
    try:
        for cells in reader:
            if any(cell.strip() for cell in cells):
                return [_normalise_name(cell) for cell in cells]
    except (csv.Error, UnicodeDecodeError) as exc:
        raise ContactsError(f"{path}: unreadable CSV header: {exc}") from None
    return None


def csv_columns(path: str | Path) -> list[str] | None:
    """The normalised column names of the CSV file ``path`` (None if it is empty).

    Raises :class:`ContactsError` when it cannot be read.
    """
    try:
        with open(path, encoding="utf-8-sig", newline="") as stream:
            return _read_header(csv.reader(stream), path)
    except OSError as exc:
        raise _unreadable(path, exc) from None


def _read_csv(stream: io.TextIOBase, path: str | Path) -> Iterator[ContactRow]:
    """Read the header now (so that a file without ``to`` fails before any
    row is used) and return the generator of the rows."""
    reader = csv.reader(stream)
    try:
        header = _read_header(reader, path)
    except ContactsError:
        stream.close()
        raise
    if header is None:
        stream.close()
        return iter(())
    if "to" not in header:
        stream.close()
        raise ContactsError(
            f"the contacts file {path} has no 'to' column (its header is "
            f"{','.join(header)}); the first row must name the columns, one of them 'to'"
        )
    return _OwnedRows(_csv_rows(stream, reader, header, path), stream)


class _OwnedRows:
    """Rows read from an open file; :meth:`close` closes the file, read or not.

    A generator's ``with stream:`` only runs once iteration starts, so closing
    one that was never started (a campaign refusing its journal before the
    first row) would leave the file to the garbage collector.
    """

    __slots__ = ("_rows", "_stream")

    def __init__(self, rows: Generator[ContactRow, None, None], stream: io.TextIOBase) -> None:
        self._rows = rows
        self._stream = stream

    def __iter__(self) -> _OwnedRows:
        return self

    def __next__(self) -> ContactRow:
        return next(self._rows)

    def close(self) -> None:
        try:
            self._rows.close()
        finally:
            self._stream.close()


def _csv_rows(
    stream: io.TextIOBase, reader: Iterator[list[str]], header: list[str], path: str | Path
) -> Generator[ContactRow, None, None]:
    width = len(header)
    row = 0
    with stream:
        try:
            for cells in reader:
                text = "\x1f".join(cells)  # (str.strip() counts \x1f as whitespace)
                if not text.strip():
                    continue  # a blank line, or one of empty cells only
                row += 1
                digest = _digest(text)
                if len(cells) > width and any(cell.strip() for cell in cells[width:]):
                    yield ContactRow(
                        row,
                        digest,
                        {},
                        f"{len(cells)} cells but the header names {width} columns",
                    )
                    continue
                fields = {name: value for name, value in zip(header, cells, strict=False) if name}
                yield ContactRow(row, digest, fields)
        except csv.Error as exc:
            raise ContactsError(f"{path}: unreadable CSV after row {row}: {exc}") from None
        except UnicodeDecodeError as exc:
            raise ContactsError(f"{path}: not UTF-8 text after row {row}: {exc.reason}") from None


def _read_jsonl(stream: io.TextIOBase) -> Generator[ContactRow, None, None]:
    with stream:
        row = 0
        for line in stream:
            text = line.strip()
            if not text:
                continue
            row += 1
            digest = _digest(text)
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                yield ContactRow(row, digest, {}, f"not JSON ({exc.msg})")
                continue
            if not isinstance(data, dict):
                yield ContactRow(row, digest, {}, "not a JSON object ({...} per line)")
                continue
            fields: dict[str, Any] = {}
            for name, value in data.items():
                key = _normalise_name(str(name))
                if key == "context" and isinstance(value, dict):
                    for inner, inner_value in value.items():
                        fields.setdefault(str(inner), inner_value)
                else:
                    fields[key] = value
            yield ContactRow(row, digest, fields)


def _parse_when(value: Any) -> datetime | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise InvalidRequestError("scheduled_at", value, "an ISO 8601 date and time is required")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRequestError(
            "scheduled_at", value, "not an ISO 8601 date and time (e.g. 2030-01-31T09:30)"
        ) from None
    if not is_aware(when):
        when = when.replace(tzinfo=timezone.utc)
    return when


def _optional_text(value: Any) -> Any:
    """Empty cells mean "not given"; anything else is passed on as it came."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return value.strip() if isinstance(value, str) else value


def row_request(contact: ContactRow, default_agent: str | None) -> CallRequest:
    """The (unvalidated) :class:`CallRequest` a row asks for.

    Raises :class:`InvalidRequestError` for what only the row format can
    tell (an unreadable row, a missing ``to`` or agent, an unparseable time);
    numbers and times are checked later by ``prepare_request``.
    """
    if contact.problem is not None:
        raise InvalidRequestError("row", None, contact.problem)
    fields = contact.fields
    to = _optional_text(fields.get("to"))
    if to is None:
        raise InvalidRequestError("to", fields.get("to"), "no number (the 'to' column is empty)")
    agent = _optional_text(fields.get("agent_id")) or default_agent
    if agent is None:
        raise InvalidRequestError(
            "agent_id", None, "no agent: give --agent or an 'agent_id' column"
        )
    context = {
        name: value
        for name, value in fields.items()
        if name not in ("to", "agent_id", "from", "scheduled_at")
    }
    return CallRequest(
        to=to,
        agent_id=str(agent),
        context=context or None,
        scheduled_at=_parse_when(fields.get("scheduled_at")),
        from_number=_optional_text(fields.get("from")),
    )
