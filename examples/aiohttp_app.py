"""voicehub-async in an aiohttp.web application.

* One :class:`~voicehub_async.VoiceHubClient` per process, made in a
  ``cleanup_ctx`` (aiohttp's lifespan) and shared by every request: one
  connection pool, reused. It is closed at cleanup.
* One :class:`~voicehub_async.poller.StatusPoller` follows every call placed;
  VoiceHub's webhooks, received at ``/webhooks/voicehub`` by the SDK's
  ready-made aiohttp handler, feed it, so it only polls calls whose events
  are late.
* ``POST /calls`` places a call, ``GET /calls/{call_id}`` tells its status.
* Every error is answered in one shape, ``{"error": code, "message": ...}``
  (plus ``field`` when one input is at fault), 404s and 405s included, the
  same as the FastAPI example's.
* It serves on 127.0.0.1 unless ``HOST`` says otherwise (as uvicorn does):
  an example should not open a port to the network by default.
* A trigger runs in a task owned by the app, shielded from the request: if
  the handler is cancelled (aiohttp does so at shutdown, and on a client
  disconnect when ``handler_cancellation=True``), the trigger still finishes
  and its outcome is recorded. Cleanup waits for triggers in flight before
  closing the client.

Run it (``pip install voicehub-async``)::

    export VOICEHUB_API_KEY=... VOICEHUB_WEBHOOK_SECRET=...
    python examples/aiohttp_app.py            # serves on 127.0.0.1:8000
    HOST=0.0.0.0 python examples/aiohttp_app.py   # ... or on every interface

Against the built-in simulator instead of VoiceHub::

    voicehub simulate --port 8080 &
    VOICEHUB_BASE_URL=http://127.0.0.1:8080 VOICEHUB_API_KEY=sim-key \\
    VOICEHUB_WEBHOOK_SECRET=dev python examples/aiohttp_app.py
    curl -X POST localhost:8000/calls -H 'content-type: application/json' \\
         -d '{"to": "+14155550123", "agent_id": "agent-1"}'
    curl localhost:8000/calls/<id>
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import attrs
from aiohttp import web

from voicehub_async import (
    AmbiguousTriggerError,
    BadRequestError,
    Call,
    CallRequest,
    InvalidRequestError,
    NotFoundError,
    VoiceHubClient,
    VoiceHubError,
)
from voicehub_async.poller import StatusChange, StatusPoller
from voicehub_async.retry import is_safe_trigger_retry
from voicehub_async.webhooks import WebhookReceiver, aiohttp_handler

logger = logging.getLogger("voicehub_example")


@attrs.frozen
class Settings:
    """Configuration, from the environment by default (:meth:`from_env`)."""

    api_key: str = attrs.field(repr=False)
    webhook_secret: str = attrs.field(repr=False)
    base_url: str | None = None
    default_agent_id: str | None = None
    #: Where numbers without a country code are taken to be (e.g. "US").
    default_region: str | None = None
    #: The client's connection pool: at most this many requests to VoiceHub
    #: at once, across all requests of this process; more wait for a slot.
    max_connections: int = 100
    poll_interval: float = 2.0
    max_poll_interval: float = 30.0
    #: How long cleanup waits for triggers still in flight.
    drain_timeout: float = 30.0

    @classmethod
    def from_env(cls) -> Settings:
        try:
            return cls(
                api_key=os.environ["VOICEHUB_API_KEY"],
                webhook_secret=os.environ["VOICEHUB_WEBHOOK_SECRET"],
                base_url=os.environ.get("VOICEHUB_BASE_URL"),
                default_agent_id=os.environ.get("VOICEHUB_AGENT_ID"),
                default_region=os.environ.get("VOICEHUB_DEFAULT_REGION"),
            )
        except KeyError as exc:
            raise RuntimeError(f"set the {exc.args[0]} environment variable") from None


class CallBoard:
    """The latest status of the calls this process placed (a stand-in for
    your database), bounded so that a long-running process stays small."""

    def __init__(self, max_calls: int = 10_000) -> None:
        self.max_calls = max_calls
        self._calls: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def placed(self, call: Call) -> None:
        self._put(call.id, {"id": call.id, "status": call.status.name, "final": False})

    def changed(self, change: StatusChange) -> None:
        self._put(
            change.call_id,
            {
                "id": change.call_id,
                "status": change.new.name,
                "final": change.is_final,
                "source": "webhook" if change.source == "ingest" else change.source,
                "at": change.at.isoformat(),
            },
        )

    def get(self, call_id: str) -> dict[str, Any] | None:
        return self._calls.get(call_id)

    def _put(self, call_id: str, entry: dict[str, Any]) -> None:
        self._calls[call_id] = entry
        self._calls.move_to_end(call_id)
        while len(self._calls) > self.max_calls:
            self._calls.popitem(last=False)


class VoiceHub:
    """Everything the handlers share: made at startup, one per process."""

    def __init__(self, client: VoiceHubClient, poller: StatusPoller, board: CallBoard) -> None:
        self.client = client
        self.poller = poller
        self.board = board
        self._triggers: set[asyncio.Task[Call]] = set()

    async def place_call(self, request: CallRequest) -> Call:
        """Trigger a call and track it; survives the caller's cancellation.

        The SDK lets a cancellation through as ``CancelledError`` and never
        retries a trigger, but once the request was written nobody knows
        whether VoiceHub placed the call. Running the trigger in a task of its
        own, shielded, means a cancelled handler does not cut it off: the call
        is still recorded and tracked when the answer comes.
        """
        task = asyncio.get_running_loop().create_task(self._trigger(request))
        self._triggers.add(task)
        task.add_done_callback(self._trigger_done)
        return await asyncio.shield(task)

    async def _trigger(self, request: CallRequest) -> Call:
        call = await self.client.trigger(request)
        self.board.placed(call)
        self.poller.track(call)
        return call

    def _trigger_done(self, task: asyncio.Task[Call]) -> None:
        self._triggers.discard(task)
        if task.cancelled():
            logger.error("a trigger was cut off at shutdown: its call MAY have been placed")
            return
        error = task.exception()
        if isinstance(error, AmbiguousTriggerError):
            # Reconcile by hand (or from webhooks); never re-send blindly.
            logger.error("trigger outcome unknown, the call MAY have been placed: %s", error)

    async def follow_changes(self) -> None:
        async for change in self.poller.changes(until_idle=False):
            self.board.changed(change)

    async def drain(self, timeout: float) -> None:
        """Let triggers in flight finish before the client closes."""
        if self._triggers:
            await asyncio.wait(set(self._triggers), timeout=timeout)


#: Where handlers find the shared state (typed application keys).
VOICEHUB = web.AppKey("voicehub", VoiceHub)
SETTINGS = web.AppKey("voicehub_settings", Settings)
RECEIVER = web.AppKey("voicehub_webhooks", WebhookReceiver)


async def voicehub_context(app: web.Application) -> AsyncIterator[None]:
    """Startup and cleanup of the shared client, poller and change follower."""
    settings = app[SETTINGS]
    receiver = app[RECEIVER]
    async with (
        VoiceHubClient(
            settings.api_key,
            base_url=settings.base_url,
            default_region=settings.default_region,
            max_connections=settings.max_connections,
        ) as client,
        StatusPoller(
            client,
            min_interval=settings.poll_interval,
            max_interval=settings.max_poll_interval,
        ) as poller,
    ):
        hub = VoiceHub(client, poller, CallBoard())
        app[VOICEHUB] = hub
        receiver.poller = poller
        follower = asyncio.get_running_loop().create_task(hub.follow_changes())
        try:
            yield
        finally:
            await hub.drain(settings.drain_timeout)
            receiver.poller = None
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower


def _error(status: int, kind: str, message: str, **extra: Any) -> web.Response:
    """The one shape of every error answer: ``{"error": code, "message": ...}``."""
    return web.json_response({"error": kind, "message": message, **extra}, status=status)


def _invalid(exc: InvalidRequestError) -> web.Response:
    """422 for a request the SDK refused, worded for an HTTP client (the SDK's
    own advice names the client's and the command line's options)."""
    if exc.field in ("to", "from_number"):
        reason = exc.reason.split(";")[0]
        message = (
            f"invalid {exc.field} {exc.value!r}: {reason}; send the number in international "
            "format, with its country code, e.g. +14155550123"
        )
    else:
        message = str(exc)
    return _error(422, "invalid_input", message, field=exc.field)


_HTTP_ERRORS = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}


@web.middleware
async def json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """aiohttp's own errors (no such route, wrong method) in the same JSON shape."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        kind = _HTTP_ERRORS.get(exc.status, f"http_{exc.status}")
        return _error(exc.status, kind, exc.reason.lower() if exc.reason else kind)


