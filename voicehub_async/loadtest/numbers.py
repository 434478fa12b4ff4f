"""Reading the test numbers a load test calls.

One number per line; blank lines and ``#`` comments are ignored, and only the
first field of a line counts (``+14155550123, front desk`` is fine, so a
column cut from a spreadsheet works). Every number is validated before the
run, and *all* bad lines are reported at once, each with its line number: a
load test with a wrong number in its list should be fixed, not half-run.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from ..errors import InvalidRequestError
from ..models import normalize_number

__all__ = ["NumbersFileError", "parse_numbers", "read_numbers"]

_FIELD_SPLIT: Final = re.compile(r"[,;\t]")
#: How many bad lines an error lists before "and N more".
_SHOWN: Final = 5


class NumbersFileError(ValueError):
    """Some lines of a numbers file are not phone numbers (``problems`` lists
    ``(line number, message)``), or the file holds none."""

    def __init__(self, source: str, problems: list[tuple[int, str]]) -> None:
        self.source = source
        self.problems = problems
        if not problems:
            message = f"{source}: no phone numbers in it"
        else:
            shown = "; ".join(f"line {line}: {text}" for line, text in problems[:_SHOWN])
            more = len(problems) - _SHOWN
            message = f"{source}: {shown}" + (f"; and {more} more bad line(s)" if more > 0 else "")
        super().__init__(message)


def parse_numbers(
    lines: Iterable[str], *, source: str = "numbers", default_region: str | None = None
) -> tuple[str, ...]:
    """The E.164 numbers in ``lines``, in order (repeats kept: a number listed
    twice is called twice as often). Raises :class:`NumbersFileError`."""
    numbers: list[str] = []
    problems: list[tuple[int, str]] = []
    for line_number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        field = _FIELD_SPLIT.split(text, 1)[0].strip()
        try:
            numbers.append(normalize_number(field, "number", default_region))
        except InvalidRequestError as exc:
            # "line 3: '(415) 555-0103': no country code; write it as ...": the
            # reason is the SDK's, and it says what to do.
            problems.append((line_number, f"{field!r}: {exc.reason}"))
    if problems or not numbers:
        raise NumbersFileError(source, problems)
    return tuple(numbers)


def read_numbers(path: str | Path, *, default_region: str | None = None) -> tuple[str, ...]:
    """:func:`parse_numbers` for a file (UTF-8). Raises OSError or
    :class:`NumbersFileError`."""
    target = Path(path)
    with target.open(encoding="utf-8-sig") as lines:
        return parse_numbers(lines, source=str(target), default_region=default_region)
