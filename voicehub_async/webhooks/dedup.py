"""Bounded memory of what a webhook receiver has seen: event ids and call order.

VoiceHub retries deliveries, so the same event (same ``eventId``) can arrive
several times; and nothing promises that a call's events arrive in the order
they happened. Both problems need memory, and a receiver runs for months, so
both memories here are bounded: by a number of entries (least recently used
go first) and, for event ids, also by age. Neither uses a task or a timer:
expiry happens as new entries are added.

A forgotten event id means a very late repeat is handed on a second time; a
forgotten call means a very late, older status could be handed on. Both are
far less harmful than unbounded growth, and the limits are generous.
"""

from __future__ import annotations

import time
import warnings
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime

import attrs

from ..models import CallStage, CallStatus

__all__ = ["EventDeduplicator", "StatusOrderGuard", "status_rank"]


def status_rank(status: CallStatus) -> int:
    """How far along a call with ``status`` is (terminal statuses rank highest).

    Deprecated: use :attr:`CallStatus.stage` and :meth:`CallStatus.may_follow`,
    the one status order every module uses. Kept for one release; an
    undocumented status ranks as ``in-progress`` here, as it did.
    """
    warnings.warn(
        "status_rank() is deprecated; use CallStatus.stage or CallStatus.may_follow()",
        DeprecationWarning,
        stacklevel=2,
    )
    stage = status.stage
    return int(CallStage.IN_PROGRESS if stage is None else stage)


class EventDeduplicator:
    """Remembers the last ``max_events`` event ids, each for ``window`` seconds.

    :meth:`add` answers whether an id is new and remembers it; :meth:`discard`
    forgets one again (a receiver does that when handing the event on failed,
    so that VoiceHub's retry is processed instead of being taken for a
    repeat). ``window`` (seconds, None for no age limit) should exceed the
    time VoiceHub keeps retrying; ``clock`` is injectable for tests.
    """

    def __init__(
        self,
        max_events: int = 100_000,
        window: float | None = 24 * 3600.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        if window is not None and not window > 0:
            raise ValueError("window must be a positive number of seconds or None")
        self.max_events = max_events
        self.window = window
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, event_id: object) -> bool:
        if not isinstance(event_id, str):
            return False
        self._expire(self._clock())
        return event_id in self._seen

    def add(self, event_id: str) -> bool:
        """True (and remembered) if ``event_id`` was not seen within the window."""
        now = self._clock()
        self._expire(now)
        seen = self._seen
        if event_id in seen:
            return False
        seen[event_id] = now
        if len(seen) > self.max_events:
            seen.popitem(last=False)
        return True

    def discard(self, event_id: str) -> None:
        """Forget ``event_id``, so that its next delivery counts as new."""
        self._seen.pop(event_id, None)

    def _expire(self, now: float) -> None:
        # Entries are in insertion order, hence in time order: stop at the
        # first one that is young enough.
        if self.window is None:
            return
        limit = now - self.window
        seen = self._seen
        while seen:
            oldest = next(iter(seen.values()))
            if oldest > limit:
                break
            seen.popitem(last=False)


@attrs.frozen
class _Seen:
    timestamp: datetime | None
    status: CallStatus


class StatusOrderGuard:
    """Keeps each call's reported status from moving backwards.

    For each of the last ``max_calls`` calls it remembers the newest status
    handed on and that event's timestamp. A status event is *stale*, and
    should not be handed on, when:

    * the call already reached a terminal status (nothing follows a final
      status; a repeat of it under a new ``eventId`` is not news either), or
    * its timestamp is older than the one remembered, or
    * its timestamp is the same (timestamps may have only second precision)
      and its status is not further along (see :meth:`CallStatus.may_follow`:
      an undocumented status is of unknown order, so it is never behind a
      live status and no status is behind it), or
    * either event lacks a timestamp and its status is not further along.

    The receiver rather than the poller holds this, because the receiver is
    where event timestamps are known and where stale events can be answered
    200 (VoiceHub must not retry them) without reaching anybody: a user's
    ``on_event`` writing to a database needs the same protection as the
    poller.
    """

    def __init__(self, max_calls: int = 100_000) -> None:
        if max_calls < 1:
            raise ValueError("max_calls must be at least 1")
        self.max_calls = max_calls
        self._last: OrderedDict[str, _Seen] = OrderedDict()

    def __len__(self) -> int:
        return len(self._last)

    def last_status(self, call_id: str) -> CallStatus | None:
        """The newest status handed on for ``call_id``, if still remembered."""
        seen = self._last.get(call_id)
        return None if seen is None else seen.status

    def is_stale(self, call_id: str, status: CallStatus, timestamp: datetime | None) -> bool:
        """True when handing this status on would move the call backwards."""
        last = self._last.get(call_id)
        if last is None:
            return False
        if last.status.is_terminal:
            return True
        forward = status != last.status and status.may_follow(last.status)
        if timestamp is None or last.timestamp is None:
            return not forward
        if timestamp != last.timestamp:
            return timestamp < last.timestamp
        return not forward

    def record(
        self, call_id: str, status: CallStatus, timestamp: datetime | None
    ) -> Callable[[], None]:
        """Remember ``status`` as the call's newest; returns an undo function.

        The undo restores what was there before, unless something newer was
        recorded in between: a receiver calls it when handing the event on
        failed, so that VoiceHub's retry of that event is not judged stale.
        """
        entries = self._last
        previous = entries.get(call_id)
        mine = _Seen(timestamp, status)
        entries[call_id] = mine
        entries.move_to_end(call_id)
        if len(entries) > self.max_calls:
            entries.popitem(last=False)

        def undo() -> None:
            if entries.get(call_id) is mine:
                if previous is None:
                    del entries[call_id]
                else:
                    entries[call_id] = previous

        return undo
