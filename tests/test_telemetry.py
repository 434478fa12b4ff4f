"""Telemetry: the module's interface with the OpenTelemetry SDK's in-memory
span exporter and metric reader, checked attribute by attribute; and the
promise that telemetry off imports nothing."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import attrs
import pytest

from voicehub_async.errors import AmbiguousTriggerError, APITimeoutError
from voicehub_async.telemetry import (
    NO_TELEMETRY,
    OpenTelemetry,
    Telemetry,
    telemetry_for,
)

otel_sdk = pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode  # noqa: E402

KEY = "sk-live-0123456789abcdef"
NUMBER = "+14155550123"
CONTEXT = {"customer_name": "Ada Lovelace", "order": "A-1815"}
BASE = "https://voicehub.example.com"
TRIGGER = "/api/v1/calls/api-call"
STATUS = "/api/v1/calls/status/{call_id}/"


@attrs.frozen
class Otel:
    telemetry: OpenTelemetry
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def points(self) -> dict[str, list[tuple[dict[str, Any], Any]]]:
        """Metric name -> [(attributes, data point)]."""
        data = self.metrics.get_metrics_data()
        found: dict[str, list[tuple[dict[str, Any], Any]]] = {}
        if data is None:  # nothing to report
            return found
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                assert scope.scope.name == "voicehub_async"
                for metric in scope.metrics:
                    found.setdefault(metric.name, []).extend(
                        (dict(p.attributes or {}), p) for p in metric.data.data_points
                    )
        return found


def make_otel(**options: Any) -> Otel:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    telemetry = OpenTelemetry(
        tracer_provider=tracer_provider, meter_provider=meter_provider, **options
    )
    return Otel(telemetry, spans, reader)


@pytest.fixture
def otel() -> Iterator[Otel]:
    yield make_otel()


def _everything_recorded(otel: Otel) -> str:
    """Every span name, attribute, event and status text and every metric
    point's attributes, as one string to search for what must not be there."""
    parts: list[str] = []
    for span in otel.finished():
        parts += [span.name, json.dumps(dict(span.attributes or {}), default=str)]
        parts += [str(span.status.description)]
        parts += [json.dumps(dict(e.attributes or {}), default=str) for e in span.events]
    for name, points in otel.points().items():
        parts += [name] + [json.dumps(attrs_, default=str) for attrs_, _ in points]
    return "\n".join(parts)


def _assert_nothing_personal(otel: Otel, key: str = KEY) -> None:
    recorded = _everything_recorded(otel)
    assert key not in recorded
    assert NUMBER not in recorded and "4155550123" not in recorded
    for value in CONTEXT.values():
        assert value not in recorded


# -- the interface ----------------------------------------------------------------------


def test_a_placed_trigger(otel: Otel) -> None:
    with otel.telemetry.operation("trigger_call", trigger=True, agent_id="agent-1") as op:
        op.set_personal(NUMBER, CONTEXT)  # not opted in: dropped
        with op.request("POST", TRIGGER, f"{BASE}{TRIGGER}") as request:
            request.answered(200)
        op.set_call("call-1")
    request_span, operation_span = otel.finished()

    assert operation_span.name == "trigger_call"
    assert operation_span.kind == SpanKind.INTERNAL
    assert operation_span.parent is None
    assert dict(operation_span.attributes or {}) == {
        "voicehub.operation": "trigger_call",
        "voicehub.agent.id": "agent-1",
        "voicehub.call.id": "call-1",
        "voicehub.outcome": "placed",
        "voicehub.attempts": 1,
        "voicehub.trigger.ambiguous": False,
    }
    assert operation_span.status.status_code == StatusCode.UNSET

    assert request_span.name == f"POST {TRIGGER}"
    assert request_span.kind == SpanKind.CLIENT
    assert request_span.parent is not None
    assert request_span.parent.span_id == operation_span.context.span_id
    assert dict(request_span.attributes or {}) == {
        "http.request.method": "POST",
        "server.address": "voicehub.example.com",
        "server.port": 443,
        "url.full": f"{BASE}{TRIGGER}",
        "url.template": TRIGGER,
        "http.response.status_code": 200,
    }
    assert request_span.status.status_code == StatusCode.UNSET

    points = otel.points()
    ((duration_attrs, duration),) = points["http.client.request.duration"]
    assert duration_attrs == {
        "http.request.method": "POST",
        "server.address": "voicehub.example.com",
        "server.port": 443,
        "url.template": TRIGGER,
        "http.response.status_code": 200,
    }
    assert duration.count == 1 and duration.sum >= 0
    assert list(duration.explicit_bounds)[:3] == [0.005, 0.01, 0.025]
    assert [(a, p.value) for a, p in points["voicehub.triggers"]] == [
        ({"voicehub.trigger.outcome": "placed"}, 1)
    ]
    _assert_nothing_personal(otel)


