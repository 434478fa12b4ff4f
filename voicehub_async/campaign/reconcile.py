"""Turning ambiguous triggers into facts, from VoiceHub's webhooks.

A trigger whose answer was lost (a connection reset after the request went
out, a timeout, a 502) may or may not have placed a call, and the API has no
way to ask. But if it did, VoiceHub soon sends a ``CallStatusChanged`` event
for that call, carrying ``userNumber`` and ``agentId``. A campaign dials a
number once (duplicates are refused), so an event for a call id the campaign
does not know, to the number and agent of a row left ambiguous, stamped after
that row's ``sending`` mark, can only be that row's call. The row is then
*reconciled*: it gets that call id and is followed to its end like any call.

What keeps a wrong match out:

* only one row may wait per (number, agent): with ``--allow-duplicates`` two
  ambiguous rows to one number are left ambiguous;
* the event's own ``timestamp`` must not be earlier than the row's mark (an
  event without one is never used);
* the call id must be unknown: not a call the campaign follows, and not one
  that ended recently (a late repeat of an old call's event).

Events can arrive before the trigger's failure is known (the call exists as
soon as the service got the request), so events of unknown calls are kept a
short while (``keep`` seconds, at most ``max_events``) and matched when a row
turns ambiguous. Memory is bounded by those limits and by the ambiguous rows.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from datetime import datetime, timezone
from typing import Final

import attrs

from voicehub_async.webhooks.events import CallStatusChanged

__all__ = ["Reconciled", "Reconciler", "number_key", "reconciled_note"]

_KEEP: Final = 120.0
_MAX_EVENTS: Final = 10_000
_MAX_ENDED: Final = 10_000


def number_key(number: str) -> str:
    """The digits of a phone number: ``+1 (415) 555-0123`` and ``+14155550123``
    are one number (the campaign's are E.164 already; an event's may not be)."""
    return "".join(ch for ch in number if ch.isdigit())


@attrs.frozen
class Reconciled:
    """A row left ambiguous, now known to have placed ``call_id``."""

    row: Hashable
    call_id: str
    #: The event that told: its timestamp (Unix seconds) and status.
    event_at: float
    status: str


@attrs.frozen
class _Waiting:
    row: Hashable
    sent_at: float


@attrs.frozen
class _Seen:
    call_id: str
    at: float
    arrived: float
    status: str


def reconciled_note(found: Reconciled) -> str:
    """What the results say about a reconciled row."""
    when = datetime.fromtimestamp(found.event_at, timezone.utc).isoformat(timespec="seconds")
    return (
        f"reconciled: the trigger's answer was lost, but a CallStatusChanged webhook at "
        f"{when} named call {found.call_id} for this number and agent"
    )


class Reconciler:
    """Matches webhook events of unknown calls to rows left ambiguous.

    ``clock`` is Unix seconds (marks and event timestamps are wall-clock
    times); tests replace it.
    """

    def __init__(
        self,
        *,
        keep: float = _KEEP,
        max_events: int = _MAX_EVENTS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keep = keep
        self.max_events = max_events
        self._clock = clock
        self._waiting: dict[tuple[str, str], list[_Waiting]] = {}
        self._seen: OrderedDict[tuple[str, str], list[_Seen]] = OrderedDict()
        self._n_seen = 0
        self._ended: set[str] = set()
        self._ended_order: deque[str] = deque()
        self.reconciled = 0

    def __repr__(self) -> str:
        return f"<Reconciler waiting={len(self._waiting)} reconciled={self.reconciled}>"

    @property
    def waiting(self) -> int:
        """Rows left ambiguous that an event could still resolve."""
        return sum(len(rows) for rows in self._waiting.values())

    def ambiguous(
        self,
        row: Hashable,
        number: str,
        agent_id: str,
        sent_at: float,
        known: Callable[[str], bool],
    ) -> Reconciled | None:
        """Row ``row`` (to ``number``, agent ``agent_id``, marked ``sending`` at
        ``sent_at``, Unix seconds) is ambiguous. Returns its reconciliation at
        once when an event for it came already; else it waits for one."""
        key = (number_key(number), agent_id)
        rows = self._waiting.setdefault(key, [])
        rows.append(_Waiting(row, sent_at))
        if len(rows) > 1:
            return None
        self._expire()
        for seen in self._seen.get(key, ()):
            if seen.at >= sent_at and self._unknown(seen.call_id, known):
                return self._resolve(key, seen.call_id, seen.at, seen.status)
        return None

    def event(self, event: CallStatusChanged, known: Callable[[str], bool]) -> Reconciled | None:
        """A status event: the reconciliation it makes, if any.

        ``known(call_id)`` says whether the campaign follows that call (then
        the event is simply its status, and nothing is reconciled).
        """
        if (
            event.user_number is None
            or event.agent_id is None
            or event.timestamp is None
            or event.timestamp.tzinfo is None
            or not self._unknown(event.call_id, known)
        ):
            return None
        at = event.timestamp.timestamp()
        key = (number_key(event.user_number), event.agent_id)
        rows = self._waiting.get(key)
        if rows is not None:
            if len(rows) == 1 and at >= rows[0].sent_at:
                return self._resolve(key, event.call_id, at, event.status.value)
            return None
        self._remember(key, _Seen(event.call_id, at, self._clock(), event.status.value))
        return None

    def ended(self, call_id: str) -> None:
        """``call_id`` reached its end: a late event of it must not match a row."""
        if call_id in self._ended:
            return
        self._ended.add(call_id)
        self._ended_order.append(call_id)
        if len(self._ended_order) > _MAX_ENDED:
            self._ended.discard(self._ended_order.popleft())

    def forget(self, row: Hashable) -> None:
        """Row ``row`` is no longer waiting (its slot timed out, say)."""
        for key, rows in list(self._waiting.items()):
            kept = [w for w in rows if w.row != row]
            if len(kept) != len(rows):
                if kept:
                    self._waiting[key] = kept
                else:
                    del self._waiting[key]
                return

    # -- internals ------------------------------------------------------------------

    def _unknown(self, call_id: str, known: Callable[[str], bool]) -> bool:
        return call_id not in self._ended and not known(call_id)

    def _resolve(self, key: tuple[str, str], call_id: str, at: float, status: str) -> Reconciled:
        waiting = self._waiting.pop(key)[0]
        self._n_seen -= len(self._seen.pop(key, ()))
        self.reconciled += 1
        return Reconciled(waiting.row, call_id, at, status)

    def _remember(self, key: tuple[str, str], seen: _Seen) -> None:
        entries = self._seen.get(key)
        if entries is None:
            entries = self._seen[key] = []
        elif any(e.call_id == seen.call_id for e in entries):
            return
        else:
            self._seen.move_to_end(key)
        entries.append(seen)
        self._n_seen += 1
        self._expire()

    def _expire(self) -> None:
        """Drop events kept longer than ``keep`` seconds, or beyond ``max_events``."""
        horizon = self._clock() - self.keep
        seen = self._seen
        while seen:
            key, entries = next(iter(seen.items()))
            if self._n_seen <= self.max_events and entries[-1].arrived >= horizon:
                break
            del seen[key]
            self._n_seen -= len(entries)
