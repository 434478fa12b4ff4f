"""WebhookReceiver: what happens to a delivery once it arrived, whatever the framework.

The aiohttp handler and the ASGI app are thin adapters around
:meth:`WebhookReceiver.receive`, which authenticates and parses the body
(:func:`~voicehub_async.webhooks.events.parse_event`), drops repeats and
stale statuses, hands the event on, and says what to answer. Keeping that in
one framework-free place means every adapter answers the same statuses for
the same deliveries, and a caller with another framework can use it directly.

What is answered, and why:

* 401 / 400: refused (:class:`~voicehub_async.webhooks.events.WebhookError`);
  a wrong secret is somebody else or a misconfiguration, a bad body will not
  get better by retrying, but VoiceHub may retry anyway. Any body the parser
  cannot use is a 400, whatever it holds (deep nesting, huge numbers, bytes
  that are not UTF-8, or a failure nobody foresaw): never a 500, which would
  only make VoiceHub retry what can never succeed.
* 200 ``accepted``: handed on to the poller and/or ``on_event``.
* 200 ``duplicate``: an ``eventId`` already handed on; answered 200 so that
  VoiceHub stops retrying, but not handed on again.
* 200 ``stale``: a status older than one already handed on for that call
  (see :class:`~voicehub_async.webhooks.dedup.StatusOrderGuard`); 200 for the
  same reason, not handed on so that no status moves backwards.
* 500: handing on failed (``on_event`` or ``ingest`` raised). The event is
  forgotten, so VoiceHub's retry is processed rather than taken for a repeat:
  nothing is lost because a database was briefly down.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Literal, Protocol

import attrs

from .dedup import EventDeduplicator, StatusOrderGuard
from .events import AnyWebhookEvent, CallStatusChanged, WebhookError, parse_event

__all__ = [
    "EventCallback",
    "Outcome",
    "StatusSink",
    "WebhookReceiver",
    "WebhookResult",
    "WebhookStats",
]

logger = logging.getLogger("voicehub_async.webhooks")

Outcome = Literal["accepted", "duplicate", "stale", "refused", "failed"]

#: ``on_event(event)``: a plain function or a coroutine function.
EventCallback = Callable[[AnyWebhookEvent], Awaitable[object] | object]


class StatusSink(Protocol):
    """What a receiver feeds status events to: a
    :class:`~voicehub_async.poller.StatusPoller`, or anything with ``ingest``.

    ``ingest`` may return an awaitable, which is awaited.
    """

    def ingest(self, event: CallStatusChanged, /) -> object: ...


@attrs.frozen
class WebhookResult:
    """What :meth:`WebhookReceiver.receive` decided about one delivery.

    ``status`` and ``reason`` are the HTTP answer; ``event`` is the parsed
    event (None when refused).
    """

    status: int
    outcome: Outcome
    reason: str
    event: AnyWebhookEvent | None = None

    def body(self) -> bytes:
        """A small JSON body for the answer (VoiceHub reads only the status)."""
        if self.status < 400:
            return json.dumps({"status": self.outcome}).encode()
        return json.dumps({"error": self.reason}).encode()


@attrs.define
class WebhookStats:
    """Counters of what a receiver did, by outcome."""

    accepted: int = 0
    duplicate: int = 0
    stale: int = 0
    refused: int = 0
    failed: int = 0


class WebhookReceiver:
    """Turns VoiceHub webhook deliveries into events for a poller and a callback.

    ``secret`` is the agent's webhook secret (or several, while rotating).
    Status events go to ``poller.ingest(event)`` (a
    :class:`~voicehub_async.poller.StatusPoller` then polls only calls whose
    events are late); every event that is neither a repeat nor stale goes to
    ``on_event(event)`` (sync or async; a sync one runs in the event loop, so
    it must be quick). Both are optional: with neither, the receiver just
    authenticates, parses and de-duplicates, and ``receive`` returns the event.

    ``max_events``/``dedup_window`` bound the memory of event ids;
    ``max_calls`` bounds the memory of each call's newest status. One receiver
    serves any number of concurrent deliveries; create it inside or outside a
    running loop (it creates nothing that needs one until a delivery comes).
    """

    def __init__(
        self,
        secret: str | Iterable[str],
        *,
        poller: StatusSink | None = None,
        on_event: EventCallback | None = None,
        max_events: int = 100_000,
        dedup_window: float | None = 24 * 3600.0,
        max_calls: int = 100_000,
        clock: Callable[[], float] | None = None,
    ) -> None:
        secrets = (secret,) if isinstance(secret, str) else tuple(secret)
        if not secrets or any(not isinstance(s, str) or not s for s in secrets):
            raise ValueError("the webhook secret must be a non-empty string (or several)")
        self._secrets = secrets
        self.poller = poller
        self.on_event = on_event
        self.dedup = (
            EventDeduplicator(max_events, dedup_window)
            if clock is None
            else EventDeduplicator(max_events, dedup_window, clock=clock)
        )
        self.order = StatusOrderGuard(max_calls)
        self.stats = WebhookStats()
        # Event ids being handed on right now: a repeat that arrives meanwhile
        # waits for the first delivery's fate instead of answering 200 for an
        # event that might yet fail.
        self._in_flight: dict[str, asyncio.Future[bool]] = {}

    def __repr__(self) -> str:
        # Never the secret.
        return f"<WebhookReceiver secret=<redacted> stats={self.stats!r}>"

    async def receive(self, body: bytes, headers: Mapping[str, str]) -> WebhookResult:
        """Judge one delivery, hand its event on, and say what to answer."""
        try:
            event = parse_event(body, headers, self._secrets)
        except WebhookError as exc:
            self.stats.refused += 1
            if exc.status != 401:  # 401s were logged by check_secret
                logger.info("webhook refused (%d): %s", exc.status, exc.reason)
            return WebhookResult(exc.status, "refused", exc.reason)
        except Exception as exc:
            # parse_event refuses what it knows of with WebhookError; anything
            # else is still a body that cannot be used, never a 500.
            self.stats.refused += 1
            logger.warning(
                "webhook refused (400): the body could not be parsed (%s)", type(exc).__name__
            )
            return WebhookResult(400, "refused", "body cannot be parsed as an event")

        event_id = event.event_id
        if event_id is not None:
            pending = self._in_flight.get(event_id)
            if pending is not None:
                delivered = await asyncio.shield(pending)
                return self._repeat(event) if delivered else self._failed(event)
            if not self.dedup.add(event_id):
                return self._repeat(event)

        undo: Callable[[], None] | None = None
        if isinstance(event, CallStatusChanged):
            if self.order.is_stale(event.call_id, event.status, event.timestamp):
                self.stats.stale += 1
                logger.debug(
                    "webhook %s: stale status %s for call %s (already %s)",
                    event_id, event.status, event.call_id,
                    self.order.last_status(event.call_id),
                )
                return WebhookResult(200, "stale", "older than a status already seen", event)
            undo = self.order.record(event.call_id, event.status, event.timestamp)

        future: asyncio.Future[bool] | None = None
        if event_id is not None:
            future = asyncio.get_running_loop().create_future()
            self._in_flight[event_id] = future
        try:
            await self._hand_on(event)
        except BaseException as exc:
            # Forget the event, so that VoiceHub's retry is processed afresh;
            # repeats waiting on this delivery answer 500 too.
            if event_id is not None:
                self.dedup.discard(event_id)
            if undo is not None:
                undo()
            if future is not None:
                future.set_result(False)
            if not isinstance(exc, Exception):
                raise  # cancelled: the server is going away, nothing to answer
            logger.exception(
                "webhook %s (%s for call %s): handing the event on failed; answering 500 "
                "so that VoiceHub retries it",
                event_id, type(event).__name__, event.call_id,
            )
            return self._failed(event)
        finally:
            if event_id is not None:
                self._in_flight.pop(event_id, None)
        if future is not None:
            future.set_result(True)
        self.stats.accepted += 1
        return WebhookResult(200, "accepted", "accepted", event)

    async def _hand_on(self, event: AnyWebhookEvent) -> None:
        if self.poller is not None and isinstance(event, CallStatusChanged):
            result: Any = self.poller.ingest(event)
            if inspect.isawaitable(result):
                await result
        if self.on_event is not None:
            result = self.on_event(event)
            if inspect.isawaitable(result):
                await result

    def _repeat(self, event: AnyWebhookEvent) -> WebhookResult:
        self.stats.duplicate += 1
        logger.debug("webhook %s: repeated delivery, not handed on", event.event_id)
        return WebhookResult(200, "duplicate", "already received", event)

    def _failed(self, event: AnyWebhookEvent) -> WebhookResult:
        self.stats.failed += 1
        return WebhookResult(500, "failed", "the receiver could not process the event", event)
