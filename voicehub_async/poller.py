"""StatusPoller: follow many calls to their final status with few reads.

VoiceHub tells a call's status only when asked (or by webhook, see
:meth:`StatusPoller.ingest`). Asking every call every second costs a read per
call per second; most of those answer "nothing changed". The poller instead
keeps one heap of tracked calls ordered by when each is next due, and one
scheduling coroutine that sends the due reads with bounded concurrency:

* **Adaptive interval.** Right after a change a call is read again after
  ``min_interval``; each read that finds nothing new multiplies its interval
  by ``growth`` (1.5) up to ``max_interval``. So a call is read often while it
  moves (queued → started → in-progress) and rarely during a long
  conversation, and a change is never seen later than about ``max_interval``
  after it happened.
* **Scheduled calls** are not read before ``scheduled_lead`` seconds ahead of
  their ``scheduled_at``.
* **Flat memory.** A tracked call is one slotted record plus one heap entry; no
  task or timer per call. A rescheduled call pushes a new heap entry and
  invalidates the old one (lazy deletion; the heap is compacted when stale
  entries outnumber live ones).
* **Every tracked call ends with exactly one final change** (``is_final``): a
  terminal status, ``lost`` (the status endpoint kept answering 404) or
  ``timed_out`` (its ``deadline`` passed). Nothing is dropped.
* **Push and poll together.** A status learned from a webhook is given to
  :meth:`~StatusPoller.ingest`: it is reported like a polled change (the same
  status twice is not a change) and moves the call's next read to
  ``push_interval`` later, as a safety net; a terminal status ends tracking
  with no further read.

Changes are read with ``async for change in poller.changes()``. They go to a
buffer that is bounded while somebody iterates: when ``max_buffered_changes``
are waiting, the scheduler stops sending reads until the consumer catches up
(backpressure, so a slow consumer loses nothing and the service is not read
for results nobody looks at). Reads already in flight and ingested events
still land in the buffer, so it may exceed the bound by ``concurrency`` plus
whatever is ingested meanwhile. While nobody iterates, the buffer keeps every
change, so a consumer that starts late still sees all of them; a program that
only uses :meth:`~StatusPoller.wait`/:meth:`~StatusPoller.wait_all` passes
``stream_changes=False`` and nothing is buffered.

Errors: the client's :class:`~voicehub_async.RetryPolicy` already retries
transient read failures. When it gives up, the poller logs the error, backs
that call off (its interval doubles, up to ``max_interval``) and keeps tracking
it; only ``max_not_found`` consecutive 404 answers end a call as ``lost``.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Protocol

import attrs

from .errors import InvalidRequestError, NotFoundError, VoiceHubError
from .models import Call, CallRequest, CallStatus, format_scheduled_at

if TYPE_CHECKING:
    from .client import VoiceHubClient

__all__ = [
    "LOST",
    "TIMED_OUT",
    "CallLostError",
    "CallTimedOutError",
    "CallTrackingError",
    "ChangeStream",
    "PollerStats",
    "StatusChange",
    "StatusEvent",
    "StatusPoller",
    "WaitTimeoutError",
    "trigger_and_wait",
]

logger = logging.getLogger("voicehub_async.poller")

#: Reported when the status endpoint keeps answering 404 for a call.
LOST: Final = CallStatus("lost")
#: Reported when a call's ``deadline`` passes before it reached a final status.
TIMED_OUT: Final = CallStatus("timed_out")

#: The scheduler yields to the loop after this many heap entries in a row.
_BATCH: Final = 512


# -- values ------------------------------------------------------------------------


@attrs.frozen
class StatusChange:
    """One call moved from ``old`` to ``new`` status.

    ``old`` is None the first time the poller learns a call's status. ``at``
    (UTC) is when the change was observed: the answer of the read, or the
    event's ``timestamp`` for an ingested one. ``call`` is the call as last
    read (or as ingested); for ``lost`` it is the last successful read, if
    any. ``source`` says where the change came from: ``"poll"``, ``"ingest"``
    or ``"poller"`` (``lost``, ``timed_out``, or a call already final when
    tracked).
    """

    call_id: str
    old: CallStatus | None
    new: CallStatus
    at: datetime
    call: Call | None = attrs.field(default=None, repr=False)
    source: str = "poll"

    @property
    def is_lost(self) -> bool:
        """The status endpoint kept answering 404: the service does not know the call."""
        return self.new == LOST

    @property
    def is_timed_out(self) -> bool:
        """The call's deadline passed first; it may still be going on."""
        return self.new == TIMED_OUT

    @property
    def is_final(self) -> bool:
        """The last change the poller reports for this call: a terminal status,
        ``lost`` or ``timed_out``."""
        return self.new.is_terminal or self.is_lost or self.is_timed_out


