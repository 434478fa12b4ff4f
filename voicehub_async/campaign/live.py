"""What a campaign does around each trigger: the live-call cap, stopping early,
webhooks and the reconciliation of ambiguous rows, behind one small surface.

The runner owns the rows and the journal; this module owns the questions
"may this trigger go out now?" and "should the campaign stop dialing?". It
puts together :class:`~.slots.SlotPool` (the cap), :class:`~.breaker.Breaker`
(stop early), :class:`~.reconcile.Reconciler` and the webhook server
(:mod:`.webhooks`), and talks to the two sides through hooks:

* the dispatcher calls :meth:`LiveControl.acquire` before an input's first
  attempt, :meth:`LiveControl.attempted` after every attempt,
  :meth:`LiveControl.concurrency_limited` when the service answered the
  concurrent-call 429 (the trigger waits for a slot to free rather than
  slowing everybody down), and :meth:`LiveControl.settled` with each result;
* the runner calls :meth:`LiveControl.ambiguous` for a row left ambiguous,
  :meth:`LiveControl.call_ended` when a call reaches its final status,
  :meth:`LiveControl.resumed` for a call of an earlier run followed again, and
  runs the campaign inside :meth:`LiveControl.serving` (webhooks); a row
  reconciled from a webhook comes back through the ``on_reconciled`` callback.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Hashable
from typing import TYPE_CHECKING, Any, Final

import attrs

from voicehub_async.models import CallRequest
from voicehub_async.webhooks.events import CallStatusChanged

from .breaker import Breaker, StopCause
from .reconcile import Reconciled, Reconciler
from .slots import SlotPool

if TYPE_CHECKING:
    from voicehub_async.client import VoiceHubClient
    from voicehub_async.dispatch import DispatchResult
    from voicehub_async.webhooks.receiver import StatusSink

__all__ = ["DEFAULT_MAX_CALL_TIME", "LiveControl", "live_host"]

logger = logging.getLogger("voicehub_async.campaign")

#: Seconds an ambiguous trigger (or a call nobody follows) keeps its live
#: slot: longer than any call should last.
DEFAULT_MAX_CALL_TIME: Final = 600.0


def live_host(client: VoiceHubClient) -> str:
    """The service's host, as messages name it (a base URL never carries the key)."""
    from urllib.parse import urlsplit

    return urlsplit(str(client.base_url)).hostname or str(client.base_url)


