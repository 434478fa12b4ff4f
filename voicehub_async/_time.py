"""Small answers about time values, each given once for the whole package.

Whether a datetime is time-zone aware decides, in several places, whether a
value is refused (the API has no documented zone, so the SDK never guesses
one); how a duration is shown must read the same in a campaign's progress
line and a load test's plan.
"""

from __future__ import annotations

from datetime import datetime

__all__ = ["format_duration", "is_aware"]


def is_aware(when: datetime) -> bool:
    """True when ``when`` carries a time zone that gives it a UTC offset.

    ``tzinfo`` alone is not enough: a tzinfo whose ``utcoffset()`` answers
    None makes the datetime naive all the same (the ``datetime`` docs' rule).
    """
    return when.tzinfo is not None and when.utcoffset() is not None


def format_duration(seconds: float | None) -> str:
    """A short duration for people: ``0.25s``, ``42s``, ``3m05s``, ``1h02m05s``;
    ``?`` when unknown.

    Under ten seconds up to three significant digits are kept (a load test's
    ramp of 0.2 wall seconds is not "0s"); longer durations are rounded to the
    second, which is all a progress line or a plan needs.
    """
    if seconds is None:
        return "?"
    if abs(seconds) < 10 and seconds != round(seconds):
        return f"{seconds:.3g}s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s"
