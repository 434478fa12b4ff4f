"""The fake VoiceHub server: an aiohttp.web application and its state.

Design constraints, because benchmarks push thousands of triggers a second
through it:

* No task or timer per call. A call draws its whole timeline (queue delay,
  ring time, talk time, outcome) when it is created and its status is
  computed from the clock when somebody reads it.
* Calls and log records are slotted classes; the trigger log can be switched
  off (``SimulatorConfig.record_triggers``) leaving only counters.
* Every optional behaviour (latency, rate limit, random or scripted faults)
  is skipped with one cheap test when it is not configured.

The server creates calls and answers the endpoints; the pieces it applies
live beside it: the call model (:mod:`.calls`), which fault a request meets
and how a fault answers (:mod:`.faults`), and the live calls per key
(:mod:`.live`) behind ``max_live_calls`` and ``TriggerRecord.live_calls``.

State is only mutated from the event loop serving the app, except for
:meth:`Simulator.inject` (guarded by a lock) and :meth:`Simulator.set_status`
/ :meth:`Simulator.set_outcome` (attribute stores, and the live-call count's
lock), so tests may call those from another thread (see
:class:`~voicehub_async.simulator.thread.SimulatorThread`).
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import json
import random
import re
import struct
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from types import TracebackType
from typing import Any

import attrs
from aiohttp import web

from .calls import STATUSES, SimulatedCall, canonical_status
from .config import OUTCOMES, SimulatorConfig
from .faults import AnyFault, DelayFault, FaultEngine, ResetFault, fault_response, reset_connection
from .live import LiveCalls
from .webhooks import SimulatorWebhooks

__all__ = [
    "CONCURRENT_LIMIT_MESSAGE",
    "SIMULATOR_APP_KEY",
    "STATUSES",
    "SimulatedCall",
    "Simulator",
    "TriggerRecord",
    "canonical_status",
]

_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_SCHEDULED_AT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}")

#: The message of the 429 answered when a key's live calls reach
#: ``FaultConfig.max_live_calls`` (Bandwidth's wording).
CONCURRENT_LIMIT_MESSAGE = "concurrent call limit exceeded"

#: Real seconds a stopping server lets in-flight requests finish.
_SHUTDOWN_TIMEOUT = 0.5


@attrs.define
class TriggerRecord:
    """One authenticated trigger request, as received and as answered.

    Field values are what the client sent (strings; a non-string JSON value is
    kept JSON-encoded; None when absent). ``call_id``/``created`` tell whether
    a call was placed, ``answered_status`` the HTTP status answered (None when
    the connection was dropped or the answer never went out), ``received_at``
    a reading of the simulator's monotonic clock. ``live_calls`` is how many
    calls of the trigger's API key were live (created, not yet in a final
    status) when it was handled, counting the call it created, if any: a
    client that keeps at most N calls live never shows more than N here.
    """

    to: str | None
    agent_id: str | None
    context: Any
    scheduled_at: str | None
    from_number: str | None
    received_at: float
    call_id: str | None = None
    created: bool = False
    answered_status: int | None = None
    live_calls: int = 0


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)


def _json_response(status: int, data: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(data).encode(),
        content_type="application/json",
        headers=headers,
    )


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return _json_response(status, {"message": message}, headers)


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


class Simulator:
    """A running fake VoiceHub server and everything it observed.

    ``port=0`` binds a free port; read it back from :attr:`port` or
    :attr:`base_url` once started. ``clock`` (monotonic, real seconds) drives
    lifecycles and rate limiting; ``wall_clock`` (Unix seconds) is what
    ``scheduledAt`` is checked against; pass a
    :class:`~voicehub_async.simulator.clock.ManualClock` for both to make a
    test deterministic.

    Use ``async with Simulator(...) as sim`` or :meth:`start`/:meth:`stop`;
    to embed the endpoints in another application, mount :attr:`app`
    (a started Simulator is not required for that). A Simulator is started
    at most once.

    Observations: :attr:`triggers` (the log), :attr:`calls` (id → call),
    :attr:`request_count` (per endpoint name, including refused requests),
    :attr:`trigger_count`/:attr:`created_count`, :meth:`calls_placed_to`,
    :meth:`placed_counts`, :meth:`live_calls` and :meth:`max_live_seen`.
    ``trigger_sink``, when given, is called with each trigger's
    :class:`TriggerRecord` once it is answered (or dropped), in the order
    answers go out: ``voicehub simulate --trigger-log`` writes them to a file.
    """

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        trigger_sink: Callable[[TriggerRecord], None] | None = None,
    ) -> None:
        self.config = config = config if config is not None else SimulatorConfig()
        self.host = host
        self._requested_port = port
        self._clock = clock
        self._wall_clock = wall_clock

        # Separate generators so that, e.g., enabling faults does not change
        # which call ids or lifecycles a seeded run produces.
        seed = config.seed
        self._ids_rng = random.Random(None if seed is None else f"{seed}:ids")
        self._lifecycle_rng = random.Random(None if seed is None else f"{seed}:lifecycle")
        self._fault_rng = random.Random(None if seed is None else f"{seed}:faults")

        #: Calls created so far, by id.
        self.calls: dict[str, SimulatedCall] = {}
        #: Authenticated trigger requests, in arrival order (empty when
        #: ``config.record_triggers`` is False).
        self.triggers: list[TriggerRecord] = []
        #: Requests received per endpoint name (``trigger``, ``status``,
        #: ``recordings``, ``download``), refused ones included.
        self.request_count: collections.Counter[str] = collections.Counter()
        #: Authenticated trigger requests (kept even without the log).
        self.trigger_count = 0
        #: Calls created.
        self.created_count = 0
        self._placed: collections.Counter[str] = collections.Counter()

        self._api_keys = config.api_keys
        self._time_scale = config.time_scale
        self._sink = trigger_sink
        # A record per trigger for the log, the sink, or both.
        self._record = config.record_triggers or trigger_sink is not None
        self._keep_log = config.record_triggers
        self._max_live_calls = config.faults.max_live_calls
        # Live calls are counted when a cap needs them or the log samples them
        # (a benchmark with neither pays nothing).
        self._live: LiveCalls | None = (
            LiveCalls(self._status, clock, config.time_scale)
            if self._record or self._max_live_calls is not None
            else None
        )
        self._max_live: collections.Counter[str] = collections.Counter()

        life = config.lifecycle
        self._queue_range = life.queue_delay
        self._ring_range = life.ring_time
        self._talk_range = life.talk_time
        self._outcome_names = [name.capitalize() for name, _ in life.outcomes]
        self._outcome_cum: list[float] = []
        total = 0.0
        for _, weight in life.outcomes:
            total += weight
            self._outcome_cum.append(total)

        #: Decides which fault, if any, each request meets (see
        #: :mod:`voicehub_async.simulator.faults`).
        self.faults = FaultEngine(config.faults, self._fault_rng, clock)
        self._sleepers: set[asyncio.Task[Any]] = set()
        self._wav: bytes | None = None
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._started = False
        #: Pushes webhook events when ``config.webhook_url`` is set (see
        #: :mod:`voicehub_async.simulator.webhooks`); None otherwise.
        self.webhooks = SimulatorWebhooks.from_config(config)

        #: The aiohttp application serving the API (mountable elsewhere).
        self.app = self._make_app()

    # ------------------------------------------------------------------ life

    def _make_app(self) -> web.Application:
        app = web.Application()
        app[SIMULATOR_APP_KEY] = self
        app.router.add_post("/api/v1/calls/api-call", self._handle_trigger)
        app.router.add_get("/api/v1/calls/status/{call_id}/", self._handle_status)
        app.router.add_get("/api/v1/calls/e2e/{call_id}/recordings", self._handle_recordings)
        app.router.add_get("/recordings/{call_id}.wav", self._handle_download)
        return app

    async def start(self) -> None:
        """Bind and start serving; raises OSError if the port is taken."""
        if self._started:
            raise RuntimeError("a Simulator can only be started once")
        self._started = True
        # No access log: formatting a line per request would dominate the
        # cost of a benchmark. A short shutdown timeout: requests held back
        # by a delay fault must not stall a test's teardown.
        runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, shutdown_timeout=_SHUTDOWN_TIMEOUT
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self._requested_port, backlog=1024)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        """Stop serving (idempotent); delayed answers still pending are dropped."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        for task in list(self._sleepers):
            task.cancel()
        await runner.cleanup()
        if self.webhooks is not None:
            await self.webhooks.aclose()

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        """The bound port (only once started)."""
        if self._port is None:
            raise RuntimeError("the simulator is not started")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://host:port`` to give a client as its base URL."""
        return f"http://{_url_host(self.host)}:{self.port}"

    @property
    def api_key(self) -> str:
        """The (primary) API key the simulator accepts."""
        return self.config.api_key

    # --------------------------------------------------------- test controls

    def inject(self, fault: AnyFault, endpoint: str = "any", times: int | None = 1) -> None:
        """Queue ``fault`` for the next ``times`` requests to ``endpoint``.

        ``endpoint`` is ``trigger``, ``status``, ``recordings``, ``download``
        or ``any``. Queued faults are consumed in the order injected, each
        request taking the first one that matches it; ``times=None`` keeps the
        fault until :meth:`clear_faults`. Scripted faults apply to authenticated
        requests only (a 401 is answered first) and come after the rate limit.
        Thread-safe.
        """
        self.faults.inject(fault, endpoint, times)

    def clear_faults(self) -> None:
        """Forget every scripted fault not consumed yet. Thread-safe."""
        self.faults.clear()

    @property
    def pending_faults(self) -> int:
        """How many scripted fault entries are still queued."""
        return self.faults.pending

    def set_status(self, call_id: str, status: str | None) -> None:
        """Pin a call's status from now on (None resumes its timeline).

        Known statuses are matched without case and answered capitalised; any
        other string is answered as given, to test tolerance of undocumented
        statuses. Raises KeyError for an unknown call.
        """
        call = self._call(call_id)
        call.forced_status = None if status is None else canonical_status(status)
        if self._live is not None:
            self._live.status_changed(call)

    def set_outcome(self, call_id: str, outcome: str) -> None:
        """Change how a call will end, keeping its timeline (one of
        ``completed``, ``unanswered``, ``busy``, ``failed``, ``cancelled``)."""
        if outcome.lower() not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}; expected one of {sorted(OUTCOMES)}")
        call = self._call(call_id)
        call.outcome = outcome.lower().capitalize()
        if self._live is not None:
            self._live.status_changed(call)

    def status_of(self, call_id: str) -> str:
        """A call's current status, as the status endpoint would answer it."""
        return self._status(self._call(call_id))

    def live_calls(self, api_key: str | None = None) -> int:
        """How many calls of ``api_key`` (default: the primary key) are live
        now: created, and not yet in a final status."""
        if self._live is None:
            raise RuntimeError(
                "live calls are not counted without the trigger log "
                "(record_triggers=False) or max_live_calls"
            )
        return self._live.count(self.config.api_key if api_key is None else api_key)

    def max_live_seen(self, api_key: str | None = None) -> int:
        """The most calls of ``api_key`` (default: the primary key) found live
        at any trigger, counting the call that trigger created (the largest
        :attr:`TriggerRecord.live_calls`). A client capped at N live calls
        keeps this at N or below; 0 before any trigger."""
        return self._max_live[self.config.api_key if api_key is None else api_key]

    def calls_placed_to(self, number: str) -> int:
        """How many calls were created to ``number`` (refused triggers excluded)."""
        return self._placed[number]

    def placed_counts(self) -> collections.Counter[str]:
        """A copy of the number → created calls counter."""
        return collections.Counter(self._placed.copy())

    def clear(self) -> None:
        """Forget calls, log, counters, rate-limit buckets and scripted faults
        (between benchmark phases, say)."""
        self.calls.clear()
        self.triggers.clear()
        self.request_count.clear()
        self._placed.clear()
        self.faults.reset()
        self._max_live.clear()
        if self._live is not None:
            self._live.clear()
        self.trigger_count = 0
        self.created_count = 0

    def _call(self, call_id: str) -> SimulatedCall:
        try:
            return self.calls[call_id]
        except KeyError:
            raise KeyError(f"no call {call_id!r} in this simulator") from None

    def _status(self, call: SimulatedCall) -> str:
        forced = call.forced_status
        if forced is not None:
            return forced
        return call.status_at((self._clock() - call.created_at) * self._time_scale)

    # -------------------------------------------------------------- handlers

    def _authenticate(self, request: web.Request) -> str | web.Response:
        key = request.headers.get("x-dq-api-key")
        if not key:
            return _error(401, "missing api key (x-dq-api-key header)")
        if key not in self._api_keys:
            return _error(401, "invalid api key")
        return key

    async def _handle_trigger(self, request: web.Request) -> web.StreamResponse:
        self.request_count["trigger"] += 1
        key = self._authenticate(request)
        if isinstance(key, web.Response):
            return key
        self.trigger_count += 1
        raw = await request.read()
        try:
            payload: Any = json.loads(raw)
        except ValueError:
            payload = None
        record: TriggerRecord | None = None
        if self._record:
            fields: dict[str, Any] = payload if isinstance(payload, dict) else {}
            scheduled = fields.get("scheduledAt")
            if scheduled is None:
                scheduled = fields.get("scheduleAt")
            record = TriggerRecord(
                to=_text(fields.get("to")),
                agent_id=_text(fields.get("agentId")),
                context=fields.get("context"),
                scheduled_at=_text(scheduled),
                from_number=_text(fields.get("from")),
                received_at=self._clock(),
            )
            if self._keep_log:
                self.triggers.append(record)
        if self._live is not None:
            # Sampled on arrival too, for a trigger that never gets processed
            # (a fault first); processing samples again.
            self._note_live(key, self._live.count(key), record)
        try:
            return await self._serve(
                request, "trigger", key, lambda: self._trigger(payload, key, record), record
            )
        finally:
            if self._sink is not None and record is not None:
                self._sink(record)

    def _note_live(self, key: str, live: int, record: TriggerRecord | None) -> None:
        if record is not None:
            record.live_calls = live
        if live > self._max_live[key]:
            self._max_live[key] = live

    async def _handle_status(self, request: web.Request) -> web.StreamResponse:
        self.request_count["status"] += 1
        key = self._authenticate(request)
        if isinstance(key, web.Response):
            return key
        call_id = request.match_info["call_id"]
        return await self._serve(request, "status", key, lambda: self._status_answer(call_id))

    async def _handle_recordings(self, request: web.Request) -> web.StreamResponse:
        self.request_count["recordings"] += 1
        key = self._authenticate(request)
        if isinstance(key, web.Response):
            return key
        call_id = request.match_info["call_id"]
        return await self._serve(
            request, "recordings", key, lambda: self._recordings_answer(request, call_id)
        )

    async def _handle_download(self, request: web.Request) -> web.StreamResponse:
        self.request_count["download"] += 1
        key = ""
        if self.config.recording_files_require_key:
            checked = self._authenticate(request)
            if isinstance(checked, web.Response):
                return checked
            key = checked
        call_id = request.match_info["call_id"]
        return await self._serve(request, "download", key, lambda: self._download_answer(call_id))

    async def _serve(
        self,
        request: web.Request,
        endpoint: str,
        key: str,
        process: Callable[[], web.Response],
        record: TriggerRecord | None = None,
    ) -> web.StreamResponse:
        """Apply latency and faults around ``process`` (the normal answer).

        Order: latency, rate limit, scripted fault, random fault. A fault
        acting before processing replaces it; one acting after it (``create``)
        only applies if processing succeeded, so an invalid trigger still gets
        its 400 (the fault is consumed all the same).
        """
        faults = self.faults
        delay = faults.latency(endpoint)
        if delay > 0:
            await self._sleep(delay)
        fault = faults.choose(endpoint, key)
        if fault is not None and not fault.create:
            if isinstance(fault, DelayFault):
                await self._sleep(fault.seconds)
                if _client_gone(request):
                    return reset_connection(request)
            else:
                return self._answer_fault(request, fault, record)

        response = process()
        if fault is not None and fault.create and response.status < 400:
            if not isinstance(fault, DelayFault):
                return self._answer_fault(request, fault, record)
            await self._sleep(fault.seconds)
            if _client_gone(request):
                return reset_connection(request)  # the answer cannot go out any more
        if record is not None:
            record.answered_status = response.status
        return response

    @staticmethod
    def _answer_fault(
        request: web.Request, fault: AnyFault, record: TriggerRecord | None
    ) -> web.StreamResponse:
        response = fault_response(request, fault)
        if record is not None and not isinstance(fault, ResetFault):
            record.answered_status = response.status
        return response

    async def _sleep(self, seconds: float) -> None:
        # Track the (already existing) handler task so stop() can cut the
        # sleep short; a handler whose client went away is otherwise not
        # cancelled by aiohttp and would outlive the server.
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - always inside a handler task
            await asyncio.sleep(seconds)
            return
        self._sleepers.add(task)
        try:
            await asyncio.sleep(seconds)
        finally:
            self._sleepers.discard(task)

    # ------------------------------------------------------ normal answers

    def _trigger(self, payload: Any, key: str, record: TriggerRecord | None) -> web.Response:
        if not isinstance(payload, dict):
            return _error(400, "request body must be a JSON object")
        to = payload.get("to")
        if to is None or to == "":
            return _error(400, "to is required")
        if not isinstance(to, str) or _E164.fullmatch(to) is None:
            return _error(400, "to must be an E.164 phone number (+ and 7 to 15 digits)")
        agent_id = payload.get("agentId")
        if agent_id is None or agent_id == "":
            return _error(400, "agentId is required")
        if not isinstance(agent_id, str):
            return _error(400, "agentId must be a string")
        known = self.config.known_agents
        if known is not None and agent_id not in known:
            return _error(400, "agentId does not name an agent of this account")
        context = payload.get("context")
        if context is not None and not isinstance(context, dict):
            return _error(400, "context must be a JSON object")
        from_number = payload.get("from")
        if from_number is not None:
            if not isinstance(from_number, str) or _E164.fullmatch(from_number) is None:
                return _error(400, "from must be an E.164 phone number")
            owned = self.config.owned_numbers
            if owned is not None and from_number not in owned:
                return _error(400, "from is not a number owned by this account")

        scheduled = payload.get("scheduledAt")
        if scheduled is None:
            scheduled = payload.get("scheduleAt")
        start_delay = 0.0
        if scheduled is not None:
            if not isinstance(scheduled, str) or _SCHEDULED_AT.fullmatch(scheduled) is None:
                return _error(400, "scheduledAt must be formatted yyyy-mm-ddThh:mm")
            try:
                when = datetime.strptime(scheduled, "%Y-%m-%dT%H:%M").replace(tzinfo=timezone.utc)
            except ValueError:
                return _error(400, "scheduledAt is not a valid date and time")
            now = self._wall_clock()
            target = when.timestamp()
            # The API has minute resolution: any time within the current
            # minute is "now", not the past.
            if target < now - now % 60:
                return _error(400, "scheduledAt is in the past")
            # The wait is simulated time, compressed by time_scale like the
            # call itself, so a call scheduled a minute ahead starts in one
            # real second at time_scale 60.
            start_delay = max(0.0, target - now)

        live = self._live
        if live is not None:
            count = live.count(key)
            cap = self._max_live_calls
            if cap is not None and count >= cap:
                self._note_live(key, count, record)
                return _error(429, CONCURRENT_LIMIT_MESSAGE)
        call = self._new_call(to, agent_id, from_number, start_delay)
        if live is not None:
            live.add(key, call)
            self._note_live(key, count + 1, record)
        if record is not None:
            record.call_id = call.id
            record.created = True
        status = "Queued" if scheduled is None else "Scheduled"
        return _json_response(200, {"id": call.id, "status": status, "type": "voip"})

    def _new_call(
        self, to: str, agent_id: str, from_number: str | None, start_delay: float
    ) -> SimulatedCall:
        rng = self._lifecycle_rng
        # Always four draws per call, so one call's outcome never shifts the
        # next call's durations in a seeded run.
        queue = rng.uniform(*self._queue_range)
        ring = rng.uniform(*self._ring_range)
        talk = rng.uniform(*self._talk_range)
        cum = self._outcome_cum
        index = bisect.bisect_right(cum, rng.random() * cum[-1])
        outcome = self._outcome_names[min(index, len(cum) - 1)]
        call_id = str(uuid.UUID(int=self._ids_rng.getrandbits(128), version=4))
        while call_id in self.calls:  # pragma: no cover - 122 random bits
            call_id = str(uuid.UUID(int=self._ids_rng.getrandbits(128), version=4))
        call = SimulatedCall(
            call_id,
            to,
            agent_id,
            from_number,
            self._clock(),
            start_delay,
            queue,
            ring,
            talk,
            outcome,
        )
        self.calls[call_id] = call
        if self.webhooks is not None:
            self.webhooks.call_created(call, self._wall_clock())
        self._placed[to] += 1
        self.created_count += 1
        return call

    def _status_answer(self, call_id: str) -> web.Response:
        call = self.calls.get(call_id)
        if call is None:
            return _error(404, "call not found")
        return _json_response(200, {"id": call.id, "status": self._status(call), "type": "voip"})

    def _recordings_answer(self, request: web.Request, call_id: str) -> web.Response:
        call = self.calls.get(call_id)
        if call is None:
            return _error(404, "call not found")
        if self._status(call) != "Completed":
            return _error(404, "recording not available")
        # Built from the request's Host so the URL also works behind a port
        # mapping (a container, say).
        url = f"{request.scheme}://{request.host}/recordings/{call.id}.wav"
        shape = self.config.recordings_shape
        if shape == "list":
            return _json_response(200, [url])
        if shape == "string":
            return _json_response(200, url)
        return _json_response(200, {"recordings": [url]})

    def _download_answer(self, call_id: str) -> web.Response:
        call = self.calls.get(call_id)
        if call is None or self._status(call) != "Completed":
            return _error(404, "recording not found")
        return web.Response(body=self._wav_bytes(), content_type="audio/wav")

    def _wav_bytes(self) -> bytes:
        """A silent 8 kHz, 8-bit mono WAV of exactly ``recording_size`` bytes
        (8-bit so that any size is a whole number of samples). Built once."""
        if self._wav is None:
            data_len = self.config.recording_size - 44
            header = struct.pack(
                "<4sI4s4sIHHIIHH4sI",
                b"RIFF", 36 + data_len, b"WAVE",
                b"fmt ", 16, 1, 1, 8000, 8000, 1, 8,
                b"data", data_len,
            )  # fmt: skip
            self._wav = header + b"\x80" * data_len
        return self._wav


#: Where an embedding application finds the Simulator owning ``Simulator.app``.
SIMULATOR_APP_KEY: web.AppKey[Simulator] = web.AppKey("voicehub_simulator", Simulator)