class LiveControl:
    """The campaign's gate for triggers; see the module documentation.

    ``max_live``: calls of the campaign live at once at most (None: no cap of
    our own, but a concurrent-call 429 still sets one). ``max_call_time``:
    seconds an ambiguous trigger holds its slot. ``follow``: the campaign
    follows calls to their end (polling or webhooks); without it a call's
    slot is held for ``max_call_time``. ``host`` names the service in
    messages. ``stop`` is called once when the breaker trips.
    ``webhook_port``/``webhook_secret``: serve webhooks beside the campaign.
    """

    def __init__(
        self,
        *,
        host: str,
        stop: Callable[[], None],
        max_live: int | None = None,
        max_call_time: float = DEFAULT_MAX_CALL_TIME,
        follow: bool = True,
        webhook_port: int | None = None,
        webhook_secret: str | None = None,
        breaker: Breaker | None = None,
    ) -> None:
        if max_live is not None and max_live < 1:
            raise ValueError("max_live must be at least 1 (or None)")
        if not max_call_time > 0:
            raise ValueError("max_call_time must be > 0 seconds")
        if webhook_port is not None and not webhook_secret:
            raise ValueError("webhooks need a secret (VOICEHUB_WEBHOOK_SECRET)")
        self.max_call_time = float(max_call_time)
        self._follow = follow or webhook_port is not None
        # Without a cap and without seeing calls end, counting them is pointless.
        self.slots: SlotPool | None = (
            SlotPool(max_live, hold_timeout=self.max_call_time)
            if max_live is not None or self._follow
            else None
        )
        self.breaker = breaker or Breaker(host)
        self.reconciler: Reconciler | None = None if webhook_port is None else Reconciler()
        self.webhook_port = webhook_port
        self._secret = webhook_secret
        self._stop = stop
        self._sent_at: dict[int, float] = {}
        self._ambiguous_at: dict[int, float] = {}
        self._known: Callable[[str], bool] = lambda _call_id: False
        self._on_reconciled: Callable[[Reconciled], None] | None = None
        self.concurrency_limited_count = 0

    def __repr__(self) -> str:
        return f"<LiveControl slots={self.slots!r} breaker={self.breaker!r}>"

    @property
    def cause(self) -> StopCause | None:
        """Why the campaign stopped dialing early (None: it did not)."""
        return self.breaker.cause

    def waiting(self) -> str | None:
        """Why nothing can be dialed now, for the progress display (None: it can)."""
        return self.breaker.trouble

    def live_calls(self) -> tuple[int | None, int | None]:
        """(calls of ours that may be live, the cap in force), for the display."""
        slots = self.slots
        if slots is None:
            return (None, None)
        return (slots.live, slots.limit)

    # -- dispatcher hooks ------------------------------------------------------------

    async def acquire(self, index: int) -> None:
        """Before input ``index``'s first attempt: take a live slot (may wait)."""
        if self.slots is not None:
            await self.slots.acquire(index)
        self._sent_at[index] = time.time()

    def attempted(self, index: int, error: BaseException | None) -> None:
        """After each attempt (``error`` None: it placed a call)."""
        cause = self.breaker.attempt(error)
        if cause is not None:
            logger.error("campaign: stopping: %s", cause.message)
            self._stop()

    async def concurrency_limited(self, index: int, delay: float) -> None:
        """The service refused input ``index`` at its concurrent-call limit:
        give the slot back, wait until one of our calls ends (or ``delay``
        seconds), take a slot again. Nobody else slows down."""
        self.concurrency_limited_count += 1
        slots = self.slots
        if slots is None:
            await _sleep(delay)
            return
        await slots.refused(index, delay)

    def settled(self, result: DispatchResult) -> None:
        """Input ``result.index`` has its result: its slot follows the call, is
        held (ambiguous) or is given back (nothing placed)."""
        index = result.index
        sent_at = self._sent_at.pop(index, None)
        slots = self.slots
        outcome = result.outcome
        if outcome == "ambiguous":
            if sent_at is not None:
                self._ambiguous_at[index] = sent_at
            if slots is not None:
                slots.hold(index)
            return
        if slots is None:
            return
        call = result.call
        if call is None:
            slots.release(index)
        elif call.is_terminal:
            slots.release(index)
        else:
            slots.bind(index, call.id, timeout=None if self._follow else self.max_call_time)

    # -- runner hooks ------------------------------------------------------------------

    def ambiguous(self, row: Hashable, result: DispatchResult) -> None:
        """The trigger of input ``result.index`` is ambiguous: with webhooks,
        wait for an event that tells which call it placed. ``row`` is what
        ``on_reconciled`` is given back then (the runner's record of the row)."""
        sent_at = self._ambiguous_at.pop(result.index, None)
        reconciler = self.reconciler
        request = result.request
        if reconciler is None or sent_at is None or not isinstance(request, CallRequest):
            return
        if not isinstance(request.to, str) or not request.agent_id:
            return
        found = reconciler.ambiguous(
            (row, result.index), request.to, request.agent_id, sent_at, self._is_known
        )
        if found is not None:
            self._reconcile(found)

    def call_ended(self, call_id: str) -> None:
        """``call_id`` reached its final status (poller or webhook)."""
        if self.slots is not None:
            self.slots.call_ended(call_id)
        if self.reconciler is not None:
            self.reconciler.ended(call_id)

    def resumed(self, call_id: str) -> None:
        """A call placed by an earlier run is followed again: it is live."""
        if self.slots is not None:
            self.slots.track(call_id, timeout=None if self._follow else self.max_call_time)

    @contextlib.asynccontextmanager
    async def serving(
        self,
        poller: StatusSink | None,
        *,
        known: Callable[[str], bool],
        on_reconciled: Callable[[Reconciled], None],
    ) -> AsyncIterator[int | None]:
        """Run the webhook server (when asked for) while the block runs; yields
        its port. ``known(call_id)`` tells the calls the campaign follows;
        ``on_reconciled`` records a row reconciled to a call."""
        self._known = known
        self._on_reconciled = on_reconciled
        if self.webhook_port is None:
            yield None
            return
        from .webhooks import serve_campaign_webhooks

        assert self._secret is not None
        async with serve_campaign_webhooks(
            self.webhook_port, self._secret, poller, self._on_event
        ) as port:
            yield port

    # -- internals ------------------------------------------------------------------------

    def _is_known(self, call_id: str) -> bool:
        return self._known(call_id) or (self.slots is not None and self.slots.has_call(call_id))

    def _on_event(self, event: Any) -> None:
        if not isinstance(event, CallStatusChanged):
            return
        if self.reconciler is not None:
            found = self.reconciler.event(event, self._is_known)
            if found is not None:
                self._reconcile(found)
                return
        if event.status.is_terminal:
            self.call_ended(event.call_id)

    def _reconcile(self, found: Reconciled) -> None:
        key = found.row
        assert isinstance(key, tuple)
        row, index = key
        assert isinstance(index, int)
        slots = self.slots
        if slots is not None and not slots.bind(
            index, found.call_id, timeout=None if self._follow else self.max_call_time
        ):
            slots.track(found.call_id)
        logger.info("campaign: an ambiguous trigger reconciled to call %s", found.call_id)
        if self._on_reconciled is not None:
            self._on_reconciled(attrs.evolve(found, row=row))


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(max(0.0, seconds))
