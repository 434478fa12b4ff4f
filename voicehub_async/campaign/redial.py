"""Redial sequences: a contact whose call ended busy or unanswered is dialed
again later, a few times, as outbound teams (and every real dialer) do.

A :class:`RedialPolicy` says which final statuses ask for another attempt,
how long after the call ended it is due, and how many attempts a contact gets
at most (the first included). The runner asks :meth:`RedialPolicy.due` when a
call ends; everything else (waiting, calling hours, the journal) is the
runner's.

Decisions where the issue is silent:

* Only ``busy``, ``unanswered`` and ``failed`` can be chosen. An
  **ambiguous trigger is never redialed** by a policy (the first call may
  exist: that is the rule the whole SDK keeps); ``cancelled`` is somebody's
  decision, ``completed`` is done, ``lost``/``timed_out`` say nothing about
  the person.
* A trigger the service refused (``not_sent``) placed nothing: it is not an
  attempt, and a resume sends it again as the same attempt.
* The interval runs from the moment the end of the call was seen.
* The policy belongs to the run: a resume without ``--redial`` (or with a
  lower ``--max-attempts``) dials no redial; those rows stay ``redial`` for
  a run that has the policy.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import attrs

__all__ = ["REDIAL_STATUSES", "RedialPolicy"]

#: The final statuses a policy may redial.
REDIAL_STATUSES: Final = frozenset({"busy", "unanswered", "failed"})


def _statuses(value: Iterable[str]) -> frozenset[str]:
    if isinstance(value, str):
        value = value.split(",")
    statuses = frozenset(s.strip().lower() for s in value if s.strip())
    unknown = statuses - REDIAL_STATUSES
    if unknown:
        extra = (
            " (an ambiguous trigger may have placed a call: it is never redialed)"
            if "ambiguous" in unknown
            else ""
        )
        raise ValueError(
            f"cannot redial {', '.join(sorted(unknown))}: choose among "
            f"{', '.join(sorted(REDIAL_STATUSES))}{extra}"
        )
    if not statuses:
        raise ValueError("name at least one status to redial, e.g. busy,unanswered")
    return statuses


def _positive(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be more than 0 seconds, got {value!r}")


@attrs.frozen
class RedialPolicy:
    """Dial a contact again ``after`` seconds when its call ended in one of
    ``statuses``, until it has had ``max_attempts`` attempts.

    ``RedialPolicy({"busy", "unanswered"}, after=1800, max_attempts=3)``
    is the command line's ``--redial busy,unanswered --redial-after 30m
    --max-attempts 3``.
    """

    statuses: frozenset[str] = attrs.field(
        default=frozenset({"busy", "unanswered"}), converter=_statuses
    )
    after: float = attrs.field(default=1800.0, converter=float, validator=_positive)
    max_attempts: int = attrs.field(default=3, validator=attrs.validators.ge(1))

    def due(self, state: str, attempt: int, ended_at: float) -> float | None:
        """When attempt ``attempt + 1`` is due (Unix time), for a call of
        attempt ``attempt`` that ended in ``state`` at ``ended_at``; None
        when the contact is done."""
        if state not in self.statuses or attempt >= self.max_attempts:
            return None
        return ended_at + self.after
