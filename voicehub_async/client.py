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
import json
import logging
import os
import secrets
from collections.abc import AsyncIterable, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote, urljoin, urlsplit

import aiohttp
import attrs
import cattrs

from .config import DEFAULT_BASE_URL, Timeout, TimeoutTypes, check_base_url, is_loopback_host
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
from .models import (
    Call,
    CallRequest,
    Recordings,
    check_region,
    make_converter,
    prepare_request,
)
from .retry import RetryPolicy, parse_retry_after

if TYPE_CHECKING:
    from .dispatch import Dispatcher

__all__ = ["VoiceHubClient"]

logger = logging.getLogger("voicehub_async")

API_KEY_HEADER: Final = "x-dq-api-key"
TRIGGER_PATH: Final = "/api/v1/calls/api-call"
_DOWNLOAD_CHUNK: Final = 64 * 1024


def _status_path(call_id: str) -> str:
    return f"/api/v1/calls/status/{quote(call_id, safe='')}/"


def _recordings_path(call_id: str) -> str:
    return f"/api/v1/calls/e2e/{quote(call_id, safe='')}/recordings"


def _check_call_id(call_id: Any) -> str:
    if not isinstance(call_id, str) or not call_id.strip():
        raise InvalidRequestError("call_id", call_id, "a non-empty string is required")
    return call_id


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
    ) -> None:
        key = api_key if api_key is not None else os.environ.get("VOICEHUB_API_KEY")
        if not key or not key.strip():
            raise VoiceHubError(
                "no VoiceHub API key: pass VoiceHubClient(api_key=...) or set the "
                "VOICEHUB_API_KEY environment variable"
            )
        self._api_key = key.strip()
        if not self._api_key.isprintable():
            # Refused here rather than by aiohttp at the first request; the key is not shown.
            raise VoiceHubError(
                "the VoiceHub API key contains control characters (a newline?); "
                "check how it was read"
            )
        self.base_url = check_base_url(
            base_url or os.environ.get("VOICEHUB_BASE_URL") or DEFAULT_BASE_URL
        )
        self._origin = urlsplit(self.base_url)[:2]
        self.timeout = Timeout.of(timeout)
        self._client_timeout = self.timeout.to_aiohttp()
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.max_connections = max_connections
        self.retry_policy = retry_policy or RetryPolicy(
            max_retries=max_retries, retry_ambiguous_triggers=retry_ambiguous_triggers
        )
        self.default_region = check_region(default_region)
        self._session = session
        self._owns_session = session is None
        # Sent per request rather than as session defaults, so that a request
        # to another host (a recording in a storage bucket) can go without it.
        self._auth_headers: Mapping[str, str] = {API_KEY_HEADER: self._api_key}
        self._closed = False
        self.converter: cattrs.Converter = make_converter()

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
            session = self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.max_connections, limit_per_host=0),
                timeout=self._client_timeout,
            )
        return session

    # -- one request -------------------------------------------------------------

    def _timeout(self, timeout: TimeoutTypes | None) -> aiohttp.ClientTimeout:
        return self._client_timeout if timeout is None else Timeout.of(timeout).to_aiohttp()

    async def _send(
        self,
        method: str,
        path: str,
        attempt: int,
        *,
        json_body: Any = None,
        timeout: aiohttp.ClientTimeout,
    ) -> Any:
        """Send one request and return its decoded JSON body, or raise a VoiceHubError."""
        session = self._get_session()
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with session.request(
                method,
                self.base_url + path,
                json=json_body,
                headers=self._auth_headers,
                timeout=timeout,
                allow_redirects=False,
            ) as response:
                body = await response.read()
                status = response.status
                if status >= 300:
                    error = self._status_error(method, path, response, body)
                    self._log(method, path, status, attempt, loop.time() - started)
                    raise error
        except VoiceHubError:
            raise
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise self._log_failure(
                _transport_error(exc, method, path), method, path, attempt, loop.time() - started
            ) from None
        if logger.isEnabledFor(logging.DEBUG):
            self._log(method, path, status, attempt, loop.time() - started)
        try:
            return json.loads(body)
        except ValueError:
            raise UnexpectedResponseError(
                status,
                "the answer is not JSON",
                body.decode("utf-8", "replace"),
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

    def prepare(self, request: CallRequest) -> CallRequest:
        """``request`` checked and normalised with this client's ``default_region``.

        Raises :class:`~voicehub_async.InvalidRequestError`; sends nothing.
        """
        return prepare_request(request, default_region=self.default_region)

    async def trigger(
        self,
        request: CallRequest,
        *,
        timeout: TimeoutTypes | None = None,
        max_retries: int | None = None,
        prepared: bool = False,
    ) -> Call:
        """:meth:`trigger_call` for a :class:`~voicehub_async.CallRequest`.

        ``prepared=True`` skips validation for a request that came out of
        :meth:`prepare` already.
        """
        if not prepared:
            request = self.prepare(request)
        payload = self.converter.unstructure(request, CallRequest)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("trigger payload: %s", payload)
        client_timeout = self._timeout(timeout)

        async def attempt(number: int) -> Call:
            data = await self._send(
                "POST", TRIGGER_PATH, number, json_body=payload, timeout=client_timeout
            )
            return self._structure_call(data, number)

        return await self.retry_policy.call(attempt, trigger=True, max_retries=max_retries)

    async def get_call(
        self,
        call_id: str,
        *,
        timeout: TimeoutTypes | None = None,
        max_retries: int | None = None,
    ) -> Call:
        """The call's current status (retried on any transient failure)."""
        path = _status_path(_check_call_id(call_id))
        client_timeout = self._timeout(timeout)

        async def attempt(number: int) -> Call:
            data = await self._send("GET", path, number, timeout=client_timeout)
            return self._structure_call(data, number)

        return await self.retry_policy.call(attempt, trigger=False, max_retries=max_retries)

    async def get_recordings(
        self,
        call_id: str,
        *,
        timeout: TimeoutTypes | None = None,
        max_retries: int | None = None,
    ) -> Recordings:
        """The URL(s) of the call's recording (a 404 until there is one)."""
        path = _recordings_path(_check_call_id(call_id))
        client_timeout = self._timeout(timeout)

        async def attempt(number: int) -> Recordings:
            data = await self._send("GET", path, number, timeout=client_timeout)
            recordings = self.converter.structure({"call_id": call_id, "raw": data}, Recordings)
            return Recordings(
                call_id=recordings.call_id,
                urls=tuple(urljoin(self.base_url + "/", url) for url in recordings.urls),
                raw=data,
            )

        return await self.retry_policy.call(attempt, trigger=False, max_retries=max_retries)

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
        absolute = urljoin(self.base_url + "/", url)
        parts = urlsplit(absolute)
        if parts.scheme != "https" and not (
            parts.scheme == "http" and is_loopback_host(parts.hostname)
        ):
            raise InvalidRequestError("url", url, "recordings are downloaded over https only")
        headers = self._auth_headers if parts[:2] == self._origin else None
        client_timeout = self._timeout(timeout)

        async def attempt(number: int) -> Path:
            return await self._download(absolute, target, headers, client_timeout, number)

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
        if not isinstance(url, str) or not url.strip():
            raise InvalidRequestError("url", url, "a non-empty URL string is required")
        absolute = urljoin(self.base_url + "/", url.strip())
        parts, base = urlsplit(absolute), urlsplit(self.base_url)
        if parts.scheme != "https" and not (
            parts.scheme == "http" and is_loopback_host(parts.hostname)
        ):
            raise InvalidRequestError("url", url, "analysis results are fetched over https only")
        default_ports = {"https": 443, "http": 80}
        try:
            same_origin = (
                parts.scheme == base.scheme
                and (parts.hostname or "").lower() == (base.hostname or "").lower()
                and (parts.port or default_ports[parts.scheme])
                == (base.port or default_ports[base.scheme])
                and parts.username is None
            )
        except ValueError:  # an invalid port
            same_origin = False
        if not same_origin:
            raise InvalidRequestError(
                "url", url,
                f"not on the API host {base.netloc}; the API key is only sent there",
            )
        base_path = base.path.rstrip("/")
        if not parts.path.startswith(base_path + "/"):
            raise InvalidRequestError("url", url, f"outside the API's base path {base_path}")
        path = parts.path[len(base_path):] + (f"?{parts.query}" if parts.query else "")
        client_timeout = self._timeout(timeout)

        async def attempt(number: int) -> Any:
            return await self._send("GET", path, number, timeout=client_timeout)

        return await self.retry_policy.call(attempt, trigger=False, max_retries=max_retries)

    async def _download(
        self,
        url: str,
        target: Path,
        headers: Mapping[str, str] | None,
        timeout: aiohttp.ClientTimeout,
        attempt: int,
    ) -> Path:
        session = self._get_session()
        path = urlsplit(url).path
        # Like mkstemp, but created with the usual 0o666 & ~umask mode, so the
        # finished file has the permissions any other download would have.
        temp_name = str(target.parent / f".{target.name}.{secrets.token_hex(6)}.part")
        fd = os.open(temp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "wb") as out:
                try:
                    # A redirect is followed only when no key is attached (a
                    # storage URL handing over to a CDN); with the key, never.
                    async with session.get(
                        url, headers=headers, timeout=timeout, allow_redirects=headers is None
                    ) as response:
                        if response.status >= 300:
                            body = await response.read()
                            raise self._status_error("GET", path, response, body)
                        async for chunk in response.content.iter_chunked(_DOWNLOAD_CHUNK):
                            out.write(chunk)
                except VoiceHubError:
                    raise
                except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    raise _transport_error(exc, "GET", path) from None
            os.replace(temp_name, target)
        except BaseException:
            try:
                os.unlink(temp_name)
            except FileNotFoundError:
                pass
            raise
        self._log("GET", path, 200, attempt, 0.0)
        return target

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
            call = self.converter.structure(data, Call)
        except (ValueError, TypeError, KeyError, cattrs.BaseValidationError) as exc:
            raise UnexpectedResponseError(
                200, f"the answer is not a call ({exc})", json.dumps(data),
                secret=self._api_key,
            ) from None
        raw_id = data["id"]
        if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)) or not call.id.strip():
            # Not a call that can be followed (an id "None" or ""): for a
            # trigger, ambiguous like any other answer without a readable call.
            raise UnexpectedResponseError(
                200, f"the answer's call id {raw_id!r} is unusable", json.dumps(data),
                secret=self._api_key,
            )
        if attempts != 1:
            call = attrs.evolve(call, attempts=attempts)
        return call
