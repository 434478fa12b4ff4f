"""``--webhook-port``: the SDK's webhook receiver, served beside a campaign.

With webhooks VoiceHub says when a call moved instead of the campaign
asking: the :class:`~voicehub_async.webhooks.WebhookReceiver` feeds every
``CallStatusChanged`` to the campaign's poller (so rows finish, and live-call
slots free, as soon as the call ends) and hands every event to the campaign
(which reconciles ambiguous rows, see :mod:`.reconcile`). The poller keeps
polling, only less often, so a lost delivery costs time, not a row.

The server answers POSTs on any path (the agent's webhook URL can be
``http://<host>:<port>/`` or any path below it) and refuses deliveries
without the shared secret (401). It listens on all interfaces by default:
VoiceHub must reach it (through a tunnel or a reverse proxy, typically).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Final

from voicehub_async.webhooks.receiver import EventCallback, StatusSink, WebhookReceiver

__all__ = ["SECRET_ENV", "serve_campaign_webhooks"]

logger = logging.getLogger("voicehub_async.campaign")

#: Where the command line reads the webhook secret from (never a flag: flags
#: show in ``ps`` and in shell histories).
SECRET_ENV: Final = "VOICEHUB_WEBHOOK_SECRET"


@contextlib.asynccontextmanager
async def serve_campaign_webhooks(
    port: int,
    secret: str,
    poller: StatusSink | None,
    on_event: EventCallback,
    *,
    host: str = "0.0.0.0",
) -> AsyncIterator[int]:
    """Receive webhooks on ``host:port`` while the block runs; yields the port
    (``port=0`` picks a free one). Deliveries go to ``poller.ingest`` and
    ``on_event``."""
    from voicehub_async.loadtest.webhook_server import serve_webhooks

    receiver = WebhookReceiver(secret, poller=poller, on_event=on_event)
    async with serve_webhooks(receiver, host, port) as bound:
        logger.info("campaign: receiving webhooks on %s:%d", host, bound)
        yield bound
