"""Do-not-call suppression: numbers that a campaign must never dial.

A list is a file of numbers, one a line, or a CSV file (the column named
``to``, ``number``, ``phone`` or ``phone_number``, else the first). Each
number is read in any format that parses with the campaign's region
(``(415) 555-0123`` with region US, ``+44 20 7946 0018`` anywhere) and held
as E.164, the form the campaign compares numbers in. Files are streamed once;
only the set of numbers stays in memory.

A line that is not a valid number is an error, reported with its file and
line number, and the campaign does not start: a do-not-call list that is only
partly understood could let a suppressed person be phoned. Blank lines and
lines starting with ``#`` are skipped.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Final

import attrs

from voicehub_async.errors import InvalidRequestError
from voicehub_async.models import normalize_number

__all__ = ["SuppressionError", "SuppressionList"]

_NUMBER_COLUMNS: Final = ("to", "number", "phone", "phonenumber", "phone_number", "e164")
#: Bad lines named in the error, at most.
_SHOWN: Final = 5


class SuppressionError(Exception):
    """A do-not-call list cannot be used (unreadable, or lines that are not numbers)."""


@attrs.frozen
class SuppressionList:
    """A set of E.164 numbers never to dial (``number in suppression``)."""

    numbers: frozenset[str] = frozenset()
    sources: tuple[str, ...] = ()

    def __contains__(self, number: object) -> bool:
        return number in self.numbers

    def __len__(self) -> int:
        return len(self.numbers)

    @classmethod
    def read(cls, paths: Iterable[str | Path], region: str | None = None) -> SuppressionList:
        """Read every file of ``paths``; :class:`SuppressionError` names the bad lines."""
        numbers: set[str] = set()
        problems: list[str] = []
        sources: list[str] = []
        count = 0
        for path in paths:
            sources.append(str(path))
            for line, text in _cells(Path(path)):
                try:
                    numbers.add(normalize_number(text, "number", region))
                except InvalidRequestError as error:
                    count += 1
                    if len(problems) < _SHOWN:
                        problems.append(f"{path} line {line}: {text!r}: {error.reason}")
        if count:
            more = f" (and {count - len(problems)} more)" if count > len(problems) else ""
            raise SuppressionError(
                f"{count} line(s) of the do-not-call list are not phone numbers{more}: "
                + "; ".join(problems)
                + ". Fix or remove them: a number not understood cannot be suppressed"
            )
        return cls(frozenset(numbers), tuple(sources))


def _cells(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, number text) for every number of the file ``path``."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as stream:
            reader = csv.reader(stream)
            column: int | None = None
            for cells in reader:
                values = [cell.strip() for cell in cells]
                if not any(values) or values[0].startswith("#"):
                    continue
                if column is None:
                    named = _header_column(values)
                    column = 0 if named is None else named
                    if named is not None or not _looks_numeric(values):
                        continue  # a header line: it names the columns, holds no number
                if column < len(values) and values[column]:
                    yield reader.line_num, values[column]
    except OSError as exc:
        raise SuppressionError(f"cannot read the do-not-call list {path}: {exc.strerror}") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise SuppressionError(f"cannot read the do-not-call list {path}: {exc}") from None


def _header_column(values: list[str]) -> int | None:
    names = [v.lower().replace(" ", "").replace("-", "_") for v in values]
    for wanted in _NUMBER_COLUMNS:
        if wanted in names:
            return names.index(wanted)
    return None


def _looks_numeric(values: list[str]) -> bool:
    return any(any(ch.isdigit() for ch in value) for value in values)
