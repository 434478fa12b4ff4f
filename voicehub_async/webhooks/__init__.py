"""Receiving VoiceHub's webhooks: typed events, de-duplication, ready-made handlers.

VoiceHub POSTs call events to a URL of yours with a shared secret. This
package checks the secret (in constant time), decodes the body into typed
events, drops repeated deliveries and statuses that arrive after newer ones,
and hands the rest to a :class:`~voicehub_async.poller.StatusPoller` (which
then polls only calls whose events are late) and/or a callback::

    receiver = WebhookReceiver(secret, poller=poller, on_event=save)
    aiohttp_app(receiver)            # an aiohttp.web (sub-)application
    WebhookASGIApp(receiver)         # uvicorn, FastAPI/Starlette app.mount(...)
    event = parse_event(body, headers, secret)   # any other framework

Modules: :mod:`.events` (event classes, :func:`parse_event`), :mod:`.dedup`
(bounded memories), :mod:`.receiver` (the framework-free core),
:mod:`.aiohttp_handler` and :mod:`.asgi` (adapters). Importing it imports
neither aiohttp.web nor any ASGI framework.
"""

from __future__ import annotations

from .aiohttp_handler import aiohttp_app, aiohttp_handler
from .asgi import WebhookASGIApp
from .dedup import EventDeduplicator, StatusOrderGuard
from .events import (
    SECRET_HEADER,
    AnalysisResultReady,
    AnyWebhookEvent,
    CallStatusChanged,
    RecordingsAvailable,
    UnknownEvent,
    WebhookError,
    WebhookEvent,
    parse_event,
    parse_timestamp,
)
from .receiver import (
    EventCallback,
    StatusSink,
    WebhookReceiver,
    WebhookResult,
    WebhookStats,
)

__all__ = [
    "SECRET_HEADER",
    "AnalysisResultReady",
    "AnyWebhookEvent",
    "CallStatusChanged",
    "EventCallback",
    "EventDeduplicator",
    "RecordingsAvailable",
    "StatusOrderGuard",
    "StatusSink",
    "UnknownEvent",
    "WebhookASGIApp",
    "WebhookError",
    "WebhookEvent",
    "WebhookReceiver",
    "WebhookResult",
    "WebhookStats",
    "aiohttp_app",
    "aiohttp_handler",
    "parse_event",
    "parse_timestamp",
]
