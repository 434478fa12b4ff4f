"""Telemetry from the real client, dispatcher and campaign, against the
simulator over real sockets, read back with the OpenTelemetry SDK's
in-memory exporter and reader; and telemetry off importing nothing."""

from __future__ import annotations

import contextlib
import csv
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from voicehub_async import AmbiguousTriggerError, RetryPolicy, VoiceHubClient
from voicehub_async.simulator import (
    Fault,
    LifecycleConfig,
    Simulator,
    SimulatorConfig,
    SimulatorThread,
)
from voicehub_async.telemetry import OpenTelemetry, Telemetry

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.trace import SpanKind, StatusCode
from test_telemetry import (
    CONTEXT,
    NUMBER,
    Otel,
    _assert_nothing_personal,
    _everything_recorded,
    make_otel,
)

TRIGGER = "/api/v1/calls/api-call"
STATUS = "/api/v1/calls/status/{call_id}/"


async def _no_sleep(_seconds: float) -> None:
    return None


def _client(sim: SimulatorThread | Simulator, otel: Otel, **options: Any) -> VoiceHubClient:
    return VoiceHubClient(
        sim.api_key,
        base_url=sim.base_url,
        telemetry=otel.telemetry,
        retry_policy=RetryPolicy(max_retries=3, sleep=_no_sleep),
        **options,
    )


def _attributes(span: Any) -> dict[str, Any]:
    return dict(span.attributes or {})


@pytest.fixture
def otel() -> Iterator[Otel]:
    yield make_otel()


async def test_trigger_spans_and_metrics(otel: Otel, voicehub_simulator: SimulatorThread) -> None:
    sim = voicehub_simulator
    async with _client(sim, otel) as client:
        call = await client.trigger_call(NUMBER, "agent-1", context=CONTEXT)
    request, operation = otel.finished()

    assert operation.name == "trigger_call" and operation.kind == SpanKind.INTERNAL
    assert _attributes(operation) == {
        "voicehub.operation": "trigger_call",
        "voicehub.agent.id": "agent-1",
        "voicehub.call.id": call.id,
        "voicehub.outcome": "placed",
        "voicehub.attempts": 1,
        "voicehub.trigger.ambiguous": False,
    }
    assert request.name == f"POST {TRIGGER}" and request.kind == SpanKind.CLIENT
    assert request.parent is not None and request.parent.span_id == operation.context.span_id
    assert _attributes(request) == {
        "http.request.method": "POST",
        "server.address": "127.0.0.1",
        "server.port": sim.port,
        "url.full": f"{sim.base_url}{TRIGGER}",
        "url.template": TRIGGER,
        "http.response.status_code": 200,
    }
    assert request.status.status_code == StatusCode.UNSET

    points = otel.points()
    ((attributes, duration),) = points["http.client.request.duration"]
    assert attributes == {
        "http.request.method": "POST",
        "server.address": "127.0.0.1",
        "server.port": sim.port,
        "url.template": TRIGGER,
        "http.response.status_code": 200,
    }
    assert duration.count == 1 and 0 < duration.sum < 30
    assert [(a, p.value) for a, p in points["voicehub.triggers"]] == [
        ({"voicehub.trigger.outcome": "placed"}, 1)
    ]
    _assert_nothing_personal(otel, sim.api_key)


async def test_a_scheduled_trigger(otel: Otel, voicehub_simulator: SimulatorThread) -> None:
    from datetime import datetime, timedelta, timezone

    later = datetime.now(timezone.utc) + timedelta(days=1)
    async with _client(voicehub_simulator, otel) as client:
        await client.trigger_call(NUMBER, "agent-1", scheduled_at=later)
    operation = otel.finished()[-1]
    assert _attributes(operation)["voicehub.outcome"] == "scheduled"
    assert [(a, p.value) for a, p in otel.points()["voicehub.triggers"]] == [
        ({"voicehub.trigger.outcome": "scheduled"}, 1)
    ]