@attrs.frozen
class PollerStats:
    """Counters of a :class:`StatusPoller`, as a snapshot.

    ``reads`` are status look-ups (``client.get_call``); ``requests`` the HTTP
    requests they took, retries included. ``read_errors`` counts reads that
    failed after the client's retries, 404s excepted (``not_found``).
    """

    tracked: int
    active: int
    reads: int
    requests: int
    read_errors: int
    not_found: int
    changes: int
    ingested: int
    finished: int
    lost: int
    timed_out: int
    buffered: int


class StatusEvent(Protocol):
    """What :meth:`StatusPoller.ingest` needs from a webhook event."""

    @property
    def call_id(self) -> str: ...

    @property
    def status(self) -> CallStatus | str: ...


# -- errors --------------------------------------------------------------------------


class CallTrackingError(VoiceHubError):
    """A tracked call did not reach a status of its own.

    Raised by :meth:`StatusPoller.wait` (and ``trigger_and_wait``) for a call
    that ended as ``lost`` or ``timed_out`` (the subclasses), or that was still
    tracked when the poller closed. ``change`` is the final change (None when
    the poller closed first), ``last_call`` the call as last read, if ever.
    """

    def __init__(
        self,
        message: str,
        call_id: str,
        change: StatusChange | None = None,
        last_call: Call | None = None,
    ) -> None:
        super().__init__(message)
        self.call_id = call_id
        self.change = change
        self.last_call = last_call


class CallLostError(CallTrackingError):
    """The status endpoint answered 404 for the call, repeatedly.

    Either the id is wrong (another account's, a typo) or the service
    forgot the call. Nothing was placed by the poller; check the id.
    """


class CallTimedOutError(CallTrackingError):
    """The call's deadline passed before it reached a final status.

    The call may still be going on: it was not cancelled, only no longer
    watched. ``last_call`` tells the last status read.
    """


class WaitTimeoutError(VoiceHubError, TimeoutError):
    """:meth:`StatusPoller.wait`/:meth:`~StatusPoller.wait_all` ran out of time.

    Unlike a deadline, this ends only the wait: the calls stay tracked and can
    be waited for again. Also a :class:`TimeoutError`.
    """


def _final_result(change: StatusChange) -> Call:
    """The call of a final change, or the error that says why there is none."""
    if change.is_lost:
        raise CallLostError(
            f"call {change.call_id!r} is lost: the status endpoint kept answering 404 "
            "(a wrong id, or a call of another account?)",
            change.call_id,
            change,
            change.call,
        )
    if change.is_timed_out:
        last = f" (last status read: {change.call.status})" if change.call is not None else ""
        raise CallTimedOutError(
            f"call {change.call_id!r} did not reach a final status before its deadline{last}; "
            "it may still be in progress",
            change.call_id,
            change,
            change.call,
        )
    call = change.call
    assert call is not None, "a terminal change always carries its call"
    return call


# -- one tracked call --------------------------------------------------------------------


