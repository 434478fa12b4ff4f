"""Webhooks: parsing, refusals, repeats, order, and both ready-made servers.

Every delivery case runs over real sockets on 127.0.0.1 through three
servers: the aiohttp application, the ASGI app under uvicorn (skipped when
uvicorn is not installed), and the ASGI app behind a small aiohttp-to-ASGI
bridge defined here (so the ASGI path is exercised even without uvicorn).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

import aiohttp
import attrs
import pytest
from aiohttp import web

from voicehub_async import (
    AnalysisResultReady,
    CallStatus,
    CallStatusChanged,
    InvalidRequestError,
    RecordingsAvailable,
    RedirectError,
    StatusPoller,
    UnknownEvent,
    VoiceHubClient,
    VoiceHubError,
    WebhookASGIApp,
    WebhookError,
    WebhookReceiver,
    aiohttp_app,
    aiohttp_handler,
    parse_event,
)
from voicehub_async.simulator import LifecycleConfig, Simulator, SimulatorConfig
from voicehub_async.simulator.webhooks import WebhookSender
from voicehub_async.webhooks import EventDeduplicator, StatusOrderGuard, parse_timestamp

SECRET = "whsec_TEST_7d3f0a91c2"
WRONG = "whsec_WRONG_55aa11bb"
T0 = datetime(2030, 1, 1, 12, 0, 0, tzinfo=timezone.utc)


def body(**fields: Any) -> bytes:
    """A CallStatusChanged body; keyword arguments override or (None) remove fields."""
    data: dict[str, Any] = {
        "eventType": "CallStatusChanged",
        "eventId": "evt-1",
        "timestamp": "2030-01-01T12:00:00Z",
        "callId": "call-1",
        "status": "started",
        "agentId": "agent-7",
        "userNumber": "+15551234567",
        "agentNumber": "+15557654321",
    }
    for key, value in fields.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return json.dumps(data).encode()


def status_body(event_id: str, status: str, at: datetime, call_id: str = "call-1") -> bytes:
    return body(eventId=event_id, status=status, timestamp=at.isoformat(), callId=call_id)


HEADERS = {"x-webhook-secret": SECRET, "content-type": "application/json"}


@attrs.define
class FakePoller:
    """Stands in for StatusPoller: records what it was fed."""

    ingested: list[Any] = attrs.field(factory=list)

    def ingest(self, event: Any) -> None:
        self.ingested.append(event)

    @property
    def statuses(self) -> list[str]:
        return [e.status.name for e in self.ingested]


# -- parse_event ------------------------------------------------------------------------


def test_call_status_changed_parsed_and_typed() -> None:
    event = parse_event(body(status="In-Progress"), {"X-Webhook-Secret": SECRET}, SECRET)
    assert isinstance(event, CallStatusChanged)
    assert event.event_type == "CallStatusChanged"
    assert event.call_id == "call-1"
    assert event.event_id == "evt-1"
    assert event.status == CallStatus.IN_PROGRESS
    assert event.timestamp == T0
    assert (event.agent_id, event.user_number, event.agent_number) == (
        "agent-7",
        "+15551234567",
        "+15557654321",
    )
    assert event.raw["status"] == "In-Progress"
    # Frozen and slotted.
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        event.status = CallStatus.COMPLETED  # type: ignore[misc]
    assert not hasattr(event, "__dict__")


def test_header_names_compared_without_case() -> None:
    for name in ("x-webhook-secret", "X-Webhook-Secret", "X-WEBHOOK-SECRET"):
        assert isinstance(parse_event(body(), {name: SECRET}, SECRET), CallStatusChanged)


def test_recordings_and_analysis_events() -> None:
    rec = parse_event(
        body(eventType="RecordingsAvailable", status=None, recordings=["/r/1.wav", "/r/2.wav"]),
        HEADERS,
        SECRET,
    )
    assert isinstance(rec, RecordingsAvailable)
    assert rec.recordings == ("/r/1.wav", "/r/2.wav")
    single = parse_event(
        body(eventType="RecordingsAvailable", recordings="/r/1.wav"), HEADERS, SECRET
    )
    assert isinstance(single, RecordingsAvailable) and single.recordings == ("/r/1.wav",)
    analysis = parse_event(
        body(
            eventType="AnalysisResultReady",
            analysisId="an-1",
            analysisResultUrl="https://voicehub.dataqueue.ai/api/v1/analysis/an-1",
        ),
        HEADERS,
        SECRET,
    )
    assert isinstance(analysis, AnalysisResultReady)
    assert analysis.analysis_id == "an-1"
    assert analysis.analysis_result_url.endswith("/an-1")


def test_unknown_event_kept_not_refused() -> None:
    event = parse_event(body(eventType="TranscriptReady", transcript="hi"), HEADERS, SECRET)
    assert isinstance(event, UnknownEvent)
    assert event.event_type == "TranscriptReady"
    assert event.call_id == "call-1"
    assert event.raw["transcript"] == "hi"


def test_optional_fields_may_be_missing() -> None:
    event = parse_event(
        body(eventId=None, timestamp=None, agentId=None, userNumber=None, agentNumber=None),
        HEADERS,
        SECRET,
    )
    assert isinstance(event, CallStatusChanged)
    assert event.event_id is None and event.timestamp is None and event.agent_id is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2030-01-01T12:00:00Z", T0),
        ("2030-01-01T12:00:00", T0),  # naive: taken as UTC
        ("2030-01-01 12:00:00+00:00", T0),
        ("2030-01-01T14:00:00+02:00", T0),
        ("2030-01-01T14:00:00+0200", T0),
        ("2030-01-01T07:00:00-05", T0),
        ("2030-01-01T12:00:00.5Z", T0 + timedelta(milliseconds=500)),
        ("2030-01-01T12:00:00.123456789Z", T0 + timedelta(microseconds=123456)),
        ("2030-01-01T12:00Z", T0),
        ("2030-01-01", T0 - timedelta(hours=12)),
    ],
)
def test_timestamps_parsed_to_aware_datetimes(raw: str, expected: datetime) -> None:
    parsed = parse_timestamp(raw)
    assert parsed == expected
    assert parsed.tzinfo is not None


@pytest.mark.parametrize(
    "raw",
    [
        "yesterday",
        "2030-13-01T00:00:00Z",
        "2030-01-01T25:00:00Z",
        "2030-01-01T12:00:00+25:00",
        "1700000000",
        "",
    ],
)
def test_bad_timestamps_refused(raw: str) -> None:
    with pytest.raises(ValueError):
        parse_timestamp(raw)
    with pytest.raises(WebhookError) as info:
        parse_event(body(timestamp=raw), HEADERS, SECRET)
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("headers", "payload", "status", "reason"),
    [
        ({}, body(), 401, "missing x-webhook-secret"),
        ({"x-webhook-secret": WRONG}, body(), 401, "wrong x-webhook-secret"),
        ({"x-webhook-secret": ""}, body(), 401, "wrong x-webhook-secret"),
        (HEADERS, b"not json{", 400, "not JSON"),
        (HEADERS, b"\xff\xfe", 400, "not JSON"),
        (HEADERS, b"[1, 2]", 400, "not a JSON object"),
        (HEADERS, body(eventType=None), 400, "lacks eventType"),
        (HEADERS, body(callId=None), 400, "lacks callId"),
        (HEADERS, body(callId=""), 400, "lacks callId"),
        (HEADERS, body(status=None), 400, "lacks status"),
        (HEADERS, body(eventType="RecordingsAvailable", recordings=[1]), 400, "recordings"),
        (HEADERS, body(eventType="AnalysisResultReady"), 400, "lacks analysisResultUrl"),
    ],
)
def test_refusals(headers: dict[str, str], payload: bytes, status: int, reason: str) -> None:
    with pytest.raises(WebhookError) as info:
        parse_event(payload, headers, SECRET)
    assert isinstance(info.value, VoiceHubError)
    assert info.value.status == status
    assert reason in info.value.reason
    assert SECRET not in str(info.value) and WRONG not in str(info.value)


def test_wrong_secret_checked_before_the_body_is_read() -> None:
    with pytest.raises(WebhookError) as info:
        parse_event(b"not json{", {"x-webhook-secret": WRONG}, SECRET)
    assert info.value.status == 401


def test_secret_rotation_accepts_either() -> None:
    for given in (SECRET, "whsec_NEXT"):
        parse_event(body(), {"x-webhook-secret": given}, [SECRET, "whsec_NEXT"])
    with pytest.raises(WebhookError):
        parse_event(body(), {"x-webhook-secret": WRONG}, [SECRET, "whsec_NEXT"])


def test_empty_secret_is_a_configuration_error() -> None:
    with pytest.raises(ValueError):
        parse_event(body(), {"x-webhook-secret": ""}, "")
    with pytest.raises(ValueError):
        WebhookReceiver("")


# -- bounded memories -------------------------------------------------------------------


def test_deduplicator_is_bounded_by_count() -> None:
    dedup = EventDeduplicator(max_events=3, window=None)
    assert all(dedup.add(f"e{i}") for i in range(5))
    assert len(dedup) == 3
    assert "e0" not in dedup and "e4" in dedup
    assert not dedup.add("e4")
    assert dedup.add("e0")  # forgotten: counts as new again


def test_deduplicator_forgets_after_its_window() -> None:
    now = [0.0]
    dedup = EventDeduplicator(max_events=100, window=60.0, clock=lambda: now[0])
    assert dedup.add("a")
    now[0] = 30.0
    assert dedup.add("b")
    assert not dedup.add("a")
    now[0] = 61.0
    assert len(dedup) == 1 or "a" not in dedup
    assert dedup.add("a")
    assert not dedup.add("b")


def test_order_guard_is_bounded_and_undoable() -> None:
    guard = StatusOrderGuard(max_calls=2)
    for call in ("a", "b", "c"):
        guard.record(call, CallStatus.STARTED, T0)
    assert len(guard) == 2 and guard.last_status("a") is None
    undo = guard.record("c", CallStatus.COMPLETED, T0 + timedelta(seconds=5))
    assert guard.is_stale("c", CallStatus.IN_PROGRESS, T0 + timedelta(seconds=9))
    undo()
    assert guard.last_status("c") == CallStatus.STARTED


@pytest.mark.parametrize(
    ("last", "new", "stale"),
    [
        (("started", 10), ("in-progress", 20), False),
        (("in-progress", 20), ("started", 10), True),  # older: never backwards
        (("started", 10), ("in-progress", 10), False),  # same second, further along
        (("in-progress", 10), ("started", 10), True),  # same second, behind
        (("in-progress", 10), ("in-progress", 10), True),  # same status again
        (("completed", 10), ("in-progress", 30), True),  # nothing after a final status
        (("started", 10), ("some-new-status", 20), False),  # unknown statuses go forward
        (("in-progress", None), ("started", None), True),  # no timestamps: rank decides
        (("started", None), ("completed", 5), False),
    ],
)
def test_order_guard_rules(
    last: tuple[str, int | None], new: tuple[str, int | None], stale: bool
) -> None:
    def at(seconds: int | None) -> datetime | None:
        return None if seconds is None else T0 + timedelta(seconds=seconds)

    guard = StatusOrderGuard()
    guard.record("c", CallStatus(last[0]), at(last[1]))
    assert guard.is_stale("c", CallStatus(new[0]), at(new[1])) is stale


# -- the servers ---------------------------------------------------------------------------

Serve = Callable[[WebhookReceiver], contextlib.AbstractAsyncContextManager[str]]


@contextlib.asynccontextmanager
async def serve_aiohttp_app(app: web.Application, path: str = "/") -> AsyncIterator[str]:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        yield f"http://127.0.0.1:{port}{path}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def serve_with_aiohttp(receiver: WebhookReceiver) -> AsyncIterator[str]:
    async with serve_aiohttp_app(aiohttp_app(receiver, path="/hooks"), "/hooks") as url:
        yield url


@contextlib.asynccontextmanager
async def serve_with_uvicorn(receiver: WebhookReceiver) -> AsyncIterator[str]:
    uvicorn = pytest.importorskip("uvicorn")

    class QuietServer(uvicorn.Server):  # type: ignore[misc, name-defined]
        # Leave the test process's signal handlers alone.
        def capture_signals(self) -> contextlib.AbstractContextManager[None]:
            return contextlib.nullcontext()

    config = uvicorn.Config(
        WebhookASGIApp(receiver), host="127.0.0.1", port=0, lifespan="on", log_level="warning"
    )
    server = QuietServer(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("uvicorn stopped before starting")
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}/hooks"
    finally:
        server.should_exit = True
        await task


def asgi_bridge(app: WebhookASGIApp) -> web.Application:
    """Serve an ASGI app from aiohttp.web: the request becomes an ASGI scope,
    its body two ``http.request`` messages (to exercise ``more_body``)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        data = await request.read()
        messages = [
            {"type": "http.request", "body": data[: len(data) // 2], "more_body": True},
            {"type": "http.request", "body": data[len(data) // 2 :], "more_body": False},
        ]
        sent: list[Mapping[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: Any) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method,
            "scheme": "http",
            "path": request.path,
            "raw_path": request.raw_path.encode(),
            "query_string": request.query_string.encode(),
            "root_path": "",
            "headers": [(k.lower(), v) for k, v in request.raw_headers],
        }
        await app(scope, receive, send)
        start = sent[0]
        response = web.Response(status=start["status"], body=sent[1]["body"])
        for name, value in start["headers"]:
            if name.lower() != b"content-length":
                response.headers[name.decode()] = value.decode()
        return response

    bridge = web.Application()
    bridge.router.add_route("*", "/{tail:.*}", handle)
    return bridge


@contextlib.asynccontextmanager
async def serve_with_asgi_bridge(receiver: WebhookReceiver) -> AsyncIterator[str]:
    async with serve_aiohttp_app(asgi_bridge(WebhookASGIApp(receiver)), "/hooks") as url:
        yield url


@pytest.fixture(params=["aiohttp", "asgi-uvicorn", "asgi-bridge"])
def serve(request: pytest.FixtureRequest) -> Serve:
    return {
        "aiohttp": serve_with_aiohttp,
        "asgi-uvicorn": serve_with_uvicorn,
        "asgi-bridge": serve_with_asgi_bridge,
    }[request.param]


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def post(
    session: aiohttp.ClientSession,
    url: str,
    payload: bytes,
    headers: Mapping[str, str] = HEADERS,
) -> tuple[int, Any]:
    async with session.post(url, data=payload, headers=dict(headers)) as response:
        return response.status, await response.json(content_type=None)


# -- delivery cases, through every server ------------------------------------------------


async def test_event_handed_to_poller_and_callback(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    poller = FakePoller()
    seen: list[Any] = []

    async def on_event(event: Any) -> None:
        seen.append(event)

    receiver = WebhookReceiver(SECRET, poller=poller, on_event=on_event)
    async with serve(receiver) as url:
        assert await post(session, url, body()) == (200, {"status": "accepted"})
    assert [type(e) for e in poller.ingested] == [CallStatusChanged]
    assert poller.ingested[0].status == CallStatus.STARTED
    assert seen == poller.ingested
    assert receiver.stats.accepted == 1


@pytest.mark.parametrize(
    ("headers", "status", "reason"),
    [
        ({"content-type": "application/json"}, 401, "missing x-webhook-secret"),
        ({"x-webhook-secret": WRONG}, 401, "wrong x-webhook-secret"),
    ],
)
async def test_missing_or_wrong_secret_is_401_and_not_logged(
    serve: Serve,
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    headers: dict[str, str],
    status: int,
    reason: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    poller = FakePoller()
    receiver = WebhookReceiver(SECRET, poller=poller)
    async with serve(receiver) as url:
        answered, data = await post(session, url, body(), headers)
    assert answered == status
    assert reason in data["error"]
    assert poller.ingested == []
    assert receiver.stats.refused == 1
    assert reason in caplog.text  # logged ...
    assert SECRET not in caplog.text and WRONG not in caplog.text  # ... without the value
    assert SECRET not in repr(receiver)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"<html>not json</html>", "body is not JSON"),
        (b"", "body is not JSON"),
        (b'"a string"', "body is not a JSON object"),
        (body(eventType=None), "body lacks eventType"),
        (body(callId=None), "body lacks callId"),
        (body(timestamp="next tuesday"), "not ISO 8601"),
        # Hostile bodies, with the right secret: a 400, never a 500.
        (b"[" * 20000 + b"]" * 20000, "nested too deeply"),
        (b'{"eventType": "CallStatusChanged", "callId": "c", "deep": ' + b"[" * 20000 + b"}",
         "nested too deeply"),
        (b'{"eventType": "CallStatusChanged", "callId": ' + b"7" * 5000 + b"}", "not JSON"),
        (b'{"eventType": "CallStatusChanged", "callId": 1e999999}', "callId must be a string"),
        (b'{"eventType": "CallStatusChanged", "callId": "caf\xe9", "status": "x"}', "UTF-8"),
        (b"\xc3\x28", "UTF-8"),
        (body(timestamp="9" * 5000), "not ISO 8601"),
    ],
)
async def test_bad_bodies_are_400_with_a_reason(
    serve: Serve, session: aiohttp.ClientSession, payload: bytes, reason: str
) -> None:
    poller = FakePoller()
    receiver = WebhookReceiver(SECRET, poller=poller)
    async with serve(receiver) as url:
        answered, data = await post(session, url, payload)
    assert answered == 400
    assert reason in data["error"]
    assert poller.ingested == []


async def test_duplicates_answered_200_but_handed_on_once(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    poller = FakePoller()
    seen: list[Any] = []
    receiver = WebhookReceiver(SECRET, poller=poller, on_event=seen.append)
    async with serve(receiver) as url:
        first = await post(session, url, body())
        again = await post(session, url, body())
        third = await post(session, url, body())
    assert first == (200, {"status": "accepted"})
    assert again == third == (200, {"status": "duplicate"})
    assert len(poller.ingested) == 1 and len(seen) == 1
    assert receiver.stats.duplicate == 2


async def test_unknown_event_accepted_and_given_to_the_callback_only(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    poller = FakePoller()
    seen: list[Any] = []
    receiver = WebhookReceiver(SECRET, poller=poller, on_event=seen.append)
    async with serve(receiver) as url:
        answered = await post(session, url, body(eventType="SentimentScored", score=0.9))
    assert answered == (200, {"status": "accepted"})
    assert poller.ingested == []
    assert [type(e) for e in seen] == [UnknownEvent]
    assert seen[0].event_type == "SentimentScored" and seen[0].raw["score"] == 0.9


async def test_out_of_order_status_never_moves_backwards(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    poller = FakePoller()
    seen: list[Any] = []
    receiver = WebhookReceiver(SECRET, poller=poller, on_event=seen.append)
    t = [T0 + timedelta(seconds=s) for s in range(4)]
    async with serve(receiver) as url:
        # Happened: queued t0, started t1, in-progress t2, completed t3.
        # Arrive:  started, queued (late), completed, in-progress (late).
        answers = [
            await post(session, url, status_body("e-started", "started", t[1])),
            await post(session, url, status_body("e-queued", "queued", t[0])),
            await post(session, url, status_body("e-completed", "completed", t[3])),
            await post(session, url, status_body("e-progress", "in-progress", t[2])),
            # Another call is not affected by call-1's history.
            await post(session, url, status_body("e-other", "queued", t[0], call_id="call-2")),
        ]
    assert [data["status"] for _, data in answers] == [
        "accepted",
        "stale",
        "accepted",
        "stale",
        "accepted",
    ]
    assert all(status == 200 for status, _ in answers)  # VoiceHub must stop retrying
    assert [(e.call_id, e.status.name) for e in poller.ingested] == [
        ("call-1", "started"),
        ("call-1", "completed"),
        ("call-2", "queued"),
    ]
    assert seen == poller.ingested
    assert receiver.stats.stale == 2


async def test_a_failing_callback_gets_500_and_the_retry_is_processed(
    serve: Serve, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[Any] = []

    def on_event(event: Any) -> None:
        calls.append(event)
        if len(calls) == 1:
            raise RuntimeError("database down")

    poller = FakePoller()
    receiver = WebhookReceiver(SECRET, poller=poller, on_event=on_event)
    async with serve(receiver) as url:
        failed = await post(session, url, body())
        retried = await post(session, url, body())
    assert failed[0] == 500
    assert "database down" not in json.dumps(failed[1])  # no internals in the answer
    assert "database down" in caplog.text  # but logged
    assert retried == (200, {"status": "accepted"})  # not taken for a duplicate
    assert len(calls) == 2
    assert receiver.stats.failed == 1 and receiver.stats.accepted == 1


async def test_methods_other_than_post_refused(
    serve: Serve, session: aiohttp.ClientSession
) -> None:
    async with serve(WebhookReceiver(SECRET)) as url, session.get(url) as response:
        assert response.status == 405


# -- receiver details ---------------------------------------------------------------------


async def test_repeat_arriving_while_the_first_is_handed_on_waits_for_it() -> None:
    gate = asyncio.Event()
    outcomes = iter([False, True])
    handed: list[Any] = []

    async def on_event(event: Any) -> None:
        handed.append(event)
        await gate.wait()
        if not next(outcomes):
            raise RuntimeError("first attempt fails")

    receiver = WebhookReceiver(SECRET, on_event=on_event)
    first = asyncio.create_task(receiver.receive(body(), HEADERS))
    await asyncio.sleep(0)
    second = asyncio.create_task(receiver.receive(body(), HEADERS))
    await asyncio.sleep(0)
    assert not second.done()  # it waits instead of answering 200 too early
    gate.set()
    assert (await first).status == 500
    assert (await second).status == 500  # so VoiceHub retries it
    third = await receiver.receive(body(), HEADERS)
    assert third.status == 200 and third.outcome == "accepted"
    assert len(handed) == 2


async def test_async_poller_ingest_is_awaited() -> None:
    got: list[Any] = []

    class AsyncSink:
        async def ingest(self, event: CallStatusChanged) -> None:
            await asyncio.sleep(0)
            got.append(event)

    receiver = WebhookReceiver(SECRET, poller=AsyncSink())
    result = await receiver.receive(body(), HEADERS)
    assert result.outcome == "accepted" and got == [result.event]


async def test_aiohttp_handler_on_the_users_own_routes(session: aiohttp.ClientSession) -> None:
    poller = FakePoller()
    receiver = WebhookReceiver(SECRET, poller=poller)
    app = web.Application()
    app.router.add_post("/voicehub/events", aiohttp_handler(receiver))
    app.add_subapp("/sub", aiohttp_app(receiver, path="/events"))
    async with serve_aiohttp_app(app, "") as base:
        assert (await post(session, base + "/voicehub/events", body()))[0] == 200
        other = body(eventId="e2", callId="c2")
        assert (await post(session, base + "/sub/events", other))[0] == 200
    assert len(poller.ingested) == 2


async def test_oversized_bodies_refused(session: aiohttp.ClientSession) -> None:
    big = body(padding="x" * 2000)
    receiver = WebhookReceiver(SECRET)
    for app in (
        aiohttp_app(receiver, max_body=1000),
        asgi_bridge(WebhookASGIApp(receiver, max_body=1000)),
    ):
        async with (
            serve_aiohttp_app(app) as url,
            session.post(url, data=big, headers=HEADERS) as response,
        ):
            assert response.status == 413
    assert receiver.stats.accepted == 0


async def test_asgi_lifespan_and_websocket() -> None:
    app = WebhookASGIApp(WebhookReceiver(SECRET))
    inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return inbox.pop(0)

    async def send(message: Any) -> None:
        sent.append(message)

    await app({"type": "lifespan"}, receive, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    sent.clear()
    await app({"type": "websocket"}, receive, send)
    assert sent[0]["type"] == "websocket.close"


# -- the simulator's sender ------------------------------------------------------------------


def timeline(*statuses: str) -> list[tuple[datetime, str]]:
    return [(T0 + timedelta(seconds=i), s) for i, s in enumerate(statuses)]


def test_sender_builds_documented_bodies() -> None:
    sender = WebhookSender("http://127.0.0.1:9/", SECRET, seed=1)
    events = sender.call_events(
        "c1",
        timeline("Queued", "Started", "In-Progress", "Completed"),
        agent_id="a1",
        user_number="+15551234567",
        agent_number="+15557654321",
    )
    assert [e["eventType"] for e in events] == ["CallStatusChanged"] * 4 + ["RecordingsAvailable"]
    assert [e.get("status") for e in events[:4]] == [
        "queued",
        "started",
        "in-progress",
        "completed",
    ]
    assert events[-1]["recordings"] == ["/recordings/c1.wav"]
    assert len({e["eventId"] for e in events}) == 5
    for event in events:
        parsed = parse_event(json.dumps(event).encode(), {"x-webhook-secret": SECRET}, SECRET)
        assert parsed.call_id == "c1"
    assert events[0]["timestamp"] == "2030-01-01T12:00:00.000Z"
    # A call that did not complete has no recordings event.
    assert len(sender.call_events("c2", timeline("Queued", "Busy"))) == 2


def test_sender_plan_is_seeded_and_loses_nothing() -> None:
    def plan(seed: int) -> list[tuple[str, bool, bool]]:
        sender = WebhookSender(
            "http://127.0.0.1:9/", SECRET, repeat_rate=0.5, reorder_rate=0.5, seed=seed
        )
        events = sender.call_events("c", timeline("queued", "started", "in-progress", "completed"))
        return [(e["eventId"], rep, reo) for e, _, rep, reo in sender.plan(events)]

    assert plan(7) == plan(7)
    first = plan(7)
    originals = [item for item in first if not item[1]]
    assert len(originals) == 5  # every event once, plus repeats
    assert any(item[1] for item in first) and any(item[2] for item in first)


async def test_sender_with_repeats_and_reordering_through_the_receiver() -> None:
    poller = FakePoller()
    seen: list[Any] = []
    receiver = WebhookReceiver(SECRET, poller=poller, on_event=seen.append)
    statuses = ("queued", "started", "in-progress", "completed")
    async with (
        serve_with_aiohttp(receiver) as url,
        WebhookSender(url, SECRET, repeat_rate=1.0, reorder_rate=1.0, seed=3) as sender,
    ):
        for n in range(5):
            await sender.send_call(f"call-{n}", timeline(*statuses))
    assert all(d.ok for d in sender.deliveries)
    assert any(d.repeat for d in sender.deliveries) and any(d.reordered for d in sender.deliveries)
    assert receiver.stats.duplicate >= 5 * 5  # repeat_rate 1: every event twice
    assert receiver.stats.stale > 0
    for n in range(5):
        history = [e.status for e in poller.ingested if e.call_id == f"call-{n}"]
        ranks = [statuses.index(s.name) for s in history]
        assert ranks == sorted(ranks) and len(set(ranks)) == len(ranks)  # never backwards
        assert history[-1] == CallStatus.COMPLETED
        recordings = [
            e for e in seen if isinstance(e, RecordingsAvailable) and e.call_id == f"call-{n}"
        ]
        assert len(recordings) == 1


async def test_sender_retries_like_voicehub_until_accepted() -> None:
    answers = iter([503, 500, 200])

    async def flaky(request: web.Request) -> web.Response:
        assert request.headers["x-webhook-secret"] == SECRET
        return web.Response(status=next(answers))

    app = web.Application()
    app.router.add_post("/", flaky)
    async with (
        serve_aiohttp_app(app) as url,
        WebhookSender(url, SECRET, retries=2, retry_delay=0.0) as sender,
    ):
        result = await sender.send_events(sender.call_events("c", timeline("busy")))
    assert [d.answered for d in sender.deliveries] == [503, 500, 200]
    assert result[0].ok and result[0].attempt == 3
    assert sender.failed == 0
    assert SECRET not in repr(sender)


# -- the real StatusPoller -----------------------------------------------------------------------


async def test_real_poller_learns_statuses_from_webhooks_without_polling() -> None:
    # Calls stay queued for a long time on the simulator, and the poller's
    # first read is a minute away: any status it learns came by webhook.
    slow = LifecycleConfig(queue_delay=(3600, 3600), outcomes={"completed": 1})
    async with Simulator(SimulatorConfig(time_scale=1.0, lifecycle=slow)) as sim:
        async with VoiceHubClient(sim.api_key, base_url=sim.base_url) as client:
            call = await client.trigger_call("+14155552671", "agent-1")
            async with StatusPoller(client, min_interval=60.0, max_interval=60.0) as poller:
                poller.track(call)
                receiver = WebhookReceiver(SECRET, poller=poller)
                async with (
                    serve_with_asgi_bridge(receiver) as url,
                    WebhookSender(
                        url, SECRET, repeat_rate=0.5, reorder_rate=0.5, seed=11
                    ) as sender,
                ):
                    await sender.send_call(
                        call.id, timeline("queued", "started", "in-progress", "completed")
                    )
                final = await poller.wait(call.id, timeout=10)
                assert final.status == CallStatus.COMPLETED
                assert poller.stats.reads == 0
                assert poller.stats.ingested >= 1


# -- the simulator pushing webhooks ---------------------------------------------------------------

QUICK = LifecycleConfig(
    queue_delay=(1, 1), ring_time=(1, 1), talk_time=(1, 1), outcomes={"completed": 1}
)


async def test_simulator_pushes_webhooks_and_the_poller_need_not_poll() -> None:
    seen: list[Any] = []
    async with contextlib.AsyncExitStack() as stack:
        # The receiver's URL is needed to configure the simulator, which the
        # client and so the poller need: the poller is plugged in last.
        receiver = WebhookReceiver(SECRET, on_event=seen.append)
        url = await stack.enter_async_context(serve_with_aiohttp(receiver))
        config = SimulatorConfig(
            time_scale=20.0,
            lifecycle=QUICK,
            webhook_url=url,
            webhook_secret=SECRET,
            webhook_repeat_rate=0.5,
            webhook_reorder_rate=0.5,
        )
        sim = await stack.enter_async_context(Simulator(config))
        client = await stack.enter_async_context(VoiceHubClient(sim.api_key, base_url=sim.base_url))
        poller = await stack.enter_async_context(
            StatusPoller(client, min_interval=60.0, max_interval=60.0)
        )
        receiver.poller = poller
        calls = [await client.trigger_call(f"+1415555267{n}", "agent-1") for n in range(3)]
        for call in calls:
            poller.track(call)
        finals = await poller.wait_all(timeout=20)
        assert {c.new for c in finals.values()} == {CallStatus.COMPLETED}
        assert poller.stats.reads == 0  # every status came by webhook
        assert sim.webhooks is not None
        deliveries = sim.webhooks.sender.deliveries
        assert all(d.ok for d in deliveries)
        assert {d.call_id for d in deliveries} == {c.id for c in calls}
    recordings = [e for e in seen if isinstance(e, RecordingsAvailable)]
    assert sorted(e.call_id for e in recordings) == sorted(c.id for c in calls)
    assert receiver.stats.accepted == len(seen)


async def test_refused_webhooks_leave_the_poller_to_poll() -> None:
    # The simulator sends the wrong secret: every delivery is refused, and
    # the poller finds the outcome by reading the status instead.
    receiver = WebhookReceiver(SECRET)
    async with (
        serve_with_aiohttp(receiver) as url,
        Simulator(
            SimulatorConfig(time_scale=20.0, lifecycle=QUICK, webhook_url=url, webhook_secret=WRONG)
        ) as sim,
        VoiceHubClient(sim.api_key, base_url=sim.base_url) as client,
    ):
        async with StatusPoller(client, min_interval=0.05, max_interval=0.2) as poller:
            call = await client.trigger_call("+14155552671", "agent-1")
            poller.track(call)
            final = await poller.wait(call.id, timeout=20)
        assert final.status == CallStatus.COMPLETED
        assert poller.stats.reads > 0 and poller.stats.ingested == 0
    assert receiver.stats.refused > 0 and receiver.stats.accepted == 0


def test_simulator_config_needs_a_secret_with_a_url() -> None:
    with pytest.raises(ValueError, match="webhook_secret"):
        SimulatorConfig(webhook_url="http://127.0.0.1:9/hooks")
    with pytest.raises(ValueError, match="http"):
        SimulatorConfig(webhook_url="ftp://x/", webhook_secret=SECRET)
    assert SECRET not in repr(SimulatorConfig(webhook_url="http://h/", webhook_secret=SECRET))


# -- client.get_analysis ---------------------------------------------------------------------------


@pytest.fixture
async def analysis_api() -> AsyncIterator[tuple[str, list[Mapping[str, str]]]]:
    """A loopback 'API host' serving an analysis result and a redirect."""
    seen: list[Mapping[str, str]] = []

    async def analysis(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.json_response({"id": request.match_info["id"], "sentiment": "positive"})

    async def moved(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        raise web.HTTPFound("https://elsewhere.example.com/steal")

    app = web.Application()
    app.router.add_get("/api/v1/analysis/{id}", analysis)
    app.router.add_get("/moved", moved)
    async with serve_aiohttp_app(app, "") as base:
        yield base, seen


async def test_get_analysis_on_the_api_host_sends_the_key(
    analysis_api: tuple[str, list[Mapping[str, str]]], api_key: str
) -> None:
    base, seen = analysis_api
    async with VoiceHubClient(api_key, base_url=base) as client:
        assert await client.get_analysis(f"{base}/api/v1/analysis/an-1") == {
            "id": "an-1",
            "sentiment": "positive",
        }
        # A relative URL is taken relative to the API.
        assert (await client.get_analysis("/api/v1/analysis/an-2"))["id"] == "an-2"
        with pytest.raises(RedirectError):
            await client.get_analysis(f"{base}/moved")
    assert [h.get("x-dq-api-key") for h in seen] == [api_key] * 3


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example.com/api/v1/analysis/an-1",
        "http://127.0.0.1:1/api/v1/analysis/an-1",  # another port is another host
        "http://user@{host}/api/v1/analysis/an-1",
        "ftp://{host}/api/v1/analysis/an-1",
        "",
    ],
)
async def test_get_analysis_elsewhere_refused_before_sending(
    analysis_api: tuple[str, list[Mapping[str, str]]], api_key: str, url: str
) -> None:
    base, seen = analysis_api
    url = url.format(host=base.split("//", 1)[1])
    async with VoiceHubClient(api_key, base_url=base) as client:
        with pytest.raises(InvalidRequestError) as info:
            await client.get_analysis(url)
    assert info.value.field == "url"
    if url:
        assert url[:60] in str(info.value)
    assert api_key not in str(info.value)
    assert seen == []


async def test_get_analysis_https_only_off_loopback(api_key: str) -> None:
    async with VoiceHubClient(api_key) as client:  # the real, https base URL
        with pytest.raises(InvalidRequestError, match="https only"):
            await client.get_analysis("http://voicehub.dataqueue.ai/api/v1/analysis/an-1")
        with pytest.raises(InvalidRequestError, match="not on the API host"):
            await client.get_analysis("https://dataqueue.ai.evil.example/api/v1/analysis/1")


async def test_asgi_counts_streamed_bytes_without_content_length() -> None:
    receiver = WebhookReceiver(SECRET)
    app = WebhookASGIApp(receiver, max_body=100)
    chunks = [{"type": "http.request", "body": b"x" * 60, "more_body": True}] * 3
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return chunks.pop(0)

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "headers": [(b"x-webhook-secret", SECRET.encode())]}
    await app(scope, receive, send)
    assert sent[0]["status"] == 413
    assert len(chunks) == 1  # stopped reading once over the limit
    assert receiver.stats.refused == 0  # never got as far as the receiver


@pytest.mark.parametrize("declared", ["\u00b2", "9" * 5000, "-1", "12 34", ""])
async def test_asgi_odd_content_lengths_never_raise(declared: str) -> None:
    # "\u00b2" (a latin-1 byte) passes str.isdigit() but not int(); 5,000
    # digits are more than int() converts. Neither may escape the app.
    app = WebhookASGIApp(WebhookReceiver(SECRET), max_body=1000)
    messages = [{"type": "http.request", "body": body(), "more_body": False}]
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: Any) -> None:
        sent.append(message)

    headers = [
        (b"x-webhook-secret", SECRET.encode()),
        (b"content-length", declared.encode("latin-1")),
    ]
    await app({"type": "http", "method": "POST", "headers": headers}, receive, send)
    assert sent[0]["status"] in (200, 413)
    assert sent[0]["status"] == (413 if declared == "9" * 5000 else 200)


async def test_an_unforeseen_parsing_failure_is_a_400_not_a_500(
    serve: Serve, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    import voicehub_async.webhooks.receiver as receiver_module

    def broken(*args: Any) -> Any:
        raise RuntimeError("a bug in the parser")

    monkeypatch.setattr(receiver_module, "parse_event", broken)
    receiver = WebhookReceiver(SECRET)
    async with serve(receiver) as url:
        answered, data = await post(session, url, body())
    assert answered == 400 and "cannot be parsed" in data["error"]
    assert receiver.stats.refused == 1


async def test_a_receiver_bug_is_answered_500_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    receiver = WebhookReceiver(SECRET)

    async def broken(*args: Any) -> Any:
        raise RuntimeError("a bug in the receiver")

    monkeypatch.setattr(receiver, "receive", broken)
    app = WebhookASGIApp(receiver)
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body(), "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    await app({"type": "http", "method": "POST", "headers": []}, receive, send)
    assert sent[0]["status"] == 500
