"""Serving webhooks from an aiohttp.web application.

Two shapes, because an aiohttp user either has an application already (add
the handler to a route of theirs) or wants a self-contained one (mount the
sub-application, or run it alone)::

    receiver = WebhookReceiver(secret, poller=poller)
    app.router.add_post("/voicehub/events", aiohttp_handler(receiver))
    # or
    app.add_subapp("/voicehub", aiohttp_app(receiver, path="/events"))

``aiohttp.web`` is imported only when one of these is called, so importing
the SDK does not pay for the server half of aiohttp.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

from .receiver import WebhookReceiver

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["DEFAULT_MAX_BODY", "aiohttp_app", "aiohttp_handler"]

logger = logging.getLogger("voicehub_async.webhooks")

#: Largest body accepted, in bytes. Events are small JSON objects; the limit
#: keeps a stranger from making the receiver buffer megabytes before the
#: secret is even checked.
DEFAULT_MAX_BODY: Final = 1024 * 1024


def aiohttp_handler(
    receiver: WebhookReceiver,
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """An aiohttp request handler feeding POSTed deliveries to ``receiver``.

    Body size is bounded by the application's ``client_max_size`` (aiohttp's
    default is 1 MiB), which answers 413 for anything larger.
    """
    from aiohttp import web

    async def handle_webhook(request: web.Request) -> web.Response:
        body = await request.read()  # over client_max_size: aiohttp answers 413
        try:
            result = await receiver.receive(body, request.headers)
        except Exception:
            # The receiver answers every body itself; this is a bug.
            logger.exception("webhook: the receiver failed; answering 500")
            failed = b'{"error": "the receiver failed"}'
            return web.Response(status=500, body=failed, content_type="application/json")
        return web.Response(
            status=result.status, body=result.body(), content_type="application/json"
        )

    return handle_webhook


def aiohttp_app(
    receiver: WebhookReceiver,
    *,
    path: str = "/",
    max_body: int = DEFAULT_MAX_BODY,
) -> web.Application:
    """An aiohttp application answering POSTs at ``path`` (other methods: 405).

    Mount it with ``app.add_subapp(prefix, ...)`` or serve it alone with
    :func:`aiohttp.web.run_app`.
    """
    from aiohttp import web

    app = web.Application(client_max_size=max_body)
    app.router.add_post(path, aiohttp_handler(receiver))
    return app
