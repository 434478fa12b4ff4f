"""OpenTelemetry traces and metrics: off unless asked for, and free when off.

The client asks this module for two things, and nothing else: an *operation*
(one SDK call such as ``trigger_call`` or ``get_call``, however many requests
it takes) and, inside it, a *request* (one HTTP request on the wire). With
telemetry off (the default) both are shared do-nothing objects: no
``opentelemetry`` import, no allocation, a couple of empty method calls per
request. With ``VoiceHubClient(telemetry=True)``, or a tracer and meter
provider passed in, :class:`OpenTelemetry` turns them into:

* a span per operation (``trigger_call``, kind INTERNAL) carrying
  ``voicehub.outcome``, ``voicehub.attempts`` and, for a trigger,
  ``voicehub.trigger.ambiguous``;
* under it, a span per request (kind CLIENT) following OpenTelemetry's HTTP
  client conventions: named ``{method} {url.template}``, with
  ``http.request.method``, ``server.address``, ``server.port``, ``url.full``
  (no query string), ``url.template``, ``http.response.status_code``,
  ``error.type`` on failure and ``http.request.resend_count`` on each resend;
* metrics: ``http.client.request.duration`` (histogram, seconds, the
  conventions' attributes), ``voicehub.triggers`` (counter, by
  ``voicehub.trigger.outcome``), and the gauges ``voicehub.calls.live`` and
  ``voicehub.dispatch.pace`` (calls per second) by ``voicehub.source``
  (``dispatch`` or ``campaign``). The gauges are observed: a dispatch is
  :meth:`Telemetry.watch`-ed, and read only when a reader collects, never on
  the hot path.

What is never recorded: the API key (it is in no URL and no attribute), the
text of an error (a service may echo a number in it: ``error.type`` is the
status code or the error's class), and, unless ``record_personal_data=True``,
the phone number and the call context. A call id and an agent id are not
personal data, and help find a call.

Why a request's span is started with its operation's as explicit parent,
and the operation's span is never made the current one: the requests of an
operation nest under it whatever task they run in, and nothing is attached
to or detached from the context on the hot path. An operation's span still
nests under whatever span is current when it starts (a web request's).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider, Observation
    from opentelemetry.trace import Span, TracerProvider

__all__ = [
    "NO_OPERATION",
    "NO_REQUEST",
    "NO_TELEMETRY",
    "OTEL_INSTALL_HINT",
    "OpenTelemetry",
    "Operation",
    "Request",
    "Telemetry",
    "telemetry_for",
]

Source = Literal["dispatch", "campaign"]

OTEL_INSTALL_HINT: Final = (
    "telemetry needs the OpenTelemetry API and SDK: pip install 'voicehub-async[otel]'"
)
#: The instrumentation scope: what a backend shows as the spans' library.
SCOPE: Final = "voicehub_async"
#: The conventions' advice for ``http.client.request.duration`` (seconds).
DURATION_BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip


# -- the interface, which is also the no-op -----------------------------------------------


class Request:
    """One HTTP request of an operation. This base class records nothing."""

    __slots__ = ()

    def __enter__(self) -> Request:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def answered(self, status: int) -> None:
        """The service answered with ``status`` (any status, errors included)."""


class Operation:
    """One SDK operation (``trigger_call``, ``get_call``, ...). This base
    class records nothing; :meth:`request` gives the shared no-op request."""

    __slots__ = ()

    def __enter__(self) -> Operation:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def request(self, method: str, template: str | None, url: object) -> Request:
        """A context for one request: ``template`` is the path with
        placeholders (``/api/v1/calls/status/{call_id}/``; None when there is
        none, as for a recording elsewhere), ``url`` the URL sent (a ``str``
        or a ``yarl.URL``: only turned into text when telemetry is on)."""
        return NO_REQUEST

    def set_outcome(self, outcome: str, *, ambiguous: bool | None = None) -> None:
        """How the operation ended (``placed``, ``ambiguous``, ``failed``, ...);
        without it, the outcome is taken from how the ``with`` block ended."""

    def set_call(self, call_id: str) -> None:
        """The call this operation placed or read."""

    def set_personal(self, to: str | None, context: Mapping[str, Any] | None) -> None:
        """The number and context: recorded only when the user opted in."""


class Telemetry:
    """Where the client's operations are recorded. This base class, the
    default (:data:`NO_TELEMETRY`), records nothing and imports nothing."""

    __slots__ = ()

    #: False for the no-op: callers may skip building attributes at all.
    enabled: bool = False

    def operation(
        self, name: str, *, trigger: bool = False, agent_id: str | None = None
    ) -> Operation:
        """A context for one SDK operation; ``trigger=True`` counts its outcome
        in ``voicehub.triggers`` and records whether it was ambiguous."""
        return NO_OPERATION

    def watch(
        self,
        source: Source,
        live: Callable[[], int],
        pace: Callable[[], float | None],
    ) -> contextlib.AbstractContextManager[None]:
        """Report a running dispatch's or campaign's calls live and pace while
        the ``with`` block lasts. The gauges call ``live()`` and ``pace()``
        (calls per second, None: unpaced) only when metrics are collected, so
        a dispatch's hot path pays nothing for them."""
        return contextlib.nullcontext()