async def test_a_retried_read(otel: Otel, voicehub_simulator: SimulatorThread) -> None:
    sim = voicehub_simulator
    async with _client(sim, otel) as client:
        call = await client.trigger_call(NUMBER, "agent-1", context=CONTEXT)
        otel.spans.clear()
        sim.inject(Fault.status(503), "status", times=1)
        read = await client.get_call(call.id)
    assert read.id == call.id
    first, second, operation = otel.finished()

    assert _attributes(operation) == {
        "voicehub.operation": "get_call",
        "voicehub.call.id": call.id,
        "voicehub.outcome": "ok",
        "voicehub.attempts": 2,
    }
    common = {
        "http.request.method": "GET",
        "server.address": "127.0.0.1",
        "server.port": sim.port,
        "url.full": f"{sim.base_url}/api/v1/calls/status/{call.id}/",
        "url.template": STATUS,
    }
    assert _attributes(first) == {**common, "http.response.status_code": 503, "error.type": "503"}
    assert first.status.status_code == StatusCode.ERROR
    assert _attributes(second) == {
        **common, "http.response.status_code": 200, "http.request.resend_count": 1,
    }  # fmt: skip
    assert second.status.status_code == StatusCode.UNSET
    assert first.name == second.name == f"GET {STATUS}"
    reads = {
        (a["http.response.status_code"], a.get("error.type")): p.count
        for a, p in otel.points()["http.client.request.duration"]
        if a["http.request.method"] == "GET"
    }
    assert reads == {(503, "503"): 1, (200, None): 1}
    _assert_nothing_personal(otel, sim.api_key)


async def test_an_ambiguous_trigger(otel: Otel, voicehub_simulator: SimulatorThread) -> None:
    sim = voicehub_simulator
    sim.inject(Fault.reset(create=True), "trigger", times=1)
    async with _client(sim, otel) as client:
        with pytest.raises(AmbiguousTriggerError):
            await client.trigger_call(NUMBER, "agent-1", context=CONTEXT)
    assert sim.trigger_count == 1 == sim.created_count  # placed, and never re-sent
    request, operation = otel.finished()

    attributes = _attributes(operation)
    assert attributes.pop("error.type") == "voicehub_async.errors.AmbiguousTriggerError"
    assert attributes == {
        "voicehub.operation": "trigger_call",
        "voicehub.agent.id": "agent-1",
        "voicehub.outcome": "ambiguous",
        "voicehub.attempts": 1,
        "voicehub.trigger.ambiguous": True,
    }
    assert operation.status.status_code == StatusCode.ERROR
    request_attributes = _attributes(request)
    error_type = request_attributes.pop("error.type")
    assert error_type.startswith("voicehub_async.errors.")  # a connection error, by class
    assert request_attributes == {
        "http.request.method": "POST",
        "server.address": "127.0.0.1",
        "server.port": sim.port,
        "url.full": f"{sim.base_url}{TRIGGER}",
        "url.template": TRIGGER,
    }
    assert [(a, p.value) for a, p in otel.points()["voicehub.triggers"]] == [
        ({"voicehub.trigger.outcome": "ambiguous"}, 1)
    ]
    _assert_nothing_personal(otel, sim.api_key)


