"""Calling hours: never ring a person at night in *their* time zone.

``--calling-hours 09:00-20:00`` is read in each contact's local time, found
from the number with libphonenumber's time-zone data. A contact outside the
window is not skipped but scheduled (``scheduled_at``) at the next moment the
window opens.

Decisions where the issue is silent:

* **A number spanning several zones** (a country-wide mobile or toll-free
  range) must be inside the window in *all* of them: the call goes at the
  first moment when it is allowed everywhere. When no such moment exists in
  the next week (e.g. a one-hour window for a US toll-free number, whose
  zones go from Guam to Newfoundland), the row is refused as invalid rather
  than risk a night call.
* **Unknown zone** (libphonenumber answers ``Etc/Unknown``): the window is
  applied in ``fallback_zone`` if one was given (``--calling-hours-tz``);
  otherwise the row is refused as invalid, naming the option. Calling hours
  exist to avoid night calls, so "we could not tell" must not mean "any time".
* **The window** includes its start and excludes its end (``09:00-20:00``
  allows a call to start at 09:00 and at 19:59, not at 20:00). A start after
  the end (``20:00-08:00``) spans midnight.
* A row with its own ``scheduled_at`` is checked at that time, and moved to
  the next opening if it falls outside (the results line says so).
* **Calling days** (``--calling-days mon-fri``) are weekdays of the
  contact's own zone: a moment is allowed when its local weekday is one of
  them and its local time is inside the window. With days and no window,
  the whole of each allowed day is open.

Everything takes ``now`` as an argument, so tests pin it at zone and day
boundaries.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta, timezone
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs
import phonenumbers
import phonenumbers.timezone

from voicehub_async.errors import InvalidRequestError

__all__ = [
    "ALL_DAYS",
    "CallingHours",
    "parse_calling_days",
    "parse_calling_hours",
    "zones_for_number",
]

_UNKNOWN_ZONE: Final = "Etc/Unknown"
#: How far ahead an opening common to every zone of a number is looked for.
_HORIZON_DAYS: Final = 8
_DAY_NAMES: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
#: Every weekday (Monday is 0, as in :meth:`datetime.weekday`).
ALL_DAYS: Final = frozenset(range(7))
_ALL_DAY: Final = time(0)


def parse_calling_days(text: str) -> frozenset[int]:
    """``"mon-fri"``, ``"mon,wed,fri"``, ``"fri-mon"``, ``"sat-sun"`` as weekday
    numbers (Monday 0); ValueError with a readable message."""
    days: set[int] = set()
    for part in text.lower().replace(" ", "").split(","):
        first, sep, last = part.partition("-")
        try:
            start = _DAY_NAMES.index(first[:3]) if len(first) >= 3 else -1
            end = _DAY_NAMES.index(last[:3]) if sep else start
        except ValueError:
            start = end = -1
        if start < 0 or end < 0:
            raise ValueError(
                f"calling days must be weekdays such as mon-fri or mon,wed,sat; got {text!r}"
            )
        day = start
        days.add(day)
        while day != end:
            day = (day + 1) % 7
            days.add(day)
    return frozenset(days)


def parse_calling_hours(text: str) -> tuple[time, time]:
    """``"09:00-20:00"`` as ``(time(9), time(20))``; ValueError with a readable message."""
    start_text, sep, end_text = text.partition("-")
    if not sep:
        raise ValueError(f"calling hours must look like 09:00-20:00, got {text!r}")
    try:
        start = time.fromisoformat(start_text.strip())
        end = time.fromisoformat(end_text.strip())
    except ValueError:
        raise ValueError(f"calling hours must look like 09:00-20:00, got {text!r}") from None
    if start == end:
        raise ValueError(f"calling hours {text!r} are empty (start equals end)")
    return start, end


@functools.lru_cache(maxsize=1024)
def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def zones_for_number(number: str) -> tuple[str, ...]:
    """The IANA zones libphonenumber gives for an E.164 number (may be
    ``("Etc/Unknown",)``)."""
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return (_UNKNOWN_ZONE,)
    return tuple(phonenumbers.timezone.time_zones_for_number(parsed))


@attrs.frozen
class CallingHours:
    """A daily window of local time in which calls may start.

    :meth:`next_allowed` answers, for a number and a wished-for time, when the
    call may go: None when right away is fine, else the (UTC) time to
    schedule it at. See the module documentation for the rules.
    """

    start: time
    end: time
    fallback_zone: str | None = None
    days: frozenset[int] = ALL_DAYS
    _cache: dict[tuple[str, ...], tuple[ZoneInfo, ...]] = attrs.field(
        factory=dict, init=False, repr=False, eq=False
    )

    @classmethod
    def parse(
        cls, text: str | None, fallback_zone: str | None = None, days: str | None = None
    ) -> CallingHours:
        """From ``"09:00-20:00"`` (None: all day) and ``"mon-fri"`` (None: every
        day); ValueError for a bad window, days or an unknown zone."""
        start, end = (_ALL_DAY, _ALL_DAY) if text is None else parse_calling_hours(text)
        allowed = ALL_DAYS if days is None else parse_calling_days(days)
        if fallback_zone is not None and _zone(fallback_zone) is None:
            raise ValueError(
                f"unknown time zone {fallback_zone!r} (an IANA name, e.g. Europe/Paris)"
            )
        return cls(start, end, fallback_zone, allowed)

    def _inside(self, local: time) -> bool:
        if self.start == self.end:  # days only: the whole day
            return True
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def allows(self, when: datetime, zones: Sequence[ZoneInfo]) -> bool:
        """True when ``when`` (aware) is inside the window, on an allowed
        day, in every zone."""
        for zone in zones:
            local = when.astimezone(zone)
            if local.weekday() not in self.days or not self._inside(local.time()):
                return False
        return True

    def what_excludes(self, number: str, when: datetime) -> str:
        """``"calling days"`` or ``"calling hours"``: why ``when`` is not allowed."""
        for zone in self.zones(number):
            if when.astimezone(zone).weekday() not in self.days:
                return "calling days"
        return "calling hours"

    def zones(self, number: str) -> tuple[ZoneInfo, ...]:
        """The zones the window must hold in for ``number`` (E.164).

        Raises :class:`InvalidRequestError` when no zone is known and no
        fallback was given.
        """
        names = zones_for_number(number)
        cached = self._cache.get(names)
        if cached is not None:
            return cached
        zones = tuple(z for z in map(_zone, names) if z is not None)
        if not zones and self.fallback_zone is not None:
            fallback = _zone(self.fallback_zone)
            zones = () if fallback is None else (fallback,)
        if not zones:
            raise InvalidRequestError(
                "to",
                number,
                "its time zone is unknown, so the calling hours cannot be checked; "
                "give --calling-hours-tz ZONE to assume one",
            )
        if len(self._cache) < 4096:
            self._cache[names] = zones
        return zones

    def next_allowed(
        self, number: str, now: datetime, wanted: datetime | None = None
    ) -> datetime | None:
        """When a call to ``number`` may start, from ``wanted`` (default ``now``).

        None when ``wanted`` is None and ``now`` is inside the window; else
        the first allowed UTC time at or after ``wanted``/``now`` (``wanted``
        itself when it is allowed). Raises :class:`InvalidRequestError` when
        the zone is unknown or no time is allowed in all the number's zones
        within a week.
        """
        zones = self.zones(number)
        at = now if wanted is None else max(wanted, now)
        if self.allows(at, zones):
            return None if wanted is None else wanted
        opening = self._next_opening(at, zones)
        if opening is None:
            names = ", ".join(str(z) for z in zones[:5]) + (", ..." if len(zones) > 5 else "")
            raise InvalidRequestError(
                "to",
                number,
                f"no time within the calling hours {self.start:%H:%M}-{self.end:%H:%M} holds "
                f"in all of its time zones ({names})",
            )
        return opening

    def _next_opening(self, at: datetime, zones: Sequence[ZoneInfo]) -> datetime | None:
        """The first opening of the window, in any zone, after ``at`` at which
        every zone is inside: the earliest allowed moment, since the set of
        allowed moments is an intersection of windows, each starting at an
        opening."""
        candidates: list[datetime] = []
        for zone in zones:
            first: date = at.astimezone(zone).date() - timedelta(days=1)
            for offset in range(_HORIZON_DAYS + 2):
                # An allowed stretch starts at the window's opening or, on a
                # day allowed after one that is not, at midnight.
                for start in {self.start, _ALL_DAY}:
                    local = datetime.combine(first + timedelta(days=offset), start, tzinfo=zone)
                    # A start inside a DST gap (02:30 on the spring-forward night)
                    # resolves to the moment after the gap; normalise through UTC.
                    opening = local.astimezone(timezone.utc)
                    if opening > at:
                        candidates.append(opening)
        for opening in sorted(set(candidates)):
            if self.allows(opening, zones):
                return opening
        return None