#: The request of telemetry off.
NO_REQUEST: Final = Request()
#: The operation of telemetry off (what :data:`NO_TELEMETRY` hands out).
NO_OPERATION: Final = Operation()
#: The default: telemetry off.
NO_TELEMETRY: Final = Telemetry()


def telemetry_for(
    telemetry: bool | Telemetry | None = None,
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
) -> Telemetry:
    """The client's :class:`Telemetry` from its arguments.

    ``telemetry`` may be a :class:`Telemetry` (used as it is), True (the
    global OpenTelemetry providers, or those given), or False/None: off,
    unless a provider is given, which asks for telemetry by itself.
    """
    if isinstance(telemetry, Telemetry):
        if tracer_provider is not None or meter_provider is not None:
            raise ValueError("pass providers to OpenTelemetry(...), or telemetry=True, not both")
        return telemetry
    if telemetry or tracer_provider is not None or meter_provider is not None:
        return OpenTelemetry(tracer_provider=tracer_provider, meter_provider=meter_provider)
    return NO_TELEMETRY


# -- OpenTelemetry ------------------------------------------------------------------------


def _error_type(error: BaseException) -> str:
    """A low-cardinality name for an error: its class, never its message."""
    cls = type(error)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def _outcome_of(error: BaseException | None, trigger: bool) -> tuple[str, bool]:
    """``(outcome, ambiguous)`` from how an operation's block ended."""
    if error is None:
        return ("placed" if trigger else "ok"), False
    from .errors import AmbiguousTriggerError, VoiceHubError

    if isinstance(error, AmbiguousTriggerError):
        return "ambiguous", True
    if isinstance(error, VoiceHubError):
        return "failed", False
    if isinstance(error, _cancelled()):
        # A trigger cut off in flight may have reached the service.
        return "cancelled", trigger
    return "error", False


def _cancelled() -> type[BaseException]:
    import asyncio

    return asyncio.CancelledError


class OpenTelemetry(Telemetry):
    """Telemetry through the OpenTelemetry API (see the module documentation).

    ``tracer_provider``/``meter_provider`` default to the global ones (what
    ``opentelemetry.trace.set_tracer_provider`` installed). With
    ``record_personal_data=True`` the operation spans also carry
    ``voicehub.call.to`` and ``voicehub.call.context``: off by default,
    because both are personal data and traces are widely read.
    """

    __slots__ = (
        "_duration",
        "_tracer",
        "_triggers",
        "_watched",
        "record_personal_data",
    )

    enabled = True

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        record_personal_data: bool = False,
    ) -> None:
        try:
            from opentelemetry import metrics, trace
        except ImportError:
            raise ImportError(OTEL_INSTALL_HINT) from None
        from . import __version__

        self.record_personal_data = record_personal_data
        self._tracer = trace.get_tracer(SCOPE, __version__, tracer_provider=tracer_provider)
        meter = metrics.get_meter(SCOPE, __version__, meter_provider=meter_provider)
        self._duration = meter.create_histogram(
            "http.client.request.duration",
            unit="s",
            description="Duration of HTTP client requests.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._triggers = meter.create_counter(
            "voicehub.triggers",
            unit="{trigger}",
            description="Triggers sent, by outcome (placed, ambiguous, failed, cancelled).",
        )
        self._watched: list[tuple[str, Callable[[], int], Callable[[], float | None]]] = []
        meter.create_observable_gauge(
            "voicehub.calls.live",
            callbacks=[lambda _options: self._observe(1)],
            unit="{call}",
            description="Calls live in dispatches (triggers in flight) and campaigns.",
        )
        meter.create_observable_gauge(
            "voicehub.dispatch.pace",
            callbacks=[lambda _options: self._observe(2)],
            unit="{call}/s",
            description="The pace dispatches and campaigns send triggers at.",
        )

    def __repr__(self) -> str:
        return f"<OpenTelemetry record_personal_data={self.record_personal_data}>"

    def operation(
        self, name: str, *, trigger: bool = False, agent_id: str | None = None
    ) -> Operation:
        return _OTelOperation(self, name, trigger, agent_id)

    @contextlib.contextmanager
    def watch(
        self,
        source: Source,
        live: Callable[[], int],
        pace: Callable[[], float | None],
    ) -> Iterator[None]:
        watched = (source, live, pace)
        self._watched.append(watched)
        try:
            yield
        finally:
            self._watched.remove(watched)

    def _observe(self, index: int) -> Iterator[Observation]:
        """The gauges' callback: the sum over what is watched, per source."""
        from opentelemetry.metrics import Observation

        totals: dict[str, float] = {}
        for watched in list(self._watched):
            value = watched[index]()  # type: ignore[operator]
            if value is not None:
                totals[watched[0]] = totals.get(watched[0], 0) + value
        for source, total in totals.items():
            yield Observation(total, {"voicehub.source": source})


