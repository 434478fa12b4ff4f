"""Serving a webhook receiver while a load test runs.

VoiceHub pushes status changes to a URL of the tester's; with a receiver
listening, the run's poller learns of changes as they happen and only polls
calls whose events are late, which makes "time to started" precise and cuts
the reads. The receiver is made and served *before* the run (and, with
``--simulate``, before the simulator, which needs the URL to push to); the
run hands it its poller (:class:`~.runner.LoadTest`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..webhooks import WebhookReceiver

__all__ = ["serve_webhooks"]


@contextlib.asynccontextmanager
async def serve_webhooks(
    receiver: WebhookReceiver, host: str = "0.0.0.0", port: int = 0
) -> AsyncIterator[int]:
    """Serve ``receiver`` on ``host:port`` (POST to any path) and yield the
    bound port (``port=0`` picks a free one); stopped on exit.

    Any path is accepted because the path is whatever the agent was configured
    with; the shared secret, not the path, is what authenticates a delivery.
    """
    from aiohttp import web

    from ..webhooks import aiohttp_handler

    app = web.Application()
    handler = aiohttp_handler(receiver)
    app.router.add_post("/", handler)
    app.router.add_post("/{path:.*}", handler)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()