class _Record:
    """The state of one tracked call: everything the scheduler needs, slotted."""

    __slots__ = (
        "call",
        "call_id",
        "deadline",
        "due",
        "failures",
        "interval",
        "misses",
        "not_before",
        "reading",
        "seq",
        "status",
        "version",
    )

    def __init__(
        self,
        call_id: str,
        status: CallStatus | None,
        call: Call | None,
        interval: float,
        not_before: float | None,
        deadline: float | None,
    ) -> None:
        self.call_id = call_id
        self.status = status
        self.call = call
        self.interval = interval
        #: Monotonic time before which a scheduled call is not read.
        self.not_before = not_before
        #: Monotonic time at which the call ends as ``timed_out``.
        self.deadline = deadline
        #: Consecutive 404 answers; consecutive other failures.
        self.misses = 0
        self.failures = 0
        #: The sequence number of the live heap entry; -1 when none (being
        #: read, or finished). Older entries carrying another number are stale.
        self.seq = -1
        #: When the call is (or was last) due to be read, monotonic.
        self.due = 0.0
        #: Bumped by each ingested status, so that a read sent before it can
        #: tell that its answer may be older than what is known.
        self.version = 0
        self.reading = False


_HeapEntry = tuple[float, int, _Record]


# -- the changes() iterator ------------------------------------------------------------


class ChangeStream:
    """``async for change in poller.changes()``: the poller's changes, in order.

    Each change goes to one consumer. While a stream is being iterated it
    applies backpressure (see :class:`StatusPoller`). Iteration ends when the
    poller is closed and the buffer is empty, or, with ``until_idle=True``
    (the default), as soon as no call is tracked and the buffer is empty.
    Breaking out of the loop detaches the stream.
    """

    __slots__ = ("_attached", "_done", "_poller", "_until_idle")

    def __init__(self, poller: StatusPoller, until_idle: bool) -> None:
        self._poller = poller
        self._until_idle = until_idle
        self._attached = False
        self._done = False

    def __aiter__(self) -> ChangeStream:
        return self

    async def __anext__(self) -> StatusChange:
        poller = self._poller
        if self._done:
            raise StopAsyncIteration
        if not self._attached:
            self._attached = True
            poller._consumers += 1
        buffer = poller._buffer
        while True:
            if buffer:
                change = buffer.popleft()
                if poller._waiting_for_space:
                    poller._nudge()
                return change
            if poller._closed or (self._until_idle and not poller._records):
                self.close()
                raise StopAsyncIteration
            ready = poller._ready
            ready.clear()
            await ready.wait()

    def close(self) -> None:
        """Stop iterating (also done by ``break`` and by garbage collection)."""
        if self._done:
            return
        self._done = True
        if self._attached:
            self._attached = False
            self._poller._consumers -= 1
            self._poller._nudge()

    async def aclose(self) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass


# -- the poller ---------------------------------------------------------------------------


