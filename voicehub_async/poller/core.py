"""StatusPoller: follow many calls to their final status with few reads.

See the package documentation (:mod:`voicehub_async.poller`) for how it
schedules reads; this module holds the poller itself: tracking, ingesting
pushed statuses, waiting, and the scheduling coroutine that sends the reads.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from types import TracebackType
from typing import Final

from .._aio import wake
from .._time import is_aware
from ..errors import InvalidRequestError, NotFoundError, VoiceHubError
from ..models import Call, CallStatus
from ..protocols import StatusReader
from .errors import CallTrackingError, WaitTimeoutError, final_result
from .schedule import Schedule, TrackedCall
from .stream import ChangeBuffer, ChangeStream
from .values import LOST, TIMED_OUT, PollerStats, StatusChange, StatusEvent

__all__ = ["StatusPoller"]

logger = logging.getLogger("voicehub_async.poller")

#: The scheduler yields to the loop after this many heap entries in a row.
_BATCH: Final = 512

def _aware(value: datetime | timedelta, field: str, now: float) -> float:
    """``value`` as Unix seconds; a timedelta counts from ``now``."""
    if isinstance(value, timedelta):
        return now + value.total_seconds()
    if not isinstance(value, datetime):
        raise InvalidRequestError(field, value, "must be a time-zone-aware datetime")
    if not is_aware(value):
        raise InvalidRequestError(
            field, value, "naive datetime; give it a time zone (for example tzinfo=timezone.utc)"
        )
    return value.timestamp()


class StatusPoller:
    """Track calls to their final status; see the module documentation.

    ``concurrency`` bounds the reads in flight. Intervals are seconds:
    ``min_interval`` after a change, growing by ``growth`` per unchanged read
    up to ``max_interval``; each is shortened by a random fraction of up to
    ``jitter`` so that calls tracked together do not stay in lockstep.
    ``scheduled_lead`` (default ``min_interval / 2``) is how long before its
    ``scheduled_at`` a scheduled call is first read; ``push_interval``
    (default ``max_interval``) how long after an ingested status the call is
    read again. ``max_not_found`` consecutive 404s make a call ``lost``.
    ``read_timeout``/``read_retries`` are passed to ``client.get_call``.
    ``clock`` (monotonic seconds) and ``wall_clock`` (Unix seconds) can be
    replaced in tests; ``seed`` makes the jitter reproducible.

    ::

        async with StatusPoller(client, concurrency=20) as poller:
            for call in calls:
                poller.track(call)
            async for change in poller.changes():
                print(change.call_id, change.old, "->", change.new)

    Entering starts the scheduling coroutine; leaving cancels it and every
    read in flight. Calls still tracked then get no final change; a
    :meth:`wait` still pending raises :class:`CallTrackingError`.
    """

    def __init__(
        self,
        client: StatusReader,
        *,
        concurrency: int = 20,
        min_interval: float = 2.0,
        max_interval: float = 30.0,
        growth: float = 1.5,
        jitter: float = 0.1,
        scheduled_lead: float | None = None,
        push_interval: float | None = None,
        max_not_found: int = 3,
        max_buffered_changes: int = 1000,
        stream_changes: bool = True,
        read_timeout: float | None = None,
        read_retries: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        seed: int | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if not 0 < min_interval <= max_interval:
            raise ValueError("intervals must satisfy 0 < min_interval <= max_interval")
        if growth < 1.0:
            raise ValueError("growth must be >= 1 (1 polls at a fixed min_interval)")
        if not 0.0 <= jitter < 1.0:
            raise ValueError("jitter must be in [0, 1)")
        if max_not_found < 1:
            raise ValueError("max_not_found must be at least 1")
        if max_buffered_changes < 1:
            raise ValueError("max_buffered_changes must be at least 1")
        self._client = client
        self.concurrency = concurrency
        self.min_interval = float(min_interval)
        self.max_interval = float(max_interval)
        self.growth = float(growth)
        self.jitter = float(jitter)
        self.scheduled_lead = (
            self.min_interval / 2 if scheduled_lead is None else float(scheduled_lead)
        )
        self.push_interval = self.max_interval if push_interval is None else float(push_interval)
        self.max_not_found = max_not_found
        self.max_buffered_changes = max_buffered_changes
        self.stream_changes = stream_changes
        self._read_timeout = read_timeout
        self._read_retries = read_retries
        self._clock = clock
        self._wall_clock = wall_clock
        self._random = random.Random(seed)

        self._records: dict[str, TrackedCall] = {}
        self._finals: dict[str, StatusChange] = {}
        self._schedule_of = Schedule()
        self._buffer = ChangeBuffer(self._nudge)
        self._waiters: dict[str, list[asyncio.Future[StatusChange]]] = {}
        self._idle_waiters: list[asyncio.Future[None]] = []
        self._in_flight = 0
        self._reads: set[asyncio.Task[None]] = set()
        self._waker: asyncio.Future[None] | None = None
        self._scheduler: asyncio.Task[None] | None = None
        self._started = False
        self._closed = False
        self._failure: BaseException | None = None

        self._n_tracked = 0
        self._n_reads = 0
        self._n_requests = 0
        self._n_errors = 0
        self._n_not_found = 0
        self._n_changes = 0
        self._n_ingested = 0
        self._n_lost = 0
        self._n_timed_out = 0

    def __repr__(self) -> str:
        return (
            f"<StatusPoller tracking={len(self._records)} finished={len(self._finals)} "
            f"concurrency={self.concurrency} closed={self._closed}>"
        )

    # -- lifecycle ---------------------------------------------------------------

    async def __aenter__(self) -> StatusPoller:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def start(self) -> None:
        """Start the scheduling coroutine (``async with`` does it)."""
        if self._closed:
            raise RuntimeError("this StatusPoller is closed; make a new one")
        if self._started:
            raise RuntimeError("this StatusPoller is already started")
        self._started = True
        self._scheduler = asyncio.get_running_loop().create_task(
            self._run(), name="voicehub-status-poller"
        )
        self._scheduler.add_done_callback(self._scheduler_done)

    async def aclose(self) -> None:
        """Stop polling: cancel the scheduler and the reads in flight, and wait
        until they are gone. Calls still tracked stay without a final change."""
        if self._closed:
            return
        self._closed = True
        tasks: list[asyncio.Task[None]] = list(self._reads)
        if self._scheduler is not None:
            tasks.append(self._scheduler)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._reads.clear()
        self._fail_waiters("the StatusPoller was closed")
        self._buffer.ready.set()

    @property
    def closed(self) -> bool:
        return self._closed

    def _scheduler_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:  # a bug: never leave a waiter hanging because of it
            logger.error("the status poller's scheduler failed", exc_info=error)
            self._failure = error
            self._closed = True
            self._fail_waiters(f"the StatusPoller failed ({error!r})")
            self._buffer.ready.set()

    def _fail_waiters(self, reason: str) -> None:
        for call_id, waiters in self._waiters.items():
            for future in waiters:
                if not future.done():
                    future.set_exception(
                        CallTrackingError(
                            f"{reason} before call {call_id!r} reached a final status",
                            call_id,
                            None,
                            self._records[call_id].call if call_id in self._records else None,
                        )
                    )
        self._waiters.clear()
        for idle in self._idle_waiters:
            if not idle.done():
                idle.set_exception(
                    CallTrackingError(f"{reason} with calls still tracked", "", None, None)
                )
        self._idle_waiters.clear()

    # -- tracking ------------------------------------------------------------------

    def track(
        self,
        call: Call | str,
        *,
        scheduled_at: datetime | timedelta | None = None,
        deadline: datetime | timedelta | None = None,
    ) -> None:
        """Follow ``call`` (a :class:`~voicehub_async.Call` or a call id) to its
        final status.

        A :class:`Call` (as returned by a trigger) gives the current status, so
        its first read is ``min_interval`` later; a bare id is read at once.
        ``scheduled_at`` (time-zone aware) delays reads until ``scheduled_lead``
        before it. The API has minute resolution and starts a scheduled call
        within the minute it was sent (``format_scheduled_at``), so pass that
        minute if you want the very first statuses. ``deadline`` (time-zone
        aware, or a timedelta from now) ends tracking as ``timed_out``.
        Tracking a call already tracked updates its ``scheduled_at``/``deadline``
        when given; tracking a finished one does nothing (see :meth:`forget`).
        """
        if self._closed:
            raise RuntimeError("this StatusPoller is closed; make a new one")
        if isinstance(call, Call):
            call_id, known = call.id, call
        else:
            call_id, known = call, None
        if not isinstance(call_id, str) or not call_id.strip():
            raise InvalidRequestError("call_id", call_id, "a non-empty string is required")
        mono, wall = self._clock(), self._wall_clock()
        not_before = (
            None
            if scheduled_at is None
            else mono + _aware(scheduled_at, "scheduled_at", wall) - wall - self.scheduled_lead
        )
        ends = None if deadline is None else mono + _aware(deadline, "deadline", wall) - wall

        record = self._records.get(call_id)
        if record is not None:
            if not_before is not None:
                record.not_before = not_before
            if ends is not None:
                record.deadline = ends
            if not record.reading:
                self._schedule(record, record.due)
            return
        if call_id in self._finals:
            return

        self._n_tracked += 1
        record = TrackedCall(
            call_id,
            None if known is None else known.status,
            known,
            self.min_interval,
            not_before,
            ends,
        )
        self._records[call_id] = record
        if known is not None and known.is_terminal:
            change = StatusChange(call_id, None, known.status, self._now(), known, "poller")
            self._emit(change)
            self._finish(record, change)
            return
        first = mono if known is None else mono + self._jittered(self.min_interval)
        self._schedule(record, first)

    def forget(self, call_id: str) -> StatusChange | None:
        """Drop a finished call's final change (kept so that a late :meth:`wait`
        still answers); returns it. For long-lived pollers tracking an endless
        stream of calls."""
        return self._finals.pop(call_id, None)

    def final(self, call_id: str) -> StatusChange | None:
        """The final change of a finished call, or None."""
        return self._finals.get(call_id)

    def __contains__(self, call_id: object) -> bool:
        """True while ``call_id`` is tracked (not yet final)."""
        return call_id in self._records

    @property
    def tracking(self) -> int:
        """How many calls are tracked right now."""
        return len(self._records)

    @property
    def stats(self) -> PollerStats:
        return PollerStats(
            tracked=self._n_tracked,
            active=len(self._records),
            reads=self._n_reads,
            requests=self._n_requests,
            read_errors=self._n_errors,
            not_found=self._n_not_found,
            changes=self._n_changes,
            ingested=self._n_ingested,
            finished=self._n_tracked - len(self._records),
            lost=self._n_lost,
            timed_out=self._n_timed_out,
            buffered=len(self._buffer),
        )

    # -- push ------------------------------------------------------------------------

    def ingest(
        self,
        event_or_call_id: StatusEvent | str,
        status: CallStatus | str | None = None,
        *,
        at: datetime | None = None,
    ) -> StatusChange | None:
        """Take a status learned elsewhere (a webhook) for a tracked call.

        Pass an event (anything with ``.call_id`` and ``.status``; its
        ``.timestamp`` is used for ``at`` when it is a datetime) or a call id
        and a status. Returns the change reported, or None when it is not one:
        the call is not tracked, the status is the one already known, or it is
        older than the known one (a late delivery). A tracked call's next read
        moves to ``push_interval`` from now; a terminal status ends tracking
        without another read. Call it from the poller's event loop (an aiohttp
        webhook handler is); it is not thread-safe.
        """
        if isinstance(event_or_call_id, str):
            if status is None:
                raise TypeError("ingest(call_id, status): a status is required with a call id")
            call_id = event_or_call_id
        else:
            if status is not None:
                raise TypeError("ingest(event): pass the status in the event, not both")
            call_id = event_or_call_id.call_id
            status = event_or_call_id.status
            if at is None:
                stamp = getattr(event_or_call_id, "timestamp", None)
                if isinstance(stamp, datetime) and stamp.tzinfo is not None:
                    at = stamp
        new = status if isinstance(status, CallStatus) else CallStatus(str(status))
        if at is not None and not is_aware(at):
            raise InvalidRequestError("at", at, "naive datetime; give it a time zone")
        record = self._records.get(call_id)
        if record is None:
            return None
        self._n_ingested += 1
        record.version += 1
        old = record.status
        change: StatusChange | None = None
        if (old is None or new != old) and new.may_follow(old):
            base = record.call
            call = Call(
                id=call_id,
                status=new,
                type=None if base is None else base.type,
                raw={} if base is None else base.raw,
                attempts=0,
            )
            record.status = new
            record.call = call
            change = StatusChange(
                call_id,
                old,
                new,
                (at if at is not None else self._now()).astimezone(timezone.utc),
                call,
                "ingest",
            )
            self._emit(change)
            if new.is_terminal:
                self._finish(record, change)
                return change
        record.interval = self.push_interval
        if not record.reading:
            self._schedule(record, self._clock() + self._jittered(self.push_interval))
        return change

    # -- waiting -----------------------------------------------------------------------

    def changes(self, *, until_idle: bool = True) -> ChangeStream:
        """The changes as they happen: ``async for change in poller.changes():``.

        With ``until_idle`` (the default) iteration ends once no call is
        tracked and every change was taken; otherwise it runs until the poller
        is closed. Track first, then iterate.
        """
        if not self.stream_changes:
            raise RuntimeError(
                "this StatusPoller was made with stream_changes=False; use wait()/wait_all()"
            )
        return ChangeStream(self._buffer, self._stream_over, until_idle)

    async def wait(self, call_id: str, timeout: float | None = None) -> Call:
        """The call once final.

        Raises :class:`CallLostError` or :class:`CallTimedOutError` when it
        ended as ``lost``/``timed_out``, :class:`WaitTimeoutError` when
        ``timeout`` seconds pass first (the call stays tracked),
        :class:`CallTrackingError` when the poller closes first, and
        :class:`KeyError` for a call that was never tracked.
        """
        final = self._finals.get(call_id)
        if final is not None:
            return final_result(final)
        if call_id not in self._records:
            raise KeyError(f"call {call_id!r} is not tracked by this poller; track() it first")
        self._check_running()
        future: asyncio.Future[StatusChange] = asyncio.get_running_loop().create_future()
        waiters = self._waiters.setdefault(call_id, [])
        waiters.append(future)
        try:
            change = await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            raise WaitTimeoutError(
                f"call {call_id!r} not final after {timeout} s; it is still tracked"
            ) from None
        finally:
            if not future.done() or future.cancelled():
                waiters = self._waiters.get(call_id, [])
                if future in waiters:
                    waiters.remove(future)
        return final_result(change)

    async def wait_all(self, timeout: float | None = None) -> dict[str, StatusChange]:
        """Wait until no call is tracked; returns the final change of every
        finished call (lost and timed-out ones included: nothing is raised for
        them). :class:`WaitTimeoutError` when ``timeout`` seconds pass first."""
        if self._records:
            self._check_running()
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._idle_waiters.append(future)
            try:
                await asyncio.wait_for(future, timeout)
            except asyncio.TimeoutError:
                raise WaitTimeoutError(
                    f"{len(self._records)} call(s) still tracked after {timeout} s"
                ) from None
            finally:
                if future in self._idle_waiters:
                    self._idle_waiters.remove(future)
        return dict(self._finals)

    def _check_running(self) -> None:
        if self._closed:
            raise CallTrackingError("the StatusPoller is closed", "")
        if not self._started:
            raise RuntimeError("start the StatusPoller first: async with StatusPoller(...)")

    # -- internals ---------------------------------------------------------------------

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._wall_clock(), timezone.utc)

    def _jittered(self, interval: float) -> float:
        if self.jitter:
            return interval * (1.0 - self.jitter * self._random.random())
        return interval

    def _nudge(self) -> None:
        waker = self._waker
        if waker is not None and not waker.done():
            waker.set_result(None)

    def _schedule(self, record: TrackedCall, due: float) -> None:
        """Put ``record`` in the schedule at ``due`` (see :meth:`Schedule.push`)."""
        if self._schedule_of.push(record, due, len(self._records)):
            self._nudge()

    @property
    def _heap(self) -> list[tuple[float, int, TrackedCall]]:
        """The schedule's heap (for tests that check it stays bounded)."""
        return self._schedule_of.heap

    def _stream_over(self, until_idle: bool) -> bool:
        """Nothing more will come to a change stream (its buffer aside)."""
        return self._closed or (until_idle and not self._records)

    def _emit(self, change: StatusChange) -> None:
        self._n_changes += 1
        if self.stream_changes:
            self._buffer.put(change)

    def _finish(self, record: TrackedCall, change: StatusChange) -> None:
        record.seq = -1
        call_id = record.call_id
        del self._records[call_id]
        self._finals[call_id] = change
        if change.is_lost:
            self._n_lost += 1
        elif change.is_timed_out:
            self._n_timed_out += 1
        waiters = self._waiters.pop(call_id, None)
        if waiters:
            for future in waiters:
                if not future.done():
                    future.set_result(change)
        if not self._records:
            for idle in self._idle_waiters:
                if not idle.done():
                    idle.set_result(None)
            self._idle_waiters.clear()
            self._buffer.ready.set()  # an until_idle stream may end now

    def _end(self, record: TrackedCall, status: CallStatus) -> None:
        """End ``record`` as ``lost`` or ``timed_out``."""
        change = StatusChange(
            record.call_id, record.status, status, self._now(), record.call, "poller"
        )
        self._emit(change)
        self._finish(record, change)

    async def _idle(self, delay: float | None) -> None:
        """Sleep until nudged, or ``delay`` seconds (one future, one timer)."""
        loop = asyncio.get_running_loop()
        waker: asyncio.Future[None] = loop.create_future()
        self._waker = waker
        handle = None if delay is None else loop.call_later(delay, wake, waker)
        try:
            await waker
        finally:
            self._waker = None
            if handle is not None:
                handle.cancel()

    async def _run(self) -> None:
        """The scheduling coroutine: pop due calls and send their reads."""
        loop = asyncio.get_running_loop()
        clock = self._clock
        schedule = self._schedule_of
        run_of = 0
        while True:
            buffer = self._buffer
            if buffer.is_full(self.max_buffered_changes):
                # Backpressure: nobody reads the changes fast enough.
                buffer.waiting_for_space = True
                await self._idle(None)
                buffer.waiting_for_space = False
                continue
            if self._in_flight >= self.concurrency:
                await self._idle(None)
                continue
            due = schedule.next_due()
            if due is None:
                run_of = 0
                await self._idle(None)
                continue
            now = clock()
            if due > now:
                run_of = 0
                await self._idle(due - now)
                continue
            record = schedule.pop()
            if record.deadline is not None and now >= record.deadline:
                self._end(record, TIMED_OUT)
            else:
                record.reading = True
                self._in_flight += 1
                task = loop.create_task(self._read(record))
                self._reads.add(task)
                task.add_done_callback(self._reads.discard)
            run_of += 1
            if run_of >= _BATCH:
                run_of = 0
                await asyncio.sleep(0)

    async def _read(self, record: TrackedCall) -> None:
        version = record.version
        sent = self._clock()
        self._n_reads += 1
        try:
            call = await self._client.get_call(
                record.call_id, timeout=self._read_timeout, max_retries=self._read_retries
            )
        except NotFoundError as error:
            self._n_requests += max(1, error.attempts)
            self._n_not_found += 1
            self._read_done(record)
            if self._records.get(record.call_id) is record:
                self._after_not_found(record, sent)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            self._n_requests += max(1, error.attempts) if isinstance(error, VoiceHubError) else 1
            self._n_errors += 1
            self._read_done(record)
            if self._records.get(record.call_id) is record:
                self._after_error(record, error, sent)
        else:
            self._n_requests += max(1, call.attempts)
            self._read_done(record)
            if self._records.get(record.call_id) is record:
                self._after_answer(record, call, version, sent)

    def _read_done(self, record: TrackedCall) -> None:
        record.reading = False
        self._in_flight -= 1
        self._nudge()

    def _after_answer(self, record: TrackedCall, call: Call, version: int, sent: float) -> None:
        record.misses = 0
        record.failures = 0
        new, old = call.status, record.status
        changed = False
        if old is None or new != old:
            # An ingest since the read was sent knows better, unless the
            # answer is further along.
            if version == record.version or new.may_follow(old):
                changed = True
        if not changed:
            if version == record.version:
                record.call = call
            record.interval = min(self.max_interval, record.interval * self.growth)
        else:
            record.status = new
            record.call = call
            record.interval = self.min_interval
            change = StatusChange(record.call_id, old, new, self._now(), call, "poll")
            self._emit(change)
            if new.is_terminal:
                self._finish(record, change)
                return
        self._reschedule(record, sent)

    def _after_not_found(self, record: TrackedCall, sent: float) -> None:
        record.misses += 1
        if record.misses >= self.max_not_found:
            self._end(record, LOST)
            return
        record.interval = min(self.max_interval, record.interval * self.growth)
        self._reschedule(record, sent)

    def _after_error(self, record: TrackedCall, error: Exception, sent: float) -> None:
        record.failures += 1
        record.interval = min(self.max_interval, record.interval * 2.0)
        if logger.isEnabledFor(logging.WARNING):
            logger.warning(
                "reading the status of call %s failed (%s; %d in a row); next try in %.1f s",
                record.call_id, error, record.failures, record.interval,
            )
        self._reschedule(record, sent)

    def _reschedule(self, record: TrackedCall, sent: float) -> None:
        now = self._clock()
        if record.deadline is not None and now >= record.deadline:
            self._end(record, TIMED_OUT)
            return
        # Counted from when the read was sent, so a slow answer does not
        # stretch the interval between two reads.
        self._schedule(record, max(now, sent + self._jittered(record.interval)))
