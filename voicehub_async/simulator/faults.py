"""The simulator's faults: what can go wrong, and the engine that decides when.

Faults are values: ``Simulator.inject(fault, endpoint=..., times=...)`` queues
one (a *scripted* fault: the next matching requests consume them in order),
and :class:`~voicehub_async.simulator.config.FaultConfig` makes them happen at
random. Each kind says whether it acts *before* the request is processed
(nothing is created: the client may retry safely) or *after* (``create=True``:
a trigger's call exists although the client sees a failure, the case a
non-idempotent trigger must not retry).

:class:`FaultEngine` is the part of the server that picks, for one request,
the fault that applies (rate limit, then scripted, then random), and
:func:`fault_response` / :func:`reset_connection` turn a fault into what the
client sees. The server only applies them around its normal answers.
"""

from __future__ import annotations

import collections
import contextlib
import json
import math
import random
import socket
import struct
import sys
import threading
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import attrs

from .config import ENDPOINTS, FaultConfig

if TYPE_CHECKING:
    from aiohttp import web

__all__ = [
    "AnyFault",
    "DelayFault",
    "Fault",
    "FaultEngine",
    "RedirectFault",
    "ResetFault",
    "StatusFault",
    "fault_response",
    "reset_connection",
]


def _to_headers(value: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    # A tuple keeps the frozen fault hashable and comparable.
    return () if value is None else tuple((str(k), str(v)) for k, v in value.items())


@attrs.frozen
class StatusFault:
    """Answer ``code`` instead of the normal answer.

    ``body``: None gives a JSON ``{"message": ...}``; a ``str`` is sent as text
    (``text/html`` when it starts with ``<``, else ``text/plain``; ``""`` for an
    empty body); ``bytes`` are sent raw; anything else is JSON-encoded.
    ``headers`` override the defaults (e.g. ``Retry-After``, ``Content-Type``).
    With ``create=True`` a trigger creates its call first (a 500/502/504 after
    processing).
    """

    code: int = attrs.field(
        validator=attrs.validators.and_(attrs.validators.ge(100), attrs.validators.le(599))
    )
    body: Any = None
    headers: tuple[tuple[str, str], ...] = attrs.field(default=None, converter=_to_headers)
    create: bool = False


@attrs.frozen
class DelayFault:
    """Hold the answer back ``seconds`` real seconds (to provoke a read timeout).

    ``create=True``: the request is processed (a trigger's call created) first,
    then the answer is delayed. ``create=False``: the delay comes first, as in
    a congested front end; if the client has gone away by then, the request is
    dropped unprocessed, otherwise it is processed normally.
    """

    seconds: float = attrs.field(validator=attrs.validators.ge(0.0))
    create: bool = True


@attrs.frozen
class ResetFault:
    """Drop the connection without answering (the client sees a disconnect).

    ``create=True``: a trigger creates and logs its call before the drop.
    """

    create: bool = False


@attrs.frozen
class RedirectFault:
    """Answer ``302`` with ``Location: location`` (a client must not follow it
    blindly to another host with its API key)."""

    location: str = "https://voicehub-redirect.invalid/"

    @property
    def create(self) -> bool:
        """A redirect never processes the request."""
        return False


AnyFault = StatusFault | DelayFault | ResetFault | RedirectFault


class Fault:
    """Factories for scripted faults (a namespace: not instantiated)."""

    def __init__(self) -> None:  # pragma: no cover - guard only
        raise TypeError("Fault is a namespace of factory functions")

    @staticmethod
    def status(
        code: int,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        create: bool = False,
    ) -> StatusFault:
        """An error answer, e.g. ``Fault.status(503, headers={"Retry-After": "1"})``."""
        return StatusFault(code, body, headers, create)

    @staticmethod
    def rate_limited(retry_after: int | str | None = 1) -> StatusFault:
        """A 429; ``retry_after`` in seconds, or an HTTP date string, or None."""
        headers = None if retry_after is None else {"Retry-After": str(retry_after)}
        return Fault.status(429, {"message": "rate limit exceeded"}, headers)

    @staticmethod
    def delay(seconds: float, create: bool = True) -> DelayFault:
        """A late answer (see :class:`DelayFault`)."""
        return DelayFault(seconds, create)

    @staticmethod
    def reset(create: bool = False) -> ResetFault:
        """A dropped connection (see :class:`ResetFault`)."""
        return ResetFault(create)

    @staticmethod
    def redirect(location: str = "https://voicehub-redirect.invalid/") -> RedirectFault:
        """A 302 to another host."""
        return RedirectFault(location)


# -- the engine ------------------------------------------------------------------------------


@attrs.define
class _Scripted:
    endpoint: str
    fault: AnyFault
    remaining: int | None  # None: until cleared


@attrs.define
class _Bucket:
    tokens: float
    updated: float


class FaultEngine:
    """Which fault, if any, a request meets: the rate limit, then the first
    matching scripted fault, then a random draw.

    Random faults, latency and the rate limit apply only to ``faults.endpoints``;
    scripted faults to whatever endpoint they were injected for. ``rng`` is the
    server's fault generator (seeded), ``clock`` its monotonic clock (for the
    rate limit's buckets). :meth:`inject` and :meth:`clear` are thread-safe.
    """

    def __init__(
        self, faults: FaultConfig, rng: random.Random, clock: Callable[[], float]
    ) -> None:
        self._endpoints = faults.endpoints
        self._latency = faults.latency
        self._rng = rng
        self._clock = clock
        self._rate = faults.rate_limit
        self._burst = float(
            faults.rate_limit_burst
            if faults.rate_limit_burst is not None
            else max(1, math.ceil(faults.rate_limit or 1))
        )
        self._buckets: dict[str, _Bucket] = {}
        retry_503 = (
            None
            if faults.error_503_retry_after is None
            else {"Retry-After": str(faults.error_503_retry_after)}
        )
        table: list[tuple[float, AnyFault]] = []
        cumulative = 0.0
        for rate, fault in (
            (faults.error_500_rate, StatusFault(500)),
            (faults.error_503_rate, StatusFault(503, headers=retry_503)),
            (faults.reset_before_create_rate, ResetFault(create=False)),
            (faults.reset_after_create_rate, ResetFault(create=True)),
            (faults.slow_rate, DelayFault(faults.slow_delay, create=True)),
        ):
            if rate > 0:
                cumulative += rate
                table.append((cumulative, fault))
        self._random = table
        self._scripted: collections.deque[_Scripted] = collections.deque()
        self._lock = threading.Lock()

    # -- scripted faults ---------------------------------------------------------------------

    def inject(self, fault: AnyFault, endpoint: str = "any", times: int | None = 1) -> None:
        """Queue ``fault`` for the next ``times`` requests to ``endpoint``
        (see :meth:`Simulator.inject <voicehub_async.simulator.Simulator.inject>`)."""
        if endpoint != "any" and endpoint not in ENDPOINTS:
            raise ValueError(
                f"unknown endpoint {endpoint!r}; expected 'any' or one of {sorted(ENDPOINTS)}"
            )
        if times is not None and times < 1:
            raise ValueError("times must be >= 1 (or None for ever)")
        if not isinstance(fault, (StatusFault, DelayFault, ResetFault, RedirectFault)):
            raise TypeError(f"not a fault: {fault!r}; use the Fault.* factories")
        with self._lock:
            self._scripted.append(_Scripted(endpoint, fault, times))

    def clear(self) -> None:
        """Forget every scripted fault not consumed yet."""
        with self._lock:
            self._scripted.clear()

    @property
    def pending(self) -> int:
        """How many scripted fault entries are still queued."""
        return len(self._scripted)

    def reset(self) -> None:
        """Forget scripted faults and the rate limit's buckets."""
        self.clear()
        self._buckets.clear()

    # -- per request ---------------------------------------------------------------------------

    def latency(self, endpoint: str) -> float:
        """Real seconds to hold ``endpoint``'s request back before anything else."""
        if endpoint not in self._endpoints:
            return 0.0
        low, high = self._latency
        return self._rng.uniform(low, high) if high > 0 else 0.0

    def choose(self, endpoint: str, key: str) -> AnyFault | None:
        """The fault this request to ``endpoint`` with API key ``key`` meets."""
        fault: AnyFault | None = None
        if endpoint in self._endpoints:
            if self._rate is not None:
                fault = self._rate_limited(key)
            if fault is None and self._scripted:
                fault = self._take_scripted(endpoint)
            if fault is None and self._random:
                fault = self._draw()
        elif self._scripted:
            fault = self._take_scripted(endpoint)
        return fault

    def _rate_limited(self, key: str) -> StatusFault | None:
        rate = self._rate
        assert rate is not None
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self._burst, now)
        else:
            bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.updated) * rate)
            bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        wait = (1.0 - bucket.tokens) / rate
        retry_after = max(1, math.ceil(wait))
        return StatusFault(
            429,
            {"message": "rate limit exceeded"},
            {"Retry-After": str(retry_after)},
        )

    def _take_scripted(self, endpoint: str) -> AnyFault | None:
        with self._lock:
            for entry in self._scripted:
                if entry.endpoint == endpoint or entry.endpoint == "any":
                    if entry.remaining is not None:
                        entry.remaining -= 1
                        if entry.remaining <= 0:
                            self._scripted.remove(entry)
                    return entry.fault
        return None

    def _draw(self) -> AnyFault | None:
        draw = self._rng.random()
        for threshold, fault in self._random:
            if draw < threshold:
                return fault
        return None