def _aware(value: datetime | timedelta, field: str, now: float) -> float:
    """``value`` as Unix seconds; a timedelta counts from ``now``."""
    if isinstance(value, timedelta):
        return now + value.total_seconds()
    if not isinstance(value, datetime):
        raise InvalidRequestError(field, value, "must be a time-zone-aware datetime")
    if value.tzinfo is None or value.utcoffset() is None:
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
        client: VoiceHubClient,
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

        self._records: dict[str, _Record] = {}
        self._finals: dict[str, StatusChange] = {}
        self._heap: list[_HeapEntry] = []
        self._seq = itertools.count()
        self._buffer: deque[StatusChange] = deque()
        self._ready = asyncio.Event()
        self._consumers = 0
        self._waiting_for_space = False
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
        self._ready.set()

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
            self._ready.set()

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
        record = _Record(
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
        if at is not None and (at.tzinfo is None or at.utcoffset() is None):
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
        return ChangeStream(self, until_idle)

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
            return _final_result(final)
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
        return _final_result(change)

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

    def _schedule(self, record: _Record, due: float) -> None:
        """Put ``record`` in the heap at ``due`` (bounded by its deadline and
        its scheduled time), invalidating any older entry."""
        not_before = record.not_before
        if not_before is not None:
            status = record.status
            if status is None or status == CallStatus.SCHEDULED:
                due = max(due, not_before)
            else:
                record.not_before = None
        deadline = record.deadline
        if deadline is not None and deadline < due:
            due = deadline
        seq = next(self._seq)
        record.seq = seq
        record.due = due
        heap = self._heap
        heapq.heappush(heap, (due, seq, record))
        if len(heap) > 2 * len(self._records) + 1024:
            self._compact()
        if heap[0][1] == seq:
            self._nudge()

    def _compact(self) -> None:
        self._heap = [entry for entry in self._heap if entry[1] == entry[2].seq]
        heapq.heapify(self._heap)

    def _emit(self, change: StatusChange) -> None:
        self._n_changes += 1
        if self.stream_changes:
            self._buffer.append(change)
            self._ready.set()

    def _finish(self, record: _Record, change: StatusChange) -> None:
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
            self._ready.set()  # an until_idle stream may end now

    def _end(self, record: _Record, status: CallStatus) -> None:
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
        handle = None if delay is None else loop.call_later(delay, _wake, waker)
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
        run_of = 0
        while True:
            if self._consumers and len(self._buffer) >= self.max_buffered_changes:
                # Backpressure: nobody reads the changes fast enough.
                self._waiting_for_space = True
                await self._idle(None)
                self._waiting_for_space = False
                continue
            if self._in_flight >= self.concurrency:
                await self._idle(None)
                continue
            heap = self._heap
            while heap and heap[0][1] != heap[0][2].seq:
                heapq.heappop(heap)
            if not heap:
                run_of = 0
                await self._idle(None)
                continue
            due = heap[0][0]
            now = clock()
            if due > now:
                run_of = 0
                await self._idle(due - now)
                continue
            record = heapq.heappop(heap)[2]
            record.seq = -1
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

    async def _read(self, record: _Record) -> None:
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

    def _read_done(self, record: _Record) -> None:
        record.reading = False
        self._in_flight -= 1
        self._nudge()

    def _after_answer(self, record: _Record, call: Call, version: int, sent: float) -> None:
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

    def _after_not_found(self, record: _Record, sent: float) -> None:
        record.misses += 1
        if record.misses >= self.max_not_found:
            self._end(record, LOST)
            return
        record.interval = min(self.max_interval, record.interval * self.growth)
        self._reschedule(record, sent)

    def _after_error(self, record: _Record, error: Exception, sent: float) -> None:
        record.failures += 1
        record.interval = min(self.max_interval, record.interval * 2.0)
        if logger.isEnabledFor(logging.WARNING):
            logger.warning(
                "reading the status of call %s failed (%s; %d in a row); next try in %.1f s",
                record.call_id, error, record.failures, record.interval,
            )
        self._reschedule(record, sent)

    def _reschedule(self, record: _Record, sent: float) -> None:
        now = self._clock()
        if record.deadline is not None and now >= record.deadline:
            self._end(record, TIMED_OUT)
            return
        # Counted from when the read was sent, so a slow answer does not
        # stretch the interval between two reads.
        self._schedule(record, max(now, sent + self._jittered(record.interval)))


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


# -- the one-call case -----------------------------------------------------------------


async def trigger_and_wait(
    client: VoiceHubClient,
    request: CallRequest,
    *,
    timeout: float | None = None,
    **poller_options: Any,
) -> Call:
    """Trigger one call and follow it to its final status (``client.trigger_and_wait``).

    ``timeout`` (seconds) is the tracking deadline, counted after the trigger:
    when it passes, :class:`CallTimedOutError` is raised; the call was placed
    and may still be going on (its id is in the error). A trigger failure is
    raised as it is (an ambiguous one as
    :class:`~voicehub_async.AmbiguousTriggerError`, never re-sent).
    ``poller_options`` are :class:`StatusPoller` options (``min_interval``, ...).
    """
    poller_options.setdefault("concurrency", 1)
    poller_options["stream_changes"] = False
    prepared = client.prepare(request)
    call = await client.trigger(prepared, prepared=True)
    scheduled_at: datetime | None = None
    if prepared.scheduled_at is not None:
        # The API was told the minute only, and may start the call at its start.
        scheduled_at = datetime.strptime(
            format_scheduled_at(prepared.scheduled_at), "%Y-%m-%dT%H:%M"
        ).replace(tzinfo=timezone.utc)
    async with StatusPoller(client, **poller_options) as poller:
        poller.track(
            call,
            scheduled_at=scheduled_at,
            deadline=None if timeout is None else timedelta(seconds=timeout),
        )
        return await poller.wait(call.id)