def test_a_retried_read(otel: Otel) -> None:
    url = "http://127.0.0.1:8080/api/v1/calls/status/call-7/?x=secret-token"
    with otel.telemetry.operation("get_call") as op:
        with op.request("GET", STATUS, url) as first:
            first.answered(503)
        with pytest.raises(APITimeoutError), op.request("GET", STATUS, url):
            raise APITimeoutError("read timed out", sent=True)
        with op.request("GET", STATUS, url) as third:
            third.answered(200)
        op.set_call("call-7")
    *requests, operation = otel.finished()

    assert dict(operation.attributes or {}) == {
        "voicehub.operation": "get_call",
        "voicehub.call.id": "call-7",
        "voicehub.outcome": "ok",
        "voicehub.attempts": 3,
    }
    assert [r.name for r in requests] == [f"GET {STATUS}"] * 3
    common = {
        "http.request.method": "GET",
        "server.address": "127.0.0.1",
        "server.port": 8080,
        "url.full": "http://127.0.0.1:8080/api/v1/calls/status/call-7/",  # no query
        "url.template": STATUS,
    }
    assert [dict(r.attributes or {}) for r in requests] == [
        {**common, "http.response.status_code": 503, "error.type": "503"},
        {**common, "http.request.resend_count": 1,
         "error.type": "voicehub_async.errors.APITimeoutError"},
        {**common, "http.request.resend_count": 2, "http.response.status_code": 200},
    ]  # fmt: skip
    assert [r.status.status_code for r in requests] == [
        StatusCode.ERROR, StatusCode.ERROR, StatusCode.UNSET,
    ]  # fmt: skip
    assert all(r.parent and r.parent.span_id == operation.context.span_id for r in requests)
    assert all(r.status.description is None for r in requests)  # no error text
    assert not any(r.events for r in requests)  # no exception event (its message)

    durations = {
        (a.get("http.response.status_code"), a.get("error.type")): p.count
        for a, p in otel.points()["http.client.request.duration"]
    }
    assert durations == {
        (503, "503"): 1,
        (None, "voicehub_async.errors.APITimeoutError"): 1,
        (200, None): 1,
    }
    assert "voicehub.triggers" not in otel.points()  # a read is not a trigger
    assert "secret-token" not in _everything_recorded(otel)


def test_an_ambiguous_trigger(otel: Otel) -> None:
    with pytest.raises(AmbiguousTriggerError):
        with otel.telemetry.operation("trigger_call", trigger=True, agent_id="agent-1") as op:
            op.set_personal(NUMBER, CONTEXT)
            try:
                with op.request("POST", TRIGGER, f"{BASE}{TRIGGER}"):
                    # An error's text may hold anything: it is never recorded.
                    raise APITimeoutError(f"no answer for {NUMBER} ({KEY})", sent=True)
            except APITimeoutError as exc:
                raise AmbiguousTriggerError(exc, attempts=1) from exc
    request, operation = otel.finished()
    assert dict(operation.attributes or {}) == {
        "voicehub.operation": "trigger_call",
        "voicehub.agent.id": "agent-1",
        "voicehub.outcome": "ambiguous",
        "voicehub.attempts": 1,
        "voicehub.trigger.ambiguous": True,
        "error.type": "voicehub_async.errors.AmbiguousTriggerError",
    }
    assert operation.status.status_code == StatusCode.ERROR
    assert operation.status.description is None
    assert dict(request.attributes or {})["error.type"] == "voicehub_async.errors.APITimeoutError"
    assert "http.response.status_code" not in (request.attributes or {})
    assert [(a, p.value) for a, p in otel.points()["voicehub.triggers"]] == [
        ({"voicehub.trigger.outcome": "ambiguous"}, 1)
    ]
    _assert_nothing_personal(otel)


def test_an_explicit_outcome_wins(otel: Otel) -> None:
    with otel.telemetry.operation("trigger_call", trigger=True) as op:
        op.set_outcome("scheduled", ambiguous=False)
    (span,) = otel.finished()
    assert (span.attributes or {})["voicehub.outcome"] == "scheduled"
    assert [(a, p.value) for a, p in otel.points()["voicehub.triggers"]] == [
        ({"voicehub.trigger.outcome": "scheduled"}, 1)
    ]


async def test_a_trigger_cancelled_in_flight_may_have_been_placed(otel: Otel) -> None:
    async def trigger() -> None:
        with otel.telemetry.operation("trigger_call", trigger=True) as op:
            with op.request("POST", TRIGGER, f"{BASE}{TRIGGER}"):
                await asyncio.sleep(10)

    task = asyncio.ensure_future(trigger())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    request, operation = otel.finished()
    assert (operation.attributes or {})["voicehub.outcome"] == "cancelled"
    assert (operation.attributes or {})["voicehub.trigger.ambiguous"] is True
    assert (request.attributes or {})["error.type"] == "asyncio.exceptions.CancelledError"