# -- what the client sees --------------------------------------------------------------------


def fault_response(request: web.Request, fault: AnyFault) -> web.StreamResponse:
    """The answer ``fault`` gives (a dropped connection for a reset). A
    :class:`DelayFault` has no answer of its own: the server waits, then answers."""
    from aiohttp import web

    if isinstance(fault, ResetFault):
        return reset_connection(request)
    if isinstance(fault, RedirectFault):
        return web.Response(status=302, headers={"Location": fault.location})
    if isinstance(fault, StatusFault):
        return _status_response(fault)
    raise AssertionError(fault)  # pragma: no cover - the server handles delays


def _status_response(fault: StatusFault) -> web.Response:
    from aiohttp import web

    headers = dict(fault.headers)
    body = fault.body
    if body is None:
        try:
            message = HTTPStatus(fault.code).phrase.lower()
        except ValueError:
            message = "error"
        body = {"message": message}
    if isinstance(body, bytes):
        return web.Response(status=fault.code, body=body, headers=headers)
    if isinstance(body, str):
        has_type = any(k.lower() == "content-type" for k in headers)
        if not has_type:
            headers["Content-Type"] = (
                "text/html; charset=utf-8"
                if body.lstrip().startswith("<")
                else "text/plain; charset=utf-8"
            )
        return web.Response(status=fault.code, body=body.encode(), headers=headers)
    if not any(k.lower() == "content-type" for k in headers):
        headers["Content-Type"] = "application/json"
    return web.Response(status=fault.code, body=json.dumps(body).encode(), headers=headers)


def reset_connection(request: web.Request) -> web.StreamResponse:
    """Drop the connection so the client gets no answer at all.

    SO_LINGER 0 makes the close send a TCP RST (a "connection reset"), the
    harshest realistic failure. The returned response is never written:
    aiohttp notices the closed transport and gives up quietly.
    """
    from aiohttp import web

    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            linger = struct.pack("HH" if sys.platform == "win32" else "ii", 1, 0)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        transport.abort()
    return web.Response(status=499)