async def place_call(request: web.Request) -> web.Response:
    hub = request.app[VOICEHUB]
    try:
        body = await request.json()
    except ValueError:
        return _error(400, "invalid_input", "the body must be a JSON object")
    if not isinstance(body, dict):
        return _error(400, "invalid_input", "the body must be a JSON object")
    agent_id = body.get("agent_id") or request.app[SETTINGS].default_agent_id
    if not agent_id:
        return _error(422, "invalid_input", "agent_id is required", field="agent_id")
    to: Any = body.get("to")  # checked by the SDK, which names the field if it is wrong
    try:
        call = await hub.place_call(
            CallRequest(to=to, agent_id=agent_id, context=body.get("context"))
        )
    except InvalidRequestError as exc:
        return _invalid(exc)
    except AmbiguousTriggerError as exc:
        return _error(
            502,
            "ambiguous",
            f"the call MAY have been placed ({exc.cause}); do not retry, check its status",
        )
    except BadRequestError as exc:
        return _error(422, "refused", f"VoiceHub refused the call: {exc.message}")
    except VoiceHubError as exc:
        if is_safe_trigger_retry(exc):
            # The client already retried these (429, 503, could not connect)
            # and they prove nothing was placed: safe to try again later.
            return _error(503, "not_placed", f"the call was not placed ({exc}); retry later")
        return _error(502, "not_placed", f"VoiceHub refused the call: {exc}")
    return web.json_response({"id": call.id, "status": call.status.name}, status=201)


