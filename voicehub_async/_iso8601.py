"""ISO 8601 dates and times: the one parser every input of the SDK uses.

Times reach the SDK from three places: ``voicehub call --at``, the
``scheduled_at`` column of a campaign's contacts file, and the ``timestamp``
of a webhook event. They share this parser, so that the same text means the
same instant everywhere; what a time *without* a zone means is each caller's
rule, not the parser's (the CLI and contacts files refuse it, because a
wall-clock time guessed in the wrong zone phones someone at the wrong hour;
a webhook from VoiceHub takes it as UTC). This module imports nothing of the
SDK, so that any layer may use it.

Accepted: ``2030-01-31T09:30``, seconds and any number of fractional digits
(``.`` or ``,``; truncated to microseconds), a space or ``t`` for ``T``, a
bare date (midnight), and a zone as ``Z``, ``+02:00``, ``+0200`` or ``+02``.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any, Final

__all__ = ["NaiveTimeError", "parse_aware_datetime", "parse_iso_datetime"]

_ISO_8601: Final = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?)?"
    r"\s*(Z|z|[+-]\d{2}(?::?\d{2})?)?",
    re.ASCII,
)
#: How much of a refused value an error message quotes.
_SHOWN: Final = 40


class NaiveTimeError(ValueError):
    """A well-formed time without a zone, where one is required.

    ``parsed`` is the naive datetime, so that a caller can suggest the same
    time with ``Z`` or an offset.
    """

    def __init__(self, text: str, parsed: datetime) -> None:
        super().__init__(f"{text[:_SHOWN]!r} has no time zone")
        self.parsed = parsed


def parse_iso_datetime(value: Any) -> datetime:
    """``value`` (an ISO 8601 string) as a datetime: aware if it names a
    zone, naive otherwise. Anything else raises :class:`ValueError` whose
    message quotes (the start of) the value and says what is wrong."""
    if not isinstance(value, str):
        raise ValueError(f"an ISO 8601 string is required, not {type(value).__name__}")
    match = _ISO_8601.fullmatch(value.strip())
    if match is None:
        raise ValueError(f"{value[:_SHOWN]!r} is not ISO 8601")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    tz: timezone | None = None
    if zone in ("Z", "z"):
        tz = timezone.utc
    elif zone:
        digits = zone[1:].replace(":", "")
        hours, minutes = int(digits[:2]), int(digits[2:4] or 0)
        if hours > 23 or minutes > 59:
            raise ValueError(f"{value[:_SHOWN]!r} has an impossible offset")
        offset = timedelta(hours=hours, minutes=minutes)
        tz = timezone(-offset if zone[0] == "-" else offset)
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    try:
        return datetime(
            int(year),
            int(month),
            int(day),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            micro,
            tzinfo=tz,
        )
    except ValueError:
        raise ValueError(f"{value[:_SHOWN]!r} is not a real date or time") from None


def parse_aware_datetime(value: Any) -> datetime:
    """As :func:`parse_iso_datetime`, but a time without a zone raises
    :class:`NaiveTimeError` (a :class:`ValueError`) instead of being guessed."""
    when = parse_iso_datetime(value)
    if when.tzinfo is None:
        raise NaiveTimeError(str(value).strip(), when)
    return when