async def test_concurrent_operations_keep_their_own_requests(otel: Otel) -> None:
    async def read(call_id: str) -> None:
        with otel.telemetry.operation("get_call") as op:
            for _ in range(2):
                with op.request("GET", STATUS, f"{BASE}/api/v1/calls/status/{call_id}/") as r:
                    await asyncio.sleep(0.001)
                    r.answered(200)
            op.set_call(call_id)

    await asyncio.gather(*(read(f"call-{i}") for i in range(5)))
    spans = otel.finished()
    operations = {s.context.span_id: s for s in spans if s.kind == SpanKind.INTERNAL}
    for span in spans:
        if span.kind == SpanKind.CLIENT:
            assert span.parent is not None
            parent = operations[span.parent.span_id]
            call_id = (parent.attributes or {})["voicehub.call.id"]
            assert str((span.attributes or {})["url.full"]).endswith(f"/{call_id}/")
    assert len(operations) == 5 and len(spans) == 15


def test_an_operation_nests_under_the_current_span(otel: Otel) -> None:
    """In a web backend, the trigger shows up under the web request's span."""
    tracer = otel.telemetry._tracer
    with tracer.start_as_current_span("POST /calls") as web_request:
        with otel.telemetry.operation("get_call") as op:
            with op.request("GET", STATUS, f"{BASE}/api/v1/calls/status/c/") as r:
                r.answered(200)
    request, operation, web = otel.finished()
    assert web.context.span_id == web_request.get_span_context().span_id
    assert operation.parent is not None and operation.parent.span_id == web.context.span_id
    assert request.parent is not None and request.parent.span_id == operation.context.span_id
    assert request.context.trace_id == web.context.trace_id


def test_gauges_for_dispatches_and_campaigns(otel: Otel) -> None:
    live = {"a": 12, "b": 3, "c": 30}
    reads: list[str] = []

    def count(name: str) -> int:
        reads.append(name)
        return live[name]

    telemetry = otel.telemetry
    with telemetry.watch("dispatch", lambda: count("a"), lambda: 25.0):
        with telemetry.watch("dispatch", lambda: count("b"), lambda: None):  # unpaced
            with telemetry.watch("campaign", lambda: count("c"), lambda: 2.5):
                assert reads == []  # nothing is read until metrics are collected
                points = otel.points()
        live["a"] = 7
        after = otel.points()
    gone = otel.points()

    assert {a["voicehub.source"]: p.value for a, p in points["voicehub.calls.live"]} == {
        "dispatch": 15, "campaign": 30,
    }  # fmt: skip
    assert {a["voicehub.source"]: p.value for a, p in points["voicehub.dispatch.pace"]} == {
        "dispatch": 25.0, "campaign": 2.5,
    }  # fmt: skip
    assert [(a, p.value) for a, p in after["voicehub.calls.live"]] == [
        ({"voicehub.source": "dispatch"}, 7)
    ]
    assert "voicehub.calls.live" not in gone or not gone["voicehub.calls.live"]
    with NO_TELEMETRY.watch("dispatch", lambda: count("a"), lambda: 1.0):
        pass


def test_personal_data_only_when_opted_in() -> None:
    otel = make_otel(record_personal_data=True)
    with otel.telemetry.operation("trigger_call", trigger=True) as op:
        op.set_personal(NUMBER, CONTEXT)
    (span,) = otel.finished()
    attributes = dict(span.attributes or {})
    assert attributes["voicehub.call.to"] == NUMBER
    assert json.loads(str(attributes["voicehub.call.context"])) == CONTEXT


# -- choosing, and off -------------------------------------------------------------------------


def test_telemetry_for() -> None:
    assert telemetry_for() is NO_TELEMETRY
    assert telemetry_for(False) is NO_TELEMETRY
    assert not NO_TELEMETRY.enabled
    mine = make_otel().telemetry
    assert telemetry_for(mine) is mine
    assert isinstance(telemetry_for(True), OpenTelemetry)
    given = telemetry_for(tracer_provider=TracerProvider())  # a provider asks for it
    assert isinstance(given, OpenTelemetry) and given.enabled
    with pytest.raises(ValueError, match="not both"):
        telemetry_for(mine, tracer_provider=TracerProvider())
    assert isinstance(NO_TELEMETRY, Telemetry)


def test_off_imports_no_opentelemetry() -> None:
    code = """
import sys
from voicehub_async.telemetry import telemetry_for
t = telemetry_for(False)
with t.operation("trigger_call", trigger=True, agent_id="a") as op:
    with op.request("POST", "/x", "https://h/x") as r:
        r.answered(200)
    op.set_call("c"); op.set_personal("+14155550123", {"a": 1}); op.set_outcome("placed")
with t.watch("dispatch", lambda: 3, lambda: 2.0):
    pass
loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
assert not loaded, loaded
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_without_the_sdk_installed_the_message_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    with pytest.raises(ImportError, match=r"voicehub-async\[otel\]"):
        telemetry_for(True)
