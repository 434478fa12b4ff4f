"""VoiceHubClient: one aiohttp session, authentication, requests and error mapping.

The client owns (or borrows) one :class:`aiohttp.ClientSession` with one
connection pool, created on first use inside the running loop, and closed by
:meth:`VoiceHubClient.aclose` or by leaving ``async with``. Every failure is
mapped to the hierarchy in :mod:`voicehub_async.errors`, and retried by the
client's :class:`~voicehub_async.retry.RetryPolicy`, which never re-sends a
trigger that may have reached the service.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import secrets
import warnings
from collections.abc import AsyncIterable, Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Final, TypeVar
from urllib.parse import quote

import aiohttp
import attrs
import cattrs
import orjson
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from .config import (
    API_KEY_ENV,
    Timeout,
    TimeoutTypes,
    api_key_from_environment,
    base_url_from_environment,
)
from .errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    InvalidRequestError,
    UnexpectedResponseError,
    VoiceHubError,
    error_message,
    status_error_class,
)
from .keyscope import KeyScope, looks_like_api_path
from .models import (
    Call,
    CallRequest,
    NumberCache,
    PreparedRequest,
    Recordings,
    assume_prepared,
    call_from_json,
    check_region,
    dumps_json,
    make_converter,
    prepare_request,
    trigger_payload,
)
from .retry import RetryPolicy, parse_retry_after
from .telemetry import NO_OPERATION, NO_REQUEST, Operation, Request, Telemetry, telemetry_for

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

    from .dispatch import Dispatcher

__all__ = ["VoiceHubClient"]

T = TypeVar("T")

logger = logging.getLogger("voicehub_async")

API_KEY_HEADER: Final = "x-dq-api-key"
TRIGGER_PATH: Final = "/api/v1/calls/api-call"
#: The paths with their placeholder, as telemetry names them (``url.template``).
STATUS_TEMPLATE: Final = "/api/v1/calls/status/{call_id}/"
RECORDINGS_TEMPLATE: Final = "/api/v1/calls/e2e/{call_id}/recordings"
_DOWNLOAD_CHUNK: Final = 64 * 1024
#: Distinct per-request timeouts converted once and kept (a handful in practice).
_TIMEOUT_CACHE: Final = 16


def _status_path(call_id: str) -> str:
    return STATUS_TEMPLATE.format(call_id=quote(call_id, safe=""))


def _recordings_path(call_id: str) -> str:
    return RECORDINGS_TEMPLATE.format(call_id=quote(call_id, safe=""))


def _check_call_id(call_id: Any) -> str:
    if not isinstance(call_id, str) or not call_id.strip():
        raise InvalidRequestError("call_id", call_id, "a non-empty string is required")
    return call_id


def _loads(body: bytes) -> Any:
    """A JSON body decoded: orjson, with ``json`` for what only it reads (NaN,
    integers beyond 64 bits), so that the answer accepted is the same."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return json.loads(body)


def _transport_error(
    exc: aiohttp.ClientError | asyncio.TimeoutError, method: str, path: str
) -> APIConnectionError:
    """The SDK's error for a failure below HTTP, saying whether it was sent.

    ``sent=False`` only where the request provably never left: no connection
    could be had (refused, DNS, TLS, or no free pooled connection in time).
    Anything later (a read timeout, a reset, a broken body) may have reached
    the service, which for a trigger means ambiguous.
    """
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return APITimeoutError(f"{method} {path}: timed out getting a connection", sent=False)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return APIConnectionError(
            f"{method} {path}: could not connect to {exc.host}:{exc.port} ({exc.strerror})",
            sent=False,
        )
    if isinstance(exc, asyncio.TimeoutError):  # aiohttp.ServerTimeoutError included
        return APITimeoutError(f"{method} {path}: no answer in time (read timeout)", sent=True)
    return APIConnectionError(
        f"{method} {path}: connection broken after sending ({type(exc).__name__})", sent=True
    )


def _json_text(value: Any) -> str:
    return dumps_json(value).decode()


def _new_session(
    connector: aiohttp.BaseConnector, timeout: aiohttp.ClientTimeout
) -> aiohttp.ClientSession:
    """The client's own session: request bodies encoded by orjson (straight to
    bytes where aiohttp takes such an encoder, from 3.14)."""
    try:
        return aiohttp.ClientSession(
            connector=connector, timeout=timeout, json_serialize_bytes=dumps_json
        )
    except TypeError:  # an older aiohttp
        return aiohttp.ClientSession(
            connector=connector, timeout=timeout, json_serialize=_json_text
        )


