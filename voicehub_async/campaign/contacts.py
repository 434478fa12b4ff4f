"""Reading a contacts file (CSV or JSONL) as a stream of rows.

A campaign's input can be a million rows, so the file is never loaded whole:
:func:`read_contacts` yields one :class:`ContactRow` at a time, and memory
stays flat whatever the file's size (even a single line of a gigabyte is
read in bounded pieces).

Nothing read is lost. Once the header has been read, the reader never
raises for what the file holds: a row that cannot be used is still yielded,
with ``problem`` set (naming its line and what is wrong), so that it ends in
the results as ``invalid`` and reading goes on with the next row. This
covers a CSV row with more cells than the header, a line that is not a JSON
object, bytes that are not UTF-8 (the row is refused, naming the column; the
rest of the file is read as usual), a row over :data:`MAX_ROW_CHARS`, and a
quote that is never closed (the rest of the file becomes that one invalid
row: nothing after it is dialed by accident).

Why recorded-and-go-on rather than a pre-flight pass over the whole file:
it is one pass (no second read of a million rows before the first call),
every defect still gets a results line naming its line, the rest of the
campaign goes on (a bad row never holds up the good ones), and Python users
of :class:`~voicehub_async.campaign.Campaign` get exactly the same
behaviour as the command line, on a first run and on a resume. Only what
makes the whole file unusable is an error (:class:`ContactsError`), and it is
raised before the first row is yielded: a missing file, no header, no ``to``
column, a header that is not UTF-8.

Row size, and csv's field limit. Python's ``csv`` refuses a field over
``csv.field_size_limit()`` (131,072 characters by default) by raising in
the middle of the file; that limit is process-global state, shared by every
thread and library in the process, so the reader neither depends on it nor
changes it (raising it would change it for everybody else; raising it and
restoring it around each read is not thread-safe: any other thread reading
CSV meanwhile, a web backend's or the campaign's own counting of what is
left after a stop, would see the other's limit). Instead it hands ``csv`` no row larger than
:data:`MAX_ROW_CHARS` (65,536 characters, cells and separators together:
hundreds of times any real contact, and below csv's default limit): a longer
row is cut off before csv sees it, skipped up to its real end (following the
quotes, in bounded pieces) and recorded invalid, naming its largest column.
Every other row is read as usual, before and after it. Should other code
have lowered the global limit below a row's size, that row is refused with
csv's reason, the same way, and the next one is read.

Row numbers: ``row`` counts contacts, starting at 1, in the order of the
file (the CSV header and blank lines are not contacts); it is the journal's
key. ``line`` is what a person looks for: the row number a spreadsheet shows
for it (the header is line 1 when it is the first line; a cell holding line
breaks is still one spreadsheet row), or the line number of a JSONL line.
Error reasons name the line.

Columns: ``to`` (required), and optionally ``agent_id``, ``from`` and
``scheduled_at``; every other column goes into the call's ``context``. The
known names are matched without regard to case, ``-`` or spaces
(``Agent ID``, ``agentId`` and ``agent_id`` are the same column); other
columns keep their names as written; ``columns={"to": "phone"}`` (the
command line's ``--column to=phone``) reads another column as a known one.
In JSONL a ``context`` key holding an object is merged into the context. The
CSV delimiter is detected on the header line: the most frequent of ``,``
``;`` tab and ``|`` outside quotes (``,`` when there is none or a tie), so
that files written by European spreadsheets (``to;name``) work as they are.

``scheduled_at`` is ISO 8601 with a zone (``2030-01-31T09:30+01:00``,
``...Z``). A time without a zone is refused for that row, as ``voicehub
call --at`` refuses it: the API documents no zone, and a wall-clock time
read in the wrong one phones somebody at the wrong hour.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import itertools
import json
import re
from collections.abc import Generator, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal

import attrs

from voicehub_async._iso8601 import NaiveTimeError, parse_aware_datetime
from voicehub_async.errors import InvalidRequestError
from voicehub_async.models import CallRequest

__all__ = [
    "KNOWN_COLUMNS",
    "MAX_ROW_CHARS",
    "ContactRow",
    "ContactsError",
    "ContactsFormat",
    "SourceFingerprint",
    "check_columns",
    "csv_columns",
    "detect_format",
    "fingerprint_file",
    "read_contacts",
    "row_request",
]

ContactsFormat = Literal["csv", "jsonl"]

#: The most characters a row may hold (a CSV record with its separators, or
#: a JSONL line); a longer one is recorded invalid and reading goes on.
MAX_ROW_CHARS: Final = 65_536

#: The columns the campaign interprets, by their normalised spelling.
_KNOWN: Final = {
    "to": "to",
    "agentid": "agent_id",
    "from": "from",
    "fromnumber": "from",
    "scheduledat": "scheduled_at",
    "scheduleat": "scheduled_at",
}
#: The names ``columns=`` may map another column onto.
KNOWN_COLUMNS: Final = ("to", "agent_id", "from", "scheduled_at")
_JSONL_SUFFIXES: Final = (".jsonl", ".ndjson", ".json")
_HASH_CHUNK: Final = 1 << 20
#: Bytes that make a line "blank" for the row estimate (a CSV line of empty cells).
_BLANK_BYTES: Final = b" \t\r\x0b\x0c,;|"
_DELIMITERS: Final = (",", ";", "\t", "|")
_QUOTED_TEXT: Final = re.compile(r'"[^"]*"?')
_LINE_ENDS: Final = ("\n", "\r")


class ContactsError(Exception):
    """The contacts file as a whole cannot be used (missing, no ``to`` column).

    Unlike a bad row, which is recorded and skipped, this stops the campaign;
    it is only ever raised before the first row is yielded, so before
    anything is sent.
    """


@attrs.frozen(slots=True)
class ContactRow:
    """One contact as read: its row number, the hash of its content, its fields.

    ``fields`` maps the known column names (``to``, ``agent_id``, ``from``,
    ``scheduled_at``) and the other columns as written to their values.
    ``digest`` identifies the row's content in the journal, so that a resumed
    campaign can tell it is reading the same rows. ``problem`` is set when the
    row could not be read at all (it names the line); ``column`` is the
    column at fault when one is. ``line`` is the line a person would look
    for (see the module's docstring).
    """

    row: int
    digest: str
    fields: Mapping[str, Any]
    problem: str | None = None
    line: int = 0
    column: str | None = None


@attrs.frozen
class SourceFingerprint:
    """What identifies a contacts file: the SHA-256 of its bytes, its size and
    an estimate of its number of rows (non-blank lines, the CSV header
    included), for the progress display."""

    sha256: str
    size: int
    approx_rows: int


def fingerprint_file(path: str | Path) -> SourceFingerprint:
    """Hash ``path`` in chunks (flat memory); raises :class:`ContactsError` if
    it cannot be read. Counting the non-blank lines on the way is nearly free
    and gives the progress bar a total that does not count blank lines
    (exact unless cells hold line breaks)."""
    digest = hashlib.sha256()
    size = rows = 0
    pending = b""  # the start of a line cut by a chunk: b"" or b"x" (non-blank)
    try:
        with open(path, "rb") as stream:
            while chunk := stream.read(_HASH_CHUNK):
                digest.update(chunk)
                size += len(chunk)
                lines = (pending + chunk).split(b"\n")
                tail = lines.pop()
                rows += sum(1 for line in lines if line.strip(_BLANK_BYTES))
                pending = b"x" if tail.strip(_BLANK_BYTES) else b""
    except OSError as exc:
        raise _unreadable(path, exc) from None
    return SourceFingerprint(digest.hexdigest(), size, rows + (pending == b"x"))


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


def check_columns(columns: Mapping[str, str] | None) -> dict[str, str]:
    """``columns`` (known name -> the file's column) checked and normalised.

    Raises :class:`ValueError` naming the problem: a name that is not one of
    :data:`KNOWN_COLUMNS`, or an empty column name.
    """
    renames: dict[str, str] = {}
    for known, source in (columns or {}).items():
        name = _KNOWN.get(_squash(known))
        if name is None:
            raise ValueError(
                f"{known!r} is not a column the campaign reads; use one of "
                f"{', '.join(KNOWN_COLUMNS)} (e.g. to=phone)"
            )
        if not isinstance(source, str) or not source.strip():
            raise ValueError(f"no column name given for {name} (write e.g. {name}=phone)")
        renames[name] = source.strip()
    return renames


def _unreadable(path: str | Path, exc: OSError) -> ContactsError:
    return ContactsError(f"cannot read the contacts file {path}: {exc.strerror or exc}")


def _squash(name: str) -> str:
    return name.strip().lower().replace("_", "").replace("-", "").replace(" ", "")


def _normalise_name(name: str) -> str:
    return _KNOWN.get(_squash(name), name.strip())


class _Names:
    """The rule from a column (or JSONL key) as written to the name used,
    with ``columns=`` renames applied."""

    __slots__ = ("renamed", "sources")

    def __init__(self, renames: Mapping[str, str]) -> None:
        #: known name -> the column as the user wrote it
        self.sources = dict(renames)
        self.renamed = {source.lower(): known for known, source in renames.items()}

    def __call__(self, name: str) -> str | None:
        """The name ``name`` is read as; None for a column that a rename
        supersedes (``to`` when ``columns={"to": "phone"}``)."""
        renamed = self.renamed.get(name.strip().lower())
        if renamed is not None:
            return renamed
        normal = _normalise_name(name)
        return None if normal in self.sources else normal


def _digest(text: str) -> str:
    """A short hash of a row's text as read (its cells, or its JSON line)."""
    return hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=12).hexdigest()


def _not_utf8(text: str) -> bool:
    """Whether ``text`` holds bytes that were not UTF-8 (kept as lone surrogates)."""
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _open(path: str | Path) -> io.TextIOWrapper:
    # surrogateescape: a byte that is not UTF-8 spoils its row, not the file.
    try:
        return open(path, encoding="utf-8-sig", errors="surrogateescape", newline="")
    except OSError as exc:
        raise _unreadable(path, exc) from None


def read_contacts(
    path: str | Path,
    format: ContactsFormat | None = None,
    *,
    columns: Mapping[str, str] | None = None,
) -> Iterator[ContactRow]:
    """Yield the contacts of ``path`` one at a time.

    ``columns`` maps a known name to the file's column holding it
    (``{"to": "phone"}``). Raises :class:`ContactsError` when the file
    cannot be opened, or a CSV file has no header, no ``to`` column or no
    column ``columns`` names (all checked before the first row is yielded),
    and :class:`ValueError` for a bad ``columns``. Once rows are yielded,
    what the file holds never raises: a bad row comes with ``problem`` set.
    The returned iterator has ``close()``.
    """
    kind = format or detect_format(path)
    names = _Names(check_columns(columns))
    stream = _open(path)
    if kind == "csv":
        try:
            opened = _CsvFile(stream, path, names)
        except BaseException:
            stream.close()
            raise
        if opened.header is None:
            stream.close()
            return iter(())
        return _OwnedRows(opened.rows(), stream)
    return _OwnedRows(_read_jsonl(stream, path, names), stream)


def csv_columns(path: str | Path, columns: Mapping[str, str] | None = None) -> list[str] | None:
    """The column names of the CSV file ``path`` as the campaign reads them
    (None if it is empty).

    Raises :class:`ContactsError` when it cannot be read or ``columns``
    names a column it does not have.
    """
    names = _Names(check_columns(columns))
    with _open(path) as stream:
        return _CsvFile(stream, path, names, need_to=False).header


class _RowTooLarge(Exception):
    """Raised by :class:`_Feed` inside ``csv.reader`` to cut a row short."""


class _Feed:
    """The file's lines, handed to ``csv.reader`` one at a time.

    Keeps the lines of the row being read (at most :data:`MAX_ROW_CHARS`
    and one more line of at most as much), so that a row cut short can be
    skipped to its real end, and notes the end of the file (a row that
    reaches it was left inside an open quote). Lines are read with a size
    bound, so one huge line never sits in memory whole.
    """

    __slots__ = ("_readline", "eof", "kept", "limit", "size", "stream")

    def __init__(self, stream: io.TextIOBase, limit: int, first: str) -> None:
        self.stream = stream
        self.limit = limit
        self._readline = functools.partial(stream.readline, limit + 1)
        #: The header's first line, read already to find the delimiter.
        self.kept: list[str] = [first]
        self.size = len(first)
        self.eof = False

    def __iter__(self) -> _Feed:
        return self

    def __next__(self) -> str:
        line = self._readline()
        if not line:
            self.eof = True
            raise StopIteration
        self.kept.append(line)
        self.size += len(line)
        if self.size > self.limit:
            raise _RowTooLarge
        return line

    def read(self) -> str:
        """The next piece of a line, for skipping (bounded; "" at the end)."""
        piece = self.stream.readline(self.limit)
        if not piece:
            self.eof = True
        return piece


# The states of a CSV record, as Python's csv module reads one (non-strict,
# double quotes doubled inside quoted cells).
_START, _FIELD, _QUOTED, _QUOTE_IN_QUOTED = range(4)


class _Skipper:
    """Follows a CSV record the way ``csv`` reads one, piece by piece, to find
    where an over-long (or unparseable) record really ends; notes on the way
    the record's size and lines, its widest cell and a digest."""

    __slots__ = (
        "_hash",
        "cell",
        "cell_size",
        "delimiter",
        "lines",
        "size",
        "state",
        "widest",
        "widest_size",
    )

    def __init__(self, delimiter: str) -> None:
        self.delimiter = delimiter
        self.state = _START
        self.cell = 0
        self.cell_size = 0
        self.widest = 0
        self.widest_size = 0
        self.size = 0
        self.lines = 0
        self._hash = hashlib.blake2b(digest_size=12)

    def feed(self, piece: str) -> bool:
        """Take the next piece of the file; True when the record ends with it."""
        self._hash.update(piece.encode("utf-8", "surrogateescape"))
        self.size += len(piece)
        ends_line = piece.endswith(_LINE_ENDS)
        text = piece.rstrip("\r\n") if ends_line else piece
        delimiter = self.delimiter
        i, n = 0, len(text)
        while i < n:
            state = self.state
            if state == _QUOTED:
                j = text.find('"', i)
                if j < 0:
                    self._grow(n - i)
                    i = n
                else:
                    self._grow(j - i)
                    self.state = _QUOTE_IN_QUOTED
                    i = j + 1
            elif state == _FIELD:
                j = text.find(delimiter, i)
                if j < 0:
                    self._grow(n - i)
                    i = n
                else:
                    self._grow(j - i)
                    self._next_cell()
                    i = j + 1
            else:  # the start of a cell, or just after a quote inside a quoted cell
                char = text[i]
                i += 1
                if char == delimiter:
                    self._next_cell()
                elif char == '"':
                    self.state = _QUOTED
                    if state == _QUOTE_IN_QUOTED:
                        self._grow(1)  # a doubled quote is one quote in the cell
                else:
                    self.state = _FIELD
                    self._grow(1)
        if not ends_line:
            return False
        self.lines += 1
        if self.state == _QUOTED:
            self._grow(len(piece) - len(text))  # a line break inside the cell
            return False
        return True

    def _grow(self, n: int) -> None:
        self.cell_size += n
        if self.cell_size > self.widest_size:
            self.widest_size = self.cell_size
            self.widest = self.cell

    def _next_cell(self) -> None:
        self.cell += 1
        self.cell_size = 0
        self.state = _START

    @property
    def digest(self) -> str:
        return self._hash.hexdigest()


def _delimiter(line: str, path: str | Path) -> str:
    """The header line's delimiter: the most frequent candidate outside quotes.

    A fixed, documented rule rather than :class:`csv.Sniffer`, which guesses
    quoting too from a single line and says nothing predictable on a tie.
    """
    bare = _QUOTED_TEXT.sub("", line)
    order = ("\t", ",", ";", "|") if Path(path).suffix.lower() == ".tsv" else _DELIMITERS
    best = max(order, key=bare.count)
    return best if bare.count(best) else order[0]


class _CsvFile:
    """A CSV contacts file opened for reading: its delimiter and header
    (read now, so that a file without ``to`` fails before any row is used),
    then :meth:`rows`."""

    def __init__(
        self,
        stream: io.TextIOBase,
        path: str | Path,
        names: _Names,
        *,
        need_to: bool = True,
        limit: int = MAX_ROW_CHARS,
    ) -> None:
        self.stream = stream
        self.path = path
        self.line = 0
        self.header: list[str] | None = None
        while True:  # blank lines before the header are spreadsheet rows too
            first = stream.readline(limit + 1)
            if not first:
                return
            self.line += 1
            if first.strip():
                break
        where = f"{path}: the header (line {self.line})"
        if len(first) > limit:
            raise ContactsError(f"{where} is over {limit:,} characters: is this a CSV file?")
        self.delimiter = _delimiter(first, path)
        self.feed = feed = _Feed(stream, limit, first)
        self.reader = csv.reader(itertools.chain((first,), feed), delimiter=self.delimiter)
        try:
            cells = next(self.reader)
        except _RowTooLarge:
            raise ContactsError(
                f"{where} is over {limit:,} characters: is this a CSV "
                "file, or is a quote left open?"
            ) from None
        except csv.Error as exc:
            raise ContactsError(f"{where} is unreadable CSV: {exc}") from None
        if feed.eof:
            raise ContactsError(f"{where} opens a quote that is never closed")
        if _not_utf8("".join(cells)):
            raise ContactsError(
                f'{where} is not UTF-8 text; save the file as UTF-8 ("CSV UTF-8" in spreadsheets)'
            )
        shown = self.delimiter.join(cells)
        header = [names(cell) for cell in cells]
        for known, source in names.sources.items():
            if known not in header:
                raise ContactsError(
                    f"the contacts file {path} has no column {source!r} (--column "
                    f"{known}={source}); its header is {shown}"
                )
        for cell, name in zip(cells, header, strict=True):
            if name is None:
                raise ContactsError(
                    f"the contacts file {path} has a column {cell.strip()!r} besides "
                    f"--column {_normalise_name(cell)}={names.sources[_normalise_name(cell)]}; "
                    "rename one of them"
                )
        self.header = [name or "" for name in header]
        if need_to and "to" not in self.header:
            raise ContactsError(
                f"the contacts file {path} has no 'to' column (its header is {shown}); the "
                "first row must name the columns, one of them 'to' (or say which one holds "
                "the number: --column to=NAME)"
            )

    def rows(self) -> Generator[ContactRow, None, None]:
        header = self.header
        assert header is not None
        width = len(header)
        feed, reader, line = self.feed, self.reader, self.line
        kept = feed.kept
        row = 0
        with self.stream:
            while True:
                kept.clear()
                feed.size = 0
                try:
                    cells = next(reader)
                except StopIteration:
                    return
                except (_RowTooLarge, csv.Error) as exc:
                    # csv.Error too: another library may have lowered the
                    # process-wide csv.field_size_limit; the row is refused.
                    line += 1
                    row += 1
                    yield self._skip(row, line, None if isinstance(exc, _RowTooLarge) else exc)
                    continue
                line += 1
                text = "\x1f".join(cells)  # (str.strip() counts \x1f as whitespace)
                if not text.strip():
                    continue  # a blank line, or one of empty cells only
                row += 1
                digest = _digest(text)
                problem = column = None
                if feed.eof:
                    problem = (
                        "a quote opened in this row is never closed: the rest of the "
                        "file was read as one cell"
                    )
                elif len(cells) > width and any(cell.strip() for cell in cells[width:]):
                    problem = f"{len(cells)} cells but the header names {width} columns"
                elif not text.isascii() and _not_utf8(text):
                    index = next(i for i, cell in enumerate(cells) if _not_utf8(cell))
                    column = _column_name(header, index)
                    problem = (
                        f"column {column!r} is not UTF-8 text; save the file as UTF-8 "
                        '("CSV UTF-8" in spreadsheets)'
                    )
                if problem is not None:
                    yield ContactRow(row, digest, {}, f"line {line}: {problem}", line, column)
                    continue
                fields = {name: value for name, value in zip(header, cells, strict=False) if name}
                yield ContactRow(row, digest, fields, None, line)

    def _skip(self, row: int, line: int, error: csv.Error | None) -> ContactRow:
        """Skip the rest of a record cut short, following its quotes; its row."""
        assert self.header is not None
        feed = self.feed
        skipper = _Skipper(self.delimiter)
        ended = False
        for piece in feed.kept:
            ended = skipper.feed(piece)
        while not ended:
            piece = feed.read()
            if not piece:
                break
            ended = skipper.feed(piece)
        column = _column_name(self.header, skipper.widest)
        if not ended and skipper.state == _QUOTED:
            problem = (
                "a quote opened in this row is never closed: the rest of the file "
                "was read as one cell, not as contacts"
            )
        elif error is not None:
            problem = f"unreadable CSV ({error})"
        else:
            problem = (
                f"{skipper.size:,} characters, over the limit of {MAX_ROW_CHARS:,} per "
                f"row (column {column!r} holds {skipper.widest_size:,})"
            )
        return ContactRow(row, skipper.digest, {}, f"line {line}: {problem}", line, column)


def _column_name(header: list[str], index: int) -> str:
    if index < len(header) and header[index]:
        return header[index]
    return f"cell {index + 1}"


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


def _read_jsonl(
    stream: io.TextIOBase, path: str | Path, names: _Names, limit: int = MAX_ROW_CHARS
) -> Generator[ContactRow, None, None]:
    with stream:
        row = line = 0
        while True:
            piece = stream.readline(limit + 1)
            if not piece:
                return
            line += 1
            if len(piece) > limit and not piece.endswith(_LINE_ENDS):
                row += 1
                yield _skip_jsonl_line(stream, piece, row, line, limit)
                continue
            text = piece.strip()
            if not text:
                continue
            row += 1
            digest = _digest(text)
            if _not_utf8(text):
                problem = "not UTF-8 text; save the file as UTF-8"
                yield ContactRow(row, digest, {}, f"line {line}: {problem}", line)
                continue
            try:
                data = json.loads(text)
            except RecursionError:
                problem = f"line {line}: not JSON (nested too deeply)"
                yield ContactRow(row, digest, {}, problem, line)
                continue
            except ValueError as exc:  # JSONDecodeError, or an integer of 4,300+ digits
                reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
                yield ContactRow(row, digest, {}, f"line {line}: not JSON ({reason})", line)
                continue
            if not isinstance(data, dict):
                yield ContactRow(
                    row, digest, {}, f"line {line}: not a JSON object ({{...}} per line)", line
                )
                continue
            if ("\\ud" in text or "\\uD" in text) and _holds_surrogate(data):
                # "\ud800" is valid JSON but no text: it could not be sent.
                problem = f"line {line}: a string holds a lone surrogate escape (\\ud800-\\udfff)"
                yield ContactRow(row, digest, {}, problem, line)
                continue
            fields: dict[str, Any] = {}
            for name, value in data.items():
                key = names(name)
                if key is None:
                    continue  # superseded by a column the user chose (columns=)
                if key == "context" and isinstance(value, dict):
                    for inner, inner_value in value.items():
                        fields.setdefault(str(inner), inner_value)
                else:
                    fields[key] = value
            yield ContactRow(row, digest, fields, None, line)


def _holds_surrogate(value: Any) -> bool:
    """Whether a decoded JSON value holds a string that is not valid Unicode."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _not_utf8(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _skip_jsonl_line(
    stream: io.TextIOBase, first: str, row: int, line: int, limit: int
) -> ContactRow:
    digest = hashlib.blake2b(digest_size=12)
    size = 0
    piece = first
    while piece:
        digest.update(piece.encode("utf-8", "surrogateescape"))
        size += len(piece)
        if piece.endswith(_LINE_ENDS):
            break
        piece = stream.readline(limit)
    problem = f"{size:,} characters, over the limit of {limit:,} per row"
    return ContactRow(row, digest.hexdigest(), {}, f"line {line}: {problem}", line)


def _parse_when(value: Any) -> datetime | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return parse_aware_datetime(value)
    except NaiveTimeError:
        raise InvalidRequestError(
            "scheduled_at",
            value,
            f"no time zone; add an offset such as +01:00, or Z for UTC (e.g. {value.strip()}Z)",
        ) from None
    except ValueError:
        raise InvalidRequestError(
            "scheduled_at", value, "not an ISO 8601 date and time (e.g. 2030-01-31T09:30Z)"
        ) from None


def _optional_text(value: Any) -> Any:
    """Empty cells mean "not given"; anything else is passed on as it came."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return value.strip() if isinstance(value, str) else value


def row_request(contact: ContactRow, default_agent: str | None) -> CallRequest:
    """The (unvalidated) :class:`CallRequest` a row asks for.

    Raises :class:`InvalidRequestError` for what only the row format can
    tell (an unreadable row, a missing ``to`` or agent, an unparseable or
    zone-less time); its reason starts with the row's line. Numbers and
    times are checked later by ``prepare_request``.
    """
    if contact.problem is not None:
        raise InvalidRequestError(contact.column or "row", None, contact.problem)
    try:
        return _row_request(contact, default_agent)
    except InvalidRequestError as error:
        if not contact.line:
            raise
        raise InvalidRequestError(
            error.field, error.value, f"line {contact.line}: {error.reason}"
        ) from None


def _row_request(contact: ContactRow, default_agent: str | None) -> CallRequest:
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