async def test_a_dispatch_traces_each_input_once_with_its_resends(
    otel: Otel, voicehub_simulator: SimulatorThread
) -> None:
    sim = voicehub_simulator
    sim.inject(Fault.status(503), "trigger", times=1)
    seen: list[dict[str, Any]] = []
    async with _client(sim, otel) as client:
        requests = [
            {"to": f"+1415555{100 + i:04d}", "agent_id": "agent-1", "context": CONTEXT}
            for i in range(3)
        ]

        def during(_result: Any) -> None:
            seen.append(otel.points())  # the gauges, read while the dispatch runs

        results = [r async for r in client.dispatch(requests, rate_limit=50, on_result=during)]
    assert sorted(r.outcome for r in results) == ["queued"] * 3
    operations = [s for s in otel.finished() if s.kind == SpanKind.INTERNAL]
    assert sorted(_attributes(s)["voicehub.attempts"] for s in operations) == [1, 1, 2]
    assert {_attributes(s)["voicehub.outcome"] for s in operations} == {"placed"}
    resent = [
        s for s in otel.finished()
        if s.kind == SpanKind.CLIENT and "http.request.resend_count" in _attributes(s)
    ]  # fmt: skip
    assert [_attributes(s)["http.request.resend_count"] for s in resent] == [1]
    retried = next(s for s in operations if _attributes(s)["voicehub.attempts"] == 2)
    assert resent[0].parent is not None and resent[0].parent.span_id == retried.context.span_id
    assert [(a, p.value) for a, p in otel.points()["voicehub.triggers"]] == [
        ({"voicehub.trigger.outcome": "placed"}, 3)
    ]
    paces = [p.value for points in seen for a, p in points.get("voicehub.dispatch.pace", [])]
    assert paces and all(pace == 50 for pace in paces)
    lives = [p.value for points in seen for a, p in points.get("voicehub.calls.live", [])]
    assert lives and all(0 <= live <= 3 for live in lives)
    assert "voicehub.calls.live" not in otel.points()  # the watch ends with the dispatch
    _assert_nothing_personal(otel, sim.api_key)


class _Watching(Telemetry):
    """Records what is watched, reading each gauge once."""

    def __init__(self) -> None:
        self.watched: list[tuple[str, int, float | None]] = []

    def watch(
        self, source: Any, live: Callable[[], int], pace: Callable[[], float | None]
    ) -> contextlib.AbstractContextManager[None]:
        self.watched.append((source, live(), pace()))
        return contextlib.nullcontext()


async def test_a_campaign_is_watched(tmp_path: Path) -> None:
    fast = LifecycleConfig(queue_delay=(0.5, 1), ring_time=(0.5, 1), talk_time=(1, 2))
    contacts = tmp_path / "contacts.csv"
    with contacts.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["to"])
        writer.writerows([[f"+1415555{100 + i:04d}"] for i in range(3)])
    telemetry = _Watching()
    from voicehub_async.campaign import Campaign

    async with Simulator(SimulatorConfig(time_scale=200, lifecycle=fast)) as sim:
        async with VoiceHubClient(
            sim.api_key, base_url=sim.base_url, telemetry=telemetry
        ) as client:
            summary = await Campaign(
                client, contacts, agent_id="agent-1", poll_interval=0.05, max_poll_interval=0.2
            ).run()
    assert summary.total == 3
    assert [source for source, _, _ in telemetry.watched] == ["campaign", "dispatch"]
    assert all(live == 0 for _, live, _ in telemetry.watched)


def test_personal_data_when_opted_in(voicehub_simulator: SimulatorThread) -> None:
    import asyncio

    otel = make_otel(record_personal_data=True)
    assert isinstance(otel.telemetry, OpenTelemetry)

    async def go() -> None:
        async with _client(voicehub_simulator, otel) as client:
            await client.trigger_call(NUMBER, "agent-1", context=CONTEXT)

    asyncio.run(go())
    operation = otel.finished()[-1]
    assert _attributes(operation)["voicehub.call.to"] == NUMBER
    assert json.loads(_attributes(operation)["voicehub.call.context"]) == CONTEXT
    assert voicehub_simulator.api_key not in _everything_recorded(otel)  # the key: never


def test_off_a_round_trip_imports_no_opentelemetry() -> None:
    code = """
import asyncio, sys
from voicehub_async import VoiceHubClient
from voicehub_async.simulator import SimulatorThread

async def go(sim):
    async with VoiceHubClient(sim.api_key, base_url=sim.base_url) as client:
        call = await client.trigger_call("+14155550123", "agent-1")
        await client.get_call(call.id)
        async for _ in client.dispatch([{"to": "+14155550124", "agent_id": "agent-1"}]):
            pass

with SimulatorThread() as sim:
    asyncio.run(go(sim))
loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
assert not loaded, loaded
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