async def call_status(request: web.Request) -> web.Response:
    hub = request.app[VOICEHUB]
    call_id = request.match_info["call_id"]
    known = hub.board.get(call_id)
    if known is not None:
        return web.json_response(known)
    try:  # not placed by this process (or forgotten): ask VoiceHub
        call = await hub.client.get_call(call_id)
    except NotFoundError:
        return _error(404, "not_found", "no such call")
    except VoiceHubError as exc:
        return _error(502, "unavailable", str(exc))
    return web.json_response({"id": call.id, "status": call.status.name, "final": call.is_terminal})


def create_app(settings: Settings | None = None) -> web.Application:
    """The application; ``python examples/aiohttp_app.py`` serves it."""
    settings = settings or Settings.from_env()
    receiver = WebhookReceiver(settings.webhook_secret)
    app = web.Application(middlewares=[json_errors])
    app[SETTINGS] = settings
    app[RECEIVER] = receiver
    app.cleanup_ctx.append(voicehub_context)
    app.router.add_post("/calls", place_call)
    app.router.add_get("/calls/{call_id}", call_status)
    # The SDK's handler: checks the secret, drops repeats, feeds the poller.
    app.router.add_post("/webhooks/voicehub", aiohttp_handler(receiver))
    return app


def main() -> None:
    """Serve on ``$HOST`` (default 127.0.0.1, as uvicorn) and ``$PORT`` (8000)."""
    logging.basicConfig(level=logging.INFO)
    web.run_app(
        create_app(),
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "8000")),
    )


if __name__ == "__main__":
    main()