class _OTelOperation(Operation):
    __slots__ = (
        "_ambiguous",
        "_attempts",
        "_outcome",
        "_span",
        "_telemetry",
        "_trigger",
    )

    def __init__(
        self, telemetry: OpenTelemetry, name: str, trigger: bool, agent_id: str | None
    ) -> None:
        from opentelemetry import trace

        self._telemetry = telemetry
        self._trigger = trigger
        self._attempts = 0
        self._outcome: str | None = None
        self._ambiguous: bool | None = None
        attributes: dict[str, Any] = {"voicehub.operation": name}
        if agent_id is not None:
            attributes["voicehub.agent.id"] = agent_id
        self._span: Span = telemetry._tracer.start_span(
            name,
            kind=trace.SpanKind.INTERNAL,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        )

    def __enter__(self) -> Operation:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        from opentelemetry.trace import Status, StatusCode

        span = self._span
        try:
            outcome, ambiguous = _outcome_of(exc, self._trigger)
            if self._outcome is not None:
                outcome = self._outcome
            if self._ambiguous is not None:
                ambiguous = self._ambiguous
            span.set_attribute("voicehub.outcome", outcome)
            span.set_attribute("voicehub.attempts", self._attempts)
            if self._trigger:
                span.set_attribute("voicehub.trigger.ambiguous", ambiguous)
                self._telemetry._triggers.add(1, {"voicehub.trigger.outcome": outcome})
            if exc is not None:
                span.set_attribute("error.type", _error_type(exc))
                span.set_status(Status(StatusCode.ERROR))
        finally:
            span.end()

    def request(self, method: str, template: str | None, url: object) -> Request:
        resend = self._attempts
        self._attempts += 1
        return _OTelRequest(self._telemetry, self._span, method, template, url, resend)

    def set_outcome(self, outcome: str, *, ambiguous: bool | None = None) -> None:
        self._outcome = outcome
        if ambiguous is not None:
            self._ambiguous = ambiguous

    def set_call(self, call_id: str) -> None:
        self._span.set_attribute("voicehub.call.id", call_id)

    def set_personal(self, to: str | None, context: Mapping[str, Any] | None) -> None:
        if not self._telemetry.record_personal_data:
            return
        if to is not None:
            self._span.set_attribute("voicehub.call.to", to)
        if context is not None:
            self._span.set_attribute(
                "voicehub.call.context", json.dumps(dict(context), default=str, sort_keys=True)
            )


class _OTelRequest(Request):
    __slots__ = ("_attributes", "_began", "_span", "_status", "_telemetry")

    def __init__(
        self,
        telemetry: OpenTelemetry,
        parent: Span,
        method: str,
        template: str | None,
        url: object,
        resend: int,
    ) -> None:
        from opentelemetry import trace

        parts = urlsplit(str(url))
        port = parts.port or (443 if parts.scheme == "https" else 80)
        host = parts.hostname or ""
        netloc = host if parts.port is None else f"{host}:{parts.port}"
        self._telemetry = telemetry
        self._status: int | None = None
        #: What the duration metric is broken down by (the conventions' set).
        self._attributes: dict[str, Any] = {
            "http.request.method": method,
            "server.address": host,
            "server.port": port,
        }
        if template is not None:
            self._attributes["url.template"] = template
        attributes: dict[str, Any] = {
            **self._attributes,
            # Never the query (a signed recording URL carries its token there),
            # never user info; the key is in a header, not the URL.
            "url.full": f"{parts.scheme}://{netloc}{parts.path}",
        }
        if resend:
            attributes["http.request.resend_count"] = resend
        self._span: Span = telemetry._tracer.start_span(
            method if template is None else f"{method} {template}",
            context=trace.set_span_in_context(parent),
            kind=trace.SpanKind.CLIENT,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        )
        self._began = time.perf_counter()

    def answered(self, status: int) -> None:
        self._status = status
        self._span.set_attribute("http.response.status_code", status)
        self._attributes["http.response.status_code"] = status

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        from opentelemetry.trace import Status, StatusCode

        elapsed = time.perf_counter() - self._began
        span = self._span
        error: str | None = None
        if self._status is not None and self._status >= 400:
            error = str(self._status)
        elif exc is not None:
            error = _error_type(exc)
        if error is not None:
            span.set_attribute("error.type", error)
            span.set_status(Status(StatusCode.ERROR))
            self._attributes["error.type"] = error
        span.end()
        self._telemetry._duration.record(elapsed, self._attributes)
