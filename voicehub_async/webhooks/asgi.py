"""Serving webhooks as a plain ASGI application.

A bare ASGI callable needs no framework: it runs under uvicorn or hypercorn
alone, and mounts unchanged in FastAPI or Starlette (``app.mount("/voicehub",
WebhookASGIApp(receiver))``), without the SDK importing either. It answers
every POST, whatever its path (the mount point does the routing), 405 to
other methods, and 413 to bodies over ``max_body`` bytes, checked before the
body is buffered. It also answers the ``lifespan`` protocol so it can be the
server's only application.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

from .receiver import WebhookReceiver, WebhookResult

__all__ = ["ASGIReceive", "ASGIScope", "ASGISend", "WebhookASGIApp"]

ASGIScope = MutableMapping[str, Any]
ASGIReceive = Callable[[], Awaitable[MutableMapping[str, Any]]]
ASGISend = Callable[[MutableMapping[str, Any]], Awaitable[None]]

logger = logging.getLogger("voicehub_async.webhooks")

_DEFAULT_MAX_BODY: Final = 1024 * 1024
_JSON: Final = (b"content-type", b"application/json")


class WebhookASGIApp:
    """An ASGI 3 application feeding POSTed deliveries to ``receiver``."""

    def __init__(self, receiver: WebhookReceiver, *, max_body: int = _DEFAULT_MAX_BODY) -> None:
        if max_body < 1:
            raise ValueError("max_body must be at least 1 byte")
        self.receiver = receiver
        self.max_body = max_body

    def __repr__(self) -> str:
        return f"<WebhookASGIApp receiver={self.receiver!r}>"

    async def __call__(self, scope: ASGIScope, receive: ASGIReceive, send: ASGISend) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await _lifespan(receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1003})

    async def _http(self, scope: ASGIScope, receive: ASGIReceive, send: ASGISend) -> None:
        if scope.get("method") != "POST":
            await _answer(send, 405, b'{"error": "only POST is accepted"}', [(b"allow", b"POST")])
            return
        # Header names are lower case in ASGI; values are bytes (latin-1 on the wire).
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in scope.get("headers", ())
        }
        declared = _declared_length(headers.get("content-length", ""))
        if declared is not None and declared > self.max_body:
            await _answer(send, 413, b'{"error": "body too large"}')
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await _answer(send, 413, b'{"error": "body too large"}')
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        try:
            result: WebhookResult = await self.receiver.receive(b"".join(chunks), headers)
        except Exception:
            # The receiver answers every body itself; this is a bug, and an
            # exception out of an ASGI app would be the server's to report.
            logger.exception("webhook: the receiver failed; answering 500")
            await _answer(send, 500, b'{"error": "the receiver failed"}')
            return
        await _answer(send, result.status, result.body())


def _declared_length(value: str) -> int | None:
    """A ``content-length`` value as a number, or None if it is not one.

    ASCII digits only: ``str.isdigit`` also accepts ``"²"`` (a latin-1 byte),
    on which ``int`` raises; and a length of more than 18 digits is larger
    than any limit anyway (``int`` refuses 4,300+ digits outright).
    """
    text = value.strip()
    if not text or not text.isascii() or not text.isdigit():
        return None
    return int(text) if len(text) <= 18 else 10**18


async def _answer(
    send: ASGISend, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [_JSON, (b"content-length", str(len(body)).encode()), *(extra or ())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: ASGIReceive, send: ASGISend) -> None:
    # Nothing to start or stop: the receiver creates its state lazily.
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