def _headers(values: Mapping[str, str]) -> CIMultiDictProxy[str]:
    """Request headers built once, in the form aiohttp uses without copying twice."""
    return CIMultiDictProxy(CIMultiDict(values))


class VoiceHubClient:
    """An async client for VoiceHub's VoIP Calls API.

    ``api_key`` falls back to ``$VOICEHUB_API_KEY``; ``base_url`` to
    ``$VOICEHUB_BASE_URL`` and then ``https://voicehub.dataqueue.ai``.
    ``timeout`` is seconds (the read limit) or a :class:`~voicehub_async.Timeout`.
    ``max_retries`` is how many times a failed request may be retried (see
    :class:`~voicehub_async.RetryPolicy` for which failures qualify);
    ``max_connections`` bounds the connection pool. A ``session`` passed in is
    used as it is and never closed by the client. ``default_region`` (``"US"``,
    ``"GB"``, ...) lets numbers be written without a country code.
    ``telemetry=True``, or a ``tracer_provider``/``meter_provider``, turns on
    OpenTelemetry traces and metrics (the ``[otel]`` extra; see
    :mod:`voicehub_async.telemetry`); off, they cost nothing.

    Use one client per process, shared by every task::

        async with VoiceHubClient() as client:
            call = await client.trigger_call("+14155550123", "agent-1")
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        timeout: TimeoutTypes = 30.0,
        max_retries: int = 3,
        max_connections: int = 100,
        session: aiohttp.ClientSession | None = None,
        default_region: str | None = None,
        retry_ambiguous_triggers: bool = False,
        retry_policy: RetryPolicy | None = None,
        telemetry: bool | Telemetry = False,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        key = api_key_from_environment(api_key)
        if key is None:
            raise VoiceHubError(
                "no VoiceHub API key: pass VoiceHubClient(api_key=...) or set the "
                f"{API_KEY_ENV} environment variable"
            )
        self._api_key = key
        if not key.isprintable():
            # Refused here rather than by aiohttp at the first request; the key is not shown.
            raise VoiceHubError(
                "the VoiceHub API key contains control characters (a newline?); "
                "check how it was read"
            )
        self.base_url = base_url_from_environment(base_url)
        self.timeout = Timeout.of(timeout)
        self._client_timeout = self.timeout.to_aiohttp()
        self._timeouts: dict[TimeoutTypes, aiohttp.ClientTimeout] = {}
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.max_connections = max_connections
        self.retry_policy = retry_policy or RetryPolicy(
            max_retries=max_retries, retry_ambiguous_triggers=retry_ambiguous_triggers
        )
        self.default_region = check_region(default_region)
        self._numbers = NumberCache()
        self._session = session
        self._owns_session = session is None
        # Built once. Sent per request rather than as session defaults, so
        # that a request to another host (a recording in a storage bucket)
        # can go without the key.
        self._auth_headers = _headers({API_KEY_HEADER: key})
        self._closed = False
        #: Where operations are traced and measured (:mod:`voicehub_async.telemetry`):
        #: a no-op unless ``telemetry=True`` or a provider was given.
        self.telemetry = telemetry_for(
            telemetry, tracer_provider=tracer_provider, meter_provider=meter_provider
        )

    @functools.cached_property
    def converter(self) -> cattrs.Converter:
        """The client's cattrs converter (camelCase wire <-> models), made on first use."""
        return make_converter()

    @property
    def base_url(self) -> str:
        """The API's base URL (no trailing slash); the key goes to its origin only."""
        return self._scope.base_url

    @base_url.setter
    def base_url(self, url: str) -> None:
        # Checked like the constructor's (https, or http on loopback only).
        self._scope = KeyScope(url)
        self._trigger_url = URL(self._scope.base_url + TRIGGER_PATH)

    def __repr__(self) -> str:
        # Never the key, not even part of it.
        return f"<VoiceHubClient base_url={self.base_url!r} api_key=<redacted>>"

    # -- lifecycle -----------------------------------------------------------

    async def __aenter__(self) -> VoiceHubClient:
        self._get_session()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool (a session passed in is left open)."""
        self._closed = True
        if self._owns_session and self._session is not None:
            session, self._session = self._session, None
            await session.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def _get_session(self) -> aiohttp.ClientSession:
        session = self._session
        if session is None:
            if self._closed:
                raise RuntimeError("this VoiceHubClient is closed; make a new one")
            session = self._session = _new_session(
                aiohttp.TCPConnector(limit=self.max_connections, limit_per_host=0),
                self._client_timeout,
            )
        return session

    # -- one request -------------------------------------------------------------

    def _timeout(self, timeout: TimeoutTypes | None) -> aiohttp.ClientTimeout:
        """The aiohttp timeout for a per-request ``timeout``, converted once per value."""
        if timeout is None:
            return self._client_timeout
        converted = self._timeouts.get(timeout)
        if converted is None:
            converted = Timeout.of(timeout).to_aiohttp()
            if len(self._timeouts) < _TIMEOUT_CACHE:
                self._timeouts[timeout] = converted
        return converted

    async def _send(
        self,
        method: str,
        path: str,
        attempt: int,
        *,
        timeout: aiohttp.ClientTimeout,
        url: str | URL | None = None,
        json_body: Any = None,
        headers: CIMultiDictProxy[str] | None = None,
        into: IO[bytes] | None = None,
        record: Request = NO_REQUEST,
    ) -> Any:
        """Send one request: the one request path of every endpoint.

        ``url`` defaults to ``base_url + path`` (``path`` is what the logs
        and errors show). ``headers`` carry the key (the default) or are
        None (a download from another host): redirects are followed only
        then, never with the key. Returns the decoded JSON body, or streams
        a success body into ``into`` and returns None. Raises a VoiceHubError.
        The latency logged is the request's, body included. ``record`` (from
        ``operation.request()``, see :mod:`voicehub_async.telemetry`) is told
        the status the service answered.
        """
        session = self._get_session()
        loop = asyncio.get_running_loop()
        started = loop.time()
        if url is None:
            url = self.base_url + path
        if headers is None and into is None:
            headers = self._auth_headers
        try:
            async with session.request(
                method,
                url,
                json=json_body,
                headers=headers,
                timeout=timeout,
                allow_redirects=headers is None,
            ) as response:
                status = response.status
                record.answered(status)
                if status >= 300:
                    data = await response.read()
                    error = self._status_error(method, path, response, data)
                    self._log(method, path, status, attempt, loop.time() - started)
                    raise error
                if into is None:
                    data = await response.read()
                else:
                    async for chunk in response.content.iter_chunked(_DOWNLOAD_CHUNK):
                        into.write(chunk)
        except VoiceHubError:
            raise
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise self._log_failure(
                _transport_error(exc, method, path), method, path, attempt, loop.time() - started
            ) from None
        if logger.isEnabledFor(logging.DEBUG):
            self._log(method, path, status, attempt, loop.time() - started)
        if into is not None:
            return None
        try:
            return _loads(data)
        except ValueError:
            raise UnexpectedResponseError(
                status,
                "the answer is not JSON",
                data.decode("utf-8", "replace"),
                secret=self._api_key,
            ) from None

    def _status_error(
        self, method: str, path: str, response: aiohttp.ClientResponse, body: bytes
    ) -> APIStatusError:
        status = response.status
        headers = dict(response.headers)
        text = body.decode("utf-8", "replace")
        if 300 <= status < 400:
            location = response.headers.get("Location", "")
            message = (
                f"{method} {path} was redirected to {location or 'elsewhere'}; redirects are "
                "not followed so that the API key never goes to another host: check base_url"
            )
        else:
            message = error_message(body, response.reason)
            suggested = looks_like_api_path(self.base_url) if status == 404 else None
            if suggested is not None:
                message += (
                    f" (base_url {self.base_url!r} looks wrong: it should not end in "
                    f"{self.base_url[len(suggested):]!r}, the SDK adds the API path itself; "
                    f"use {suggested!r})"
                )
        return status_error_class(status)(
            status,
            message,
            text,
            headers,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
            secret=self._api_key,  # some services echo a refused key, headers included
        )

    @staticmethod
    def _log(method: str, path: str, status: int, attempt: int, seconds: float) -> None:
        level = logging.DEBUG if status < 400 else logging.INFO
        if logger.isEnabledFor(level):
            logger.log(
                level,
                "%s %s -> %d (attempt %d, %.1f ms)",
                method, path, status, attempt, seconds * 1000.0,
            )

    @staticmethod
    def _log_failure(
        error: VoiceHubError, method: str, path: str, attempt: int, seconds: float
    ) -> VoiceHubError:
        if logger.isEnabledFor(logging.INFO):
            logger.info(
                "%s %s failed (attempt %d, %.1f ms): %s",
                method, path, attempt, seconds * 1000.0, error,
            )
        return error

    # -- the API -------------------------------------------------------------------

    async def trigger_call(
        self,
        to: str,
        agent_id: str,
        *,
        context: Mapping[str, Any] | None = None,
        scheduled_at: datetime | None = None,
        from_number: str | None = None,
        timeout: TimeoutTypes | None = None,
        max_retries: int | None = None,
    ) -> Call:
        """Place a call now, or schedule it for ``scheduled_at`` (time-zone aware).

        Numbers are validated and sent in E.164; an invalid request raises
        :class:`~voicehub_async.InvalidRequestError` before anything is sent.
        A failure that may have placed the call raises
        :class:`~voicehub_async.AmbiguousTriggerError` and is never re-sent
        (unless the client opted in with ``retry_ambiguous_triggers``).
        """
        return await self.trigger(
            CallRequest(
                to=to,
                agent_id=agent_id,
                context=context,
                scheduled_at=scheduled_at,
                from_number=from_number,
            ),
            timeout=timeout,
            max_retries=max_retries,
        )

    def prepare(self, request: CallRequest, *, now: datetime | None = None) -> PreparedRequest:
        """``request`` checked and normalised with this client's ``default_region``.

        Returns a :class:`~voicehub_async.PreparedRequest`, which
        :meth:`trigger`, :meth:`dispatch` and the campaign send without
        checking it again (one that is prepared already comes back as it
        is). ``now`` is the time a ``scheduled_at`` must be after (default:
        the clock). Raises :class:`~voicehub_async.InvalidRequestError`;
        sends nothing. Numbers seen before are not parsed again (a bounded
        cache per client).
        """
        return prepare_request(
            request, default_region=self.default_region, now=now, numbers=self._numbers
        )

    async def trigger(
        self,
        request: CallRequest,
        *,
        timeout: TimeoutTypes | None = None,
        max_retries: int | None = None,
        attempt: int | None = None,
        prepared: bool | None = None,
        operation: Operation | None = None,
    ) -> Call:
        """:meth:`trigger_call` for a :class:`~voicehub_async.CallRequest`.

        A :class:`~voicehub_async.PreparedRequest` (from :meth:`prepare`) is
        sent without being checked again. ``attempt=n`` sends it once, as
        attempt number ``n``, and raises a failure as it is (not wrapped in
        :class:`~voicehub_async.AmbiguousTriggerError`): for code that runs
        its own retries with :attr:`retry_policy` (``retry_policy.attempts()``),
        as the dispatcher does. ``prepared=True`` (deprecated: pass what
        :meth:`prepare` returns instead) trusts a plain request to be
        prepared already. ``operation`` (from :attr:`telemetry`) records the
        request(s) under an operation the caller holds, as the dispatcher
        does across an input's attempts; by default each call is its own.
        """
        if prepared is not None:
            warnings.warn(
                "trigger(prepared=...) is deprecated: pass the PreparedRequest that "
                "client.prepare() returns, which is never validated twice",
                DeprecationWarning,
                stacklevel=2,
            )
        if not isinstance(request, PreparedRequest):
            request = assume_prepared(request) if prepared else self.prepare(request)
        payload = trigger_payload(request)
        if logger.isEnabledFor(logging.DEBUG):  # numbers are personal data: DEBUG only
            logger.debug("trigger payload: %s", payload)
        client_timeout = self._timeout(timeout)
        if operation is not None:  # the caller records the operation
            if attempt is not None:  # the dispatcher's path: one frame less
                return await self._send_trigger(payload, attempt, client_timeout, operation)
            return await self._trigger_attempts(
                payload, client_timeout, operation, attempt, max_retries
            )
        with self.telemetry.operation(
            "trigger_call", trigger=True, agent_id=request.agent_id
        ) as op:
            op.set_personal(request.to, request.context)
            call = await self._trigger_attempts(payload, client_timeout, op, attempt, max_retries)
            op.set_call(call.id)
            if request.scheduled_at is not None:
                op.set_outcome("scheduled")
            return call

    async def _trigger_attempts(
        self,
        payload: Mapping[str, Any],
        timeout: aiohttp.ClientTimeout,
        operation: Operation,
        attempt: int | None,
        max_retries: int | None,
    ) -> Call:
        """Attempt number ``attempt`` alone, or attempts while the policy allows."""
        if attempt is not None:
            return await self._send_trigger(payload, attempt, timeout, operation)

        async def attempt_number(number: int) -> Call:
            return await self._send_trigger(payload, number, timeout, operation)

        return await self.retry_policy.call(attempt_number, trigger=True, max_retries=max_retries)

    async def _send_trigger(
        self,
        payload: Mapping[str, Any],
        attempt: int,
        timeout: aiohttp.ClientTimeout,
        operation: Operation,
    ) -> Call:
        url = self._trigger_url
        if operation is NO_OPERATION:  # telemetry off: no request context to enter
            data = await self._send(
                "POST", TRIGGER_PATH, attempt, url=url, json_body=payload, timeout=timeout
            )
            return self._structure_call(data, attempt)
        with operation.request("POST", TRIGGER_PATH, url) as record:
            data = await self._send(
                "POST",
                TRIGGER_PATH,
                attempt,
                url=url,
                json_body=payload,
                timeout=timeout,
                record=record,
            )
        return self._structure_call(data, attempt)

    async def _read(
        self,
        path: str,
        timeout: TimeoutTypes | None,
        max_retries: int | None,
        parse: Callable[[Any, int], T] | None = None,
        *,
        name: str,
        template: str | None,
        call_id: str | None = None,
    ) -> T:
        """GET ``path``, an idempotent read retried on anything transient.

        Returns the decoded JSON, or ``parse(json, attempt)`` (inside the
        attempt, so an unreadable answer fails that attempt). ``name`` and
        ``template`` are the operation's and the path's for telemetry.
        """
        client_timeout = self._timeout(timeout)
        with self.telemetry.operation(name) as op:
            if call_id is not None:
                op.set_call(call_id)

            async def attempt(number: int) -> T:
                url = self.base_url + path
                with op.request("GET", template, url) as record:
                    data = await self._send(
                        "GET", path, number, url=url, timeout=client_timeout, record=record
                    )
                return data if parse is None else parse(data, number)

            return await self.retry_policy.call(attempt, trigger=False, max_retries=max_retries)

    async def get_call(
        self,
        call_id: str,
        *,
        timeout: TimeoutTypes | None = None,
        max_retries: int | None = None,
    ) -> Call:
        """The call's current status (retried on any transient failure)."""
        return await self._read(
            _status_path(_check_call_id(call_id)),
            timeout,
            max_retries,
            self._structure_call,
            name="get_call",
            template=STATUS_TEMPLATE,
            call_id=call_id,
        )

    async def get_recordings(
        self,
        call_id: str,
        *,
        timeout: TimeoutTypes | None = None,
        max_retries: int | None = None,
    ) -> Recordings:
        """The URL(s) of the call's recording (a 404 until there is one)."""
        path = _recordings_path(_check_call_id(call_id))

        def parse(data: Any, _: int) -> Recordings:
            recordings = self.converter.structure({"call_id": call_id, "raw": data}, Recordings)
            return Recordings(
                call_id=recordings.call_id,
                urls=tuple(self._scope.absolute(url) for url in recordings.urls),
                raw=data,
            )

        return await self._read(
            path,
            timeout,
            max_retries,
            parse,
            name="get_recordings",
            template=RECORDINGS_TEMPLATE,
            call_id=call_id,
        )

    async def download_recording(
        self,
        url: str,
        path: str | os.PathLike[str],
        *,
        timeout: TimeoutTypes | None = None,
        max_retries: int | None = None,
    ) -> Path:
        """Stream the recording at ``url`` to ``path`` and return the path.

        The file is written under a temporary name in the same folder and
        renamed when complete, so a broken download never leaves a half file
        under the final name. The API key is sent only when ``url`` is on the
        API's own host; a URL elsewhere (a storage bucket) gets no key, and
        only then are redirects followed.
        """
        target = Path(path)
        absolute, with_key = self._scope.download_url(url)
        headers = self._auth_headers if with_key else None
        label = URL(absolute).path
        client_timeout = self._timeout(timeout)

        async def attempt(number: int) -> Path:
            # Like mkstemp, but created with the usual 0o666 & ~umask mode, so
            # the finished file has the permissions any other download would have.
            temp_name = str(target.parent / f".{target.name}.{secrets.token_hex(6)}.part")
            fd = os.open(temp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            try:
                with os.fdopen(fd, "wb") as out, op.request("GET", None, absolute) as record:
                    await self._send(
                        "GET", label, number, url=absolute, headers=headers, into=out,
                        timeout=client_timeout, record=record,
                    )
                os.replace(temp_name, target)
            except BaseException:
                try:
                    os.unlink(temp_name)
                except FileNotFoundError:
                    pass
                raise
            return target

        # No template: a recording's URL is the service's (or a bucket's) to shape.
        with self.telemetry.operation("download_recording") as op:
            return await self.retry_policy.call(attempt, trigger=False, max_retries=max_retries)

    async def get_analysis(
        self,
        url: str,
        *,
        timeout: TimeoutTypes | None = None,
        max_retries: int | None = None,
    ) -> Any:
        """The decoded JSON at an ``AnalysisResultReady`` webhook's ``analysisResultUrl``.

        Fetching it needs the API key, so ``url`` must be on the API's own
        host (a relative URL is taken relative to ``base_url``), over https
        (http only on loopback, for the simulator). Any other URL raises
        :class:`~voicehub_async.InvalidRequestError` naming it, before anything
        is sent: a webhook body is input from the network, and must not be
        able to send the key elsewhere. Redirects are not followed
        (:class:`~voicehub_async.RedirectError`); transient failures are
        retried like any read.
        """
        # No template: the URL comes from a webhook, in no known shape.
        result: Any = await self._read(
            self._scope.api_path(url), timeout, max_retries, name="get_analysis", template=None
        )
        return result

    # -- many calls ----------------------------------------------------------------

    def dispatch(
        self,
        requests: Iterable[CallRequest | Mapping[str, Any]]
        | AsyncIterable[CallRequest | Mapping[str, Any]],
        **options: Any,
    ) -> Dispatcher:
        """Trigger many calls with bounded concurrency; iterate for the results.

        ``async for result in client.dispatch(requests, concurrency=100):`` —
        see :class:`~voicehub_async.Dispatcher` for the options.
        """
        from .dispatch import Dispatcher

        return Dispatcher(self, requests, **options)

    async def trigger_and_wait(
        self,
        to: str,
        agent_id: str,
        *,
        context: Mapping[str, Any] | None = None,
        scheduled_at: datetime | None = None,
        from_number: str | None = None,
        timeout: float | None = None,
        **poller_options: Any,
    ) -> Call:
        """Place one call and wait until it reaches a final status.

        ``timeout`` (seconds) bounds the wait, not the trigger.
        """
        from .poller import trigger_and_wait

        return await trigger_and_wait(
            self,
            CallRequest(
                to=to,
                agent_id=agent_id,
                context=context,
                scheduled_at=scheduled_at,
                from_number=from_number,
            ),
            timeout=timeout,
            **poller_options,
        )

    def _structure_call(self, data: Any, attempts: int) -> Call:
        try:
            call = call_from_json(data)  # what the converter's Call hook does
        except (ValueError, TypeError, KeyError, cattrs.BaseValidationError) as exc:
            raise UnexpectedResponseError(
                200, f"the answer is not a call ({exc})", _shown(data),
                secret=self._api_key,
            ) from None
        raw_id = data["id"]
        if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)) or not call.id.strip():
            # Not a call that can be followed (an id "None" or ""): for a
            # trigger, ambiguous like any other answer without a readable call.
            raise UnexpectedResponseError(
                200, f"the answer's call id {raw_id!r} is unusable", _shown(data),
                secret=self._api_key,
            )
        if attempts != 1:
            call = attrs.evolve(call, attempts=attempts)
        return call


def _shown(data: Any) -> str:
    """An unexpected answer, as text for an error (truncated)."""
    return json.dumps(data, default=str)[:500]

