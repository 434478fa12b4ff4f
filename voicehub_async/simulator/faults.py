"""Scripted faults: deterministic misbehaviour queued by a test.

``Simulator.inject(fault, endpoint=..., times=...)`` queues one of these; the
next matching requests consume them in order. Each kind says whether it acts
*before* the request is processed (nothing is created: the client may retry
safely) or *after* (``create=True``: a trigger's call exists although the
client sees a failure, the case a non-idempotent trigger must not retry).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

__all__ = [
    "AnyFault",
    "DelayFault",
    "Fault",
    "RedirectFault",
    "ResetFault",
    "StatusFault",
]


def _to_headers(value: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    # A tuple keeps the frozen fault hashable and comparable.
    return () if value is None else tuple((str(k), str(v)) for k, v in value.items())


@attrs.frozen
class StatusFault:
    """Answer ``code`` instead of the normal answer.

    ``body``: None gives a JSON ``{"message": ...}``; a ``str`` is sent as text
    (``text/html`` when it starts with ``<``, else ``text/plain``; ``""`` for an
    empty body); ``bytes`` are sent raw; anything else is JSON-encoded.
    ``headers`` override the defaults (e.g. ``Retry-After``, ``Content-Type``).
    With ``create=True`` a trigger creates its call first (a 500/502/504 after
    processing).
    """

    code: int = attrs.field(
        validator=attrs.validators.and_(attrs.validators.ge(100), attrs.validators.le(599))
    )
    body: Any = None
    headers: tuple[tuple[str, str], ...] = attrs.field(default=None, converter=_to_headers)
    create: bool = False


@attrs.frozen
class DelayFault:
    """Hold the answer back ``seconds`` real seconds (to provoke a read timeout).

    ``create=True``: the request is processed (a trigger's call created) first,
    then the answer is delayed. ``create=False``: the delay comes first, as in
    a congested front end; if the client has gone away by then, the request is
    dropped unprocessed, otherwise it is processed normally.
    """

    seconds: float = attrs.field(validator=attrs.validators.ge(0.0))
    create: bool = True


@attrs.frozen
class ResetFault:
    """Drop the connection without answering (the client sees a disconnect).

    ``create=True``: a trigger creates and logs its call before the drop.
    """

    create: bool = False


@attrs.frozen
class RedirectFault:
    """Answer ``302`` with ``Location: location`` (a client must not follow it
    blindly to another host with its API key)."""

    location: str = "https://voicehub-redirect.invalid/"

    @property
    def create(self) -> bool:
        """A redirect never processes the request."""
        return False


AnyFault = StatusFault | DelayFault | ResetFault | RedirectFault


class Fault:
    """Factories for scripted faults (a namespace: not instantiated)."""

    def __init__(self) -> None:  # pragma: no cover - guard only
        raise TypeError("Fault is a namespace of factory functions")

    @staticmethod
    def status(
        code: int,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        create: bool = False,
    ) -> StatusFault:
        """An error answer, e.g. ``Fault.status(503, headers={"Retry-After": "1"})``."""
        return StatusFault(code, body, headers, create)

    @staticmethod
    def rate_limited(retry_after: int | str | None = 1) -> StatusFault:
        """A 429; ``retry_after`` in seconds, or an HTTP date string, or None."""
        headers = None if retry_after is None else {"Retry-After": str(retry_after)}
        return Fault.status(429, {"message": "rate limit exceeded"}, headers)

    @staticmethod
    def delay(seconds: float, create: bool = True) -> DelayFault:
        """A late answer (see :class:`DelayFault`)."""
        return DelayFault(seconds, create)

    @staticmethod
    def reset(create: bool = False) -> ResetFault:
        """A dropped connection (see :class:`ResetFault`)."""
        return ResetFault(create)

    @staticmethod
    def redirect(location: str = "https://voicehub-redirect.invalid/") -> RedirectFault:
        """A 302 to another host."""
        return RedirectFault(location)
