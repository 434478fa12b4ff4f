"""Trigger many calls at once, safely: the :class:`Dispatcher`.

::

    async with VoiceHubClient() as client:
        async for result in client.dispatch(rows, concurrency=100, rate_limit=50):
            print(result.index, result.outcome, result.call or result.error)

How it works, and why:

* A fixed pool of ``concurrency`` worker tasks pulls inputs straight from the
  caller's iterable (or async iterable), so a generator of a million rows is
  read lazily: what is held is bounded (the inputs in flight, a small batch
  read and validated ahead, and the results waiting for the consumer in a
  bounded buffer), whatever the number of rows. No task is created
  per request, and a slow consumer slows the workers down (backpressure).
* Each input is validated once (``client.prepare``) before anything is sent;
  a bad row becomes an ``invalid`` result naming the field, and the rest goes
  on.
* Retries follow the client's :class:`~voicehub_async.RetryPolicy`: the
  dispatcher sends one attempt at a time (``client.trigger(...,
  max_retries=0)``) and asks the policy whether and how long to wait
  (:meth:`~voicehub_async.RetryPolicy.should_retry`,
  :meth:`~voicehub_async.RetryPolicy.wait`), so that the classification lives
  in one place while the dispatcher can act on a 429 for everybody: a 429
  pauses *all* workers until its ``Retry-After`` and halves the pace, which
  then grows back slowly (see :mod:`voicehub_async._ratelimit`). A trigger that
  may have reached the service is never re-sent (unless the client opted in).
* Every input taken from the iterable gets exactly one
  :class:`DispatchResult`, also when the dispatch is stopped: inputs not sent
  yet come out as ``not_sent``; a trigger cut off on the wire (drain timeout)
  as ``ambiguous``.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import inspect
import itertools
import logging
import time
from collections import deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sized,
)
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Generic, Protocol, TypeVar

import attrs
import tenacity

from ._ratelimit import Pacer
from .errors import (
    AmbiguousTriggerError,
    APIConnectionError,
    APIStatusError,
    InvalidRequestError,
    VoiceHubError,
)
from .models import Call, CallRequest
from .stats import OUTCOMES, DispatchStats, Outcome, StatsRecorder

if TYPE_CHECKING:
    from .client import VoiceHubClient

__all__ = [
    "OUTCOMES",
    "DispatchResult",
    "DispatchStats",
    "Dispatcher",
    "OnResult",
    "OnSending",
    "Outcome",
    "RequestItem",
    "TriggerGate",
]

logger = logging.getLogger("voicehub_async")

T = TypeVar("T")

#: One input row: a :class:`~voicehub_async.CallRequest`, or a mapping with
#: :meth:`~voicehub_async.VoiceHubClient.trigger_call`'s keyword names.
RequestItem = CallRequest | Mapping[str, Any]
#: ``on_sending(index, prepared_request)``: returns None, or an awaitable.
OnSending = Callable[[int, CallRequest], Awaitable[object] | None]

_FIELDS: Final = ("to", "agent_id", "context", "scheduled_at", "from_number")
_FIELD_SET: Final = frozenset(_FIELDS)
_REQUIRED: Final = ("to", "agent_id")
# The wire's spelling of a field, a likely mistake in a hand-written dict.
_WIRE_NAMES: Final = {
    "agentId": "agent_id",
    "scheduledAt": "scheduled_at",
    "scheduleAt": "scheduled_at",
    "from": "from_number",
}


def _outcome_of(call: Call) -> Outcome:
    """``scheduled`` for a call answered Scheduled, else ``queued`` (it was placed)."""
    status = call.status.value
    # The service answers "Queued": skip the case-insensitive compare for it.
    if status == "Queued" or status.lower() != "scheduled":
        return "queued"
    return "scheduled"


@attrs.frozen
class DispatchResult:
    """What became of one input of a dispatch.

    ``index`` is the input's position in the iterable (from 0) and
    ``request`` the input exactly as given. ``outcome`` is one of:

    * ``queued`` / ``scheduled``: the call was placed; ``call`` is the answer.
    * ``invalid``: refused before sending (no request made); ``error`` is an
      :class:`~voicehub_async.InvalidRequestError` naming the field.
    * ``failed``: the service refused it (4xx, or 429/503/no connection after
      the last retry); no call was placed.
    * ``ambiguous``: a call *may* have been placed (timeout or broken
      connection after sending, 500/502/504, or cut off by a drain timeout);
      ``error`` is an :class:`~voicehub_async.AmbiguousTriggerError`. Check
      before sending it again.
    * ``not_sent``: the dispatch stopped before this input was sent (or
      before a refused attempt could be retried: ``error`` is then that
      refusal). Safe to send again.

    ``attempts`` is the number of requests made, ``elapsed`` the seconds from
    the moment a worker picked the input up to this result, waits and
    retries included (0.0 when nothing was sent).
    """

    index: int
    request: RequestItem
    call: Call | None
    error: Exception | None
    outcome: Outcome
    attempts: int
    elapsed: float

    @property
    def placed(self) -> bool:
        """True when the call was certainly placed (queued or scheduled)."""
        return self.call is not None


#: ``on_result(result)``: returns None, or an awaitable.
OnResult = Callable[[DispatchResult], Awaitable[object] | None]


class TriggerGate(Protocol):
    """Consulted around every trigger: a campaign's live-call cap and breaker.

    ``acquire(index)`` is awaited before an input's first attempt (it may
    wait: a live-call slot); ``attempted(index, error)`` is told every
    attempt's outcome (None: it placed a call); when the service answers a
    trigger with its concurrent-call 429, ``concurrency_limited(index,
    delay)`` is awaited instead of slowing every worker down, and the trigger
    is sent again (it provably placed nothing); ``settled(result)`` gets
    every result, before ``on_result``.
    """

    async def acquire(self, index: int, /) -> None: ...

    def attempted(self, index: int, error: BaseException | None, /) -> None: ...

    async def concurrency_limited(self, index: int, delay: float, /) -> None: ...

    def settled(self, result: DispatchResult, /) -> None: ...


def _is_concurrency_limit(error: BaseException) -> bool:
    """A 429 whose message says the concurrent-call limit is reached."""
    return (
        isinstance(error, APIStatusError)
        and error.status == 429
        and "concurren" in f"{error.message} {error.body}".lower()
    )


class _UseDefault(enum.Enum):
    TOKEN = enum.auto()


_USE_DEFAULT: Final = _UseDefault.TOKEN

#: Inputs of a sync iterable read (and validated) at once.
_BATCH: Final = 32

#: An input read from the iterable: (index, as given, prepared request or
#: None, the error that makes it invalid or None).
_Entry = tuple[int, Any, CallRequest | None, Exception | None]


class _Worker:
    """One worker task and whether stopping may cancel it right now.

    ``cancellable`` is True only while the worker waits for input, for its
    turn or between attempts: cancelling it there costs nothing. A worker in
    a request (or in the ``on_sending`` hook) is left to finish.
    """

    __slots__ = ("cancellable", "task")

    def __init__(self) -> None:
        self.cancellable = False
        self.task: asyncio.Task[None] | None = None


class _Channel(Generic[T]):
    """A FIFO from the workers to the consumer whose bound can be lifted.

    Bounded while the consumer reads (backpressure); unbounded once the
    dispatch stops, so that workers never block on a consumer that has gone
    away. Its size is then still bounded by the number of workers.
    """

    __slots__ = ("_closed", "_getters", "_items", "_limit", "_putters")

    def __init__(self, limit: int) -> None:
        self._items: deque[T] = deque()
        self._limit: float = limit
        self._closed = False
        self._getters: deque[asyncio.Future[None]] = deque()
        self._putters: deque[asyncio.Future[None]] = deque()

    def __len__(self) -> int:
        return len(self._items)

    @staticmethod
    def _wake_one(waiters: deque[asyncio.Future[None]]) -> None:
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def has_room(self) -> bool:
        return len(self._items) < self._limit

    def push(self, item: T) -> None:
        """Append ``item`` whatever the bound (the caller checked, or must not wait)."""
        self._items.append(item)
        if self._getters:
            self._wake_one(self._getters)

    async def put(self, item: T) -> None:
        """Append ``item``, waiting for room while the channel is full."""
        while len(self._items) >= self._limit:
            waiter = asyncio.get_running_loop().create_future()
            self._putters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                # Never lose a result: keep it, then let the cancellation go on.
                self.push(item)
                raise
        self.push(item)

    async def get(self) -> T | None:
        """The next item, or None once the channel is closed and empty."""
        items = self._items
        while not items:
            if self._closed:
                return None
            waiter = asyncio.get_running_loop().create_future()
            self._getters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                # Pass a wake-up meant for us on to another reader, if any.
                if waiter.done() and not waiter.cancelled() and items:
                    self._wake_one(self._getters)
                raise
        item = items.popleft()
        if self._putters:
            self._wake_one(self._putters)
        return item

    def lift_limit(self) -> None:
        self._limit = float("inf")
        while self._putters:
            self._wake_one(self._putters)

    def close(self) -> None:
        self._closed = True
        while self._getters:
            self._wake_one(self._getters)


def _as_call_request(item: Any) -> CallRequest:
    """``item`` (a CallRequest or a mapping of trigger_call's keywords) as a CallRequest."""
    if isinstance(item, CallRequest):
        return item
    if isinstance(item, Mapping):
        if not item.keys() <= _FIELD_SET:
            name = sorted(str(key) for key in item.keys() - _FIELD_SET)[0]
            hint = f"did you mean {_WIRE_NAMES[name]!r}? " if name in _WIRE_NAMES else ""
            key = next(k for k in item if str(k) == name)
            raise InvalidRequestError(
                name,
                item[key],
                f"unknown field; {hint}a request takes {', '.join(_FIELDS)}",
            )
        for name in _REQUIRED:
            if name not in item:
                raise InvalidRequestError(name, None, "required field missing")
        return CallRequest(**item)
    raise InvalidRequestError(
        "request",
        item,
        "expected a CallRequest or a mapping with trigger_call's keyword names",
    )


def _as_is(request: CallRequest) -> CallRequest:
    return request


async def _call_hook(result: Awaitable[object] | None) -> None:
    if inspect.isawaitable(result):
        await result


class Dispatcher:
    """Trigger the calls in ``requests`` with bounded concurrency; iterate for results.

    ``requests`` is an iterable or async iterable of
    :class:`~voicehub_async.CallRequest` or of mappings with
    :meth:`~voicehub_async.VoiceHubClient.trigger_call`'s keyword names
    (``to``, ``agent_id``, ``context``, ``scheduled_at``, ``from_number``).
    It is read lazily, one input per free worker.

    Options:

    * ``concurrency``: requests in flight at most (the number of workers).
      Give the client ``max_connections`` at least as large, or requests
      queue for a connection.
    * ``rate_limit``: requests per second at most (None: as fast as the
      service allows). A 429 halves the pace either way; it grows back
      slowly afterwards.
    * ``on_sending(index, prepared_request)``: called (and awaited if async)
      right before each request goes on the wire, retries included; a
      campaign journal commits its ``sending`` mark there. If it raises, that
      input is not sent and the dispatch stops; iterating re-raises the error.
    * ``on_result(result)``: called (and awaited if async) for every result
      as soon as it is known, also for results the consumer never reads
      (after a stop).
    * ``max_retries``, ``timeout``: per request, as for
      :meth:`~voicehub_async.VoiceHubClient.trigger` (default: the client's).
    * ``prepared``: the requests came out of
      :meth:`~voicehub_async.VoiceHubClient.prepare` already (a campaign that
      validated every row up front, say): skip validating them again.
    * ``buffer``: results held for a slow consumer before the workers wait
      (default: ``concurrency``).
    * ``drain_timeout``: seconds :meth:`aclose` lets requests in flight
      finish before cancelling them (reported ``ambiguous``); None waits for
      them (each is bounded by the client's timeout anyway). Also used when
      the consumer is cancelled or leaves the loop early.
    * ``clock``, ``sleep``: replace the event loop's clock and
      :func:`asyncio.sleep` (tests).

    Use it as ``async for result in dispatcher`` (results in completion
    order), ideally inside ``async with dispatcher:`` so that leaving the
    block stops and cleans up deterministically. Leaving the loop early, an
    exception in its body, or cancelling the consumer stops the dispatch:
    no input is taken any more, requests in flight finish, and inputs taken
    but not sent become ``not_sent`` results (passed to ``on_result``).
    Inputs never taken stay in the caller's iterator (``stats.taken`` tells
    how many were); a read from an async iterable still pending when the
    dispatch stops is cancelled.
    """

    def __init__(
        self,
        client: VoiceHubClient,
        requests: Iterable[RequestItem] | AsyncIterable[RequestItem],
        *,
        concurrency: int = 100,
        rate_limit: float | None = None,
        on_sending: OnSending | None = None,
        on_result: OnResult | None = None,
        gate: TriggerGate | None = None,
        max_retries: int | None = None,
        timeout: float | None = None,
        prepared: bool = False,
        buffer: int | None = None,
        drain_timeout: float | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        if isinstance(requests, (str, bytes, Mapping, CallRequest)) or not isinstance(
            requests, (Iterable, AsyncIterable)
        ):
            raise TypeError(
                "requests must be an iterable (or async iterable) of CallRequest or dicts, "
                f"not {type(requests).__name__}"
            )
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if rate_limit is not None and not rate_limit > 0:
            raise ValueError("rate_limit must be a positive number of requests per second")
        if max_retries is not None and max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if buffer is not None and buffer < 1:
            raise ValueError("buffer must be at least 1")
        if drain_timeout is not None and drain_timeout < 0:
            raise ValueError("drain_timeout must be >= 0 or None")
        policy = client.retry_policy
        self.client = client
        self.concurrency = concurrency
        self.rate_limit = rate_limit
        self._requests = requests
        self._on_sending = on_sending
        self._on_result = on_result
        self._gate = gate
        self._policy = policy
        self._max_retries = policy.max_retries if max_retries is None else max_retries
        self._drain_timeout = drain_timeout
        self._clock_option = clock
        self._sleep = sleep or policy.sleep or asyncio.sleep
        options: dict[str, Any] = {"prepared": True, "max_retries": 0}
        if timeout is not None:
            options["timeout"] = timeout
        self._trigger: Callable[[CallRequest], Awaitable[Call]] = functools.partial(
            client.trigger, **options
        )
        self._prepare: Callable[[CallRequest], CallRequest] = _as_is if prepared else client.prepare
        self._channel: _Channel[DispatchResult] = _Channel(buffer or concurrency)
        self._stats = StatsRecorder(lambda: 0.0)
        self._clock: Callable[[], float] = self._stats.clock
        self._pacer: Pacer | None = None
        self._workers: list[_Worker] = []
        self._live_workers = 0
        self._iterator: Iterator[RequestItem] | None = None
        self._aiterator: AsyncIterator[RequestItem] | None = None
        self._input_lock: asyncio.Lock | None = None
        self._exhausted = False
        self._pending: deque[_Entry] = deque()
        self._started = False
        self._stopping = False
        self._failure: BaseException | None = None
        self._retry_owner: tenacity.AsyncRetrying | None = None
        self._wait = policy.wait()

    def __repr__(self) -> str:
        state = "stopping" if self._stopping else "running" if self._started else "new"
        return (
            f"<Dispatcher {state} concurrency={self.concurrency} rate_limit={self.rate_limit} "
            f"taken={self._stats.taken}>"
        )

    # -- public surface ------------------------------------------------------------

    @property
    def stats(self) -> DispatchStats:
        """Counts per outcome, retries, throughput and latency percentiles, now."""
        rate = self._pacer.rate if self._pacer is not None else self.rate_limit
        return self._stats.snapshot(rate)

    @property
    def stopping(self) -> bool:
        """True once the dispatch takes no more input."""
        return self._stopping

    def __aiter__(self) -> AsyncGenerator[DispatchResult, None]:
        return self._results()

    async def __aenter__(self) -> Dispatcher:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def stop(self) -> None:
        """Take no more input. Iterating goes on with what is left, then ends.

        Requests in flight finish; inputs waiting for their turn become
        ``not_sent``. Does not wait: see :meth:`aclose` for that.
        """
        self._stopping = True
        self._channel.lift_limit()
        for worker in self._workers:
            if worker.cancellable and worker.task is not None:
                worker.task.cancel()

    async def aclose(self, drain_timeout: float | _UseDefault | None = _USE_DEFAULT) -> None:
        """Stop, and wait until every worker is done.

        Requests in flight get ``drain_timeout`` seconds (default: the
        constructor's; None: as long as they take) to finish; then they are
        cancelled and reported ``ambiguous``. Results not read yet stay
        available to iteration. Safe to call more than once, and from inside
        the ``async for`` loop; from ``on_sending`` or ``on_result`` call
        :meth:`stop` instead (awaiting the workers from a worker would wait
        for ever).
        """
        timeout = self._drain_timeout if isinstance(drain_timeout, _UseDefault) else drain_timeout
        self.stop()
        if not self._started:
            self._started = True
            self._channel.close()
            return
        tasks = [w.task for w in self._workers if w.task is not None and not w.task.done()]
        try:
            if tasks:
                _, pending = await asyncio.wait(tasks, timeout=timeout)
                if pending:
                    logger.info(
                        "dispatch: drain timeout; cancelling %d trigger(s) in flight "
                        "(reported as ambiguous)",
                        len(pending),
                    )
                    for task in pending:
                        task.cancel()
                    await asyncio.wait(pending)
        except asyncio.CancelledError:
            # Closing was itself cancelled: cut everything short, but still
            # let the workers record their outcomes before unwinding.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        finally:
            if all(w.task is None or w.task.done() for w in self._workers):
                # Normally the last worker did this already; not if a worker
                # was cancelled before it ever ran.
                self._finish()

    # -- life ------------------------------------------------------------------------

    def _start(self) -> None:
        if self._started:
            return
        if self.client.closed:
            raise RuntimeError("the VoiceHubClient is closed; dispatch with an open client")
        self._started = True
        loop = asyncio.get_running_loop()
        # asyncio's loops read time.monotonic(): call it directly (hot path),
        # unless this loop keeps a time of its own.
        clock = self._clock_option or (
            time.monotonic if type(loop).time is asyncio.BaseEventLoop.time else loop.time
        )
        self._clock = self._stats.clock = clock
        self._pacer = Pacer(self.rate_limit, clock=clock, sleep=self._sleep)
        self._stats.start()
        requests = self._requests
        if isinstance(requests, AsyncIterable):
            self._aiterator = aiter(requests)
            self._input_lock = asyncio.Lock()
        else:
            self._iterator = iter(requests)
        count = self.concurrency
        if isinstance(requests, Sized):
            count = min(count, len(requests))
        self._live_workers = count
        if count == 0:
            self._finish()
            return
        for number in range(count):
            worker = _Worker()
            worker.task = loop.create_task(self._work(worker), name=f"voicehub-dispatch-{number}")
            self._workers.append(worker)

    def _finish(self) -> None:
        # Inputs read ahead but left by workers cut off mid-way (cancelled
        # in on_result, say) still get their one result: never sent.
        pending = self._pending
        while pending:
            index, raw, _, invalid = pending.popleft()
            outcome: Outcome = "invalid" if invalid is not None else "not_sent"
            self._stats.counts[outcome] += 1
            self._channel.push(DispatchResult(index, raw, None, invalid, outcome, 0, 0.0))
        self._stats.finish()
        self._channel.close()

    def _fail(self, error: BaseException) -> None:
        """Stop the whole dispatch because of ``error`` (raised again by iteration)."""
        if self._failure is None:
            self._failure = error
            logger.error("dispatch stopped: %s: %s", type(error).__name__, error)
        self.stop()

    async def _results(self) -> AsyncGenerator[DispatchResult, None]:
        self._start()
        channel = self._channel
        complete = False
        try:
            while True:
                result = await channel.get()
                if result is None:
                    break
                yield result
            complete = True
        finally:
            if not complete:
                await self.aclose()
        if self._failure is not None:
            raise self._failure

    # -- the workers -------------------------------------------------------------------

    async def _work(self, worker: _Worker) -> None:
        stats = self._stats
        channel = self._channel
        pending = self._pending
        sync_input = self._iterator is not None
        try:
            while True:
                if pending:
                    entry = pending.popleft()
                elif sync_input:
                    if self._refill():
                        continue
                    break
                else:
                    try:
                        taken = await self._take_async(worker)
                    except asyncio.CancelledError:
                        self.stop()
                        break
                    if taken is None:
                        break
                    entry = taken
                index, raw, prepared, invalid = entry
                result: DispatchResult
                if invalid is not None:
                    result = DispatchResult(index, raw, None, invalid, "invalid", 0, 0.0)
                elif prepared is None or self._stopping:
                    result = DispatchResult(index, raw, None, None, "not_sent", 0, 0.0)
                else:
                    result = await self._send(worker, index, raw, prepared)
                if self._gate is not None:
                    self._gate.settled(result)
                stats.counts[result.outcome] += 1
                if result.attempts:
                    stats.latency.add(result.elapsed)
                if self._on_result is None and channel.has_room():
                    channel.push(result)  # the fast path: no hook, no wait
                    continue
                try:
                    await self._deliver(result)
                except asyncio.CancelledError:
                    self.stop()
                    break
        finally:
            self._live_workers -= 1
            if self._live_workers == 0:
                self._finish()

    def _take(self, raw: Any) -> _Entry:
        """Number and validate one input just read from the iterable."""
        stats = self._stats
        index = stats.taken
        stats.taken = index + 1
        try:
            request = raw if type(raw) is CallRequest else _as_call_request(raw)
            return (index, raw, self._prepare(request), None)
        except Exception as error:  # InvalidRequestError, or a bug in a field's value
            return (index, raw, None, error)

    def _refill(self) -> bool:
        """Read and validate up to ``_BATCH`` inputs of a sync iterable at once.

        Validating a few dozen numbers in a row is markedly cheaper than one
        at a time between network events (libphonenumber's tables stay in
        the CPU caches); the look-ahead stays small and bounded. Returns
        False when there is nothing more to read.
        """
        iterator = self._iterator
        if self._exhausted or self._stopping or iterator is None:
            return False
        raws: list[Any] = []
        try:
            raws.extend(itertools.islice(iterator, _BATCH))
        except Exception as exc:  # the caller's iterable failed: stop, keep what was read
            self._exhausted = True
            self._fail(exc)
        else:
            if len(raws) < _BATCH:
                self._exhausted = True
        take = self._take
        self._pending.extend([take(raw) for raw in raws])
        return bool(raws)

    async def _deliver(self, result: DispatchResult) -> None:
        """Pass ``result`` to ``on_result``, then to the consumer (it is never lost)."""
        hook = self._on_result
        if hook is not None:
            try:
                await _call_hook(hook(result))
            except asyncio.CancelledError:
                self._channel.push(result)
                raise
            except Exception as exc:
                self._fail(exc)
        if self._channel.has_room():
            self._channel.push(result)
        else:
            await self._channel.put(result)

    async def _take_async(self, worker: _Worker) -> _Entry | None:
        """The next input of an async iterable, validated; None at the end.

        One at a time: an async source may trickle, and an input must not
        wait for others to arrive before it is sent.
        """
        lock = self._input_lock
        aiterator = self._aiterator
        assert lock is not None and aiterator is not None
        worker.cancellable = True
        try:
            async with lock:
                if self._exhausted or self._stopping:
                    return None
                try:
                    raw = await aiterator.__anext__()
                except StopAsyncIteration:
                    self._exhausted = True
                    return None
                except Exception as exc:
                    self._exhausted = True
                    self._fail(exc)
                    return None
        finally:
            worker.cancellable = False
        return self._take(raw)

    async def _send(
        self, worker: _Worker, index: int, raw: Any, prepared: CallRequest
    ) -> DispatchResult:
        """Send (and resend while allowed) one validated input; never raises."""
        clock = self._clock
        started = clock()
        stats = self._stats
        pacer = self._pacer
        assert pacer is not None
        on_sending = self._on_sending
        attempts = 0
        last_error: Exception | None = None
        # The first error that may have placed the call: once set, this
        # input can only end ambiguous, and is reported with this error.
        placed_by: AmbiguousTriggerError | None = None
        gate = self._gate
        if gate is not None:
            worker.cancellable = True
            try:
                await gate.acquire(index)
            except asyncio.CancelledError:
                self.stop()
                return self._unsent(index, raw, None, 0, started, None)
            finally:
                worker.cancellable = False
        while True:
            if pacer.gated:
                worker.cancellable = True
                try:
                    await pacer.wait_turn()
                except asyncio.CancelledError:
                    self.stop()
                    return self._unsent(index, raw, last_error, attempts, started, placed_by)
                finally:
                    worker.cancellable = False
            if self._stopping:
                return self._unsent(index, raw, last_error, attempts, started, placed_by)
            if on_sending is not None:
                try:
                    await _call_hook(on_sending(index, prepared))
                except asyncio.CancelledError:
                    self.stop()
                    return self._unsent(index, raw, last_error, attempts, started, placed_by)
                except Exception as exc:
                    self._fail(exc)
                    return self._unsent(index, raw, exc, attempts, started, placed_by)
                if self._stopping:
                    return self._unsent(index, raw, last_error, attempts, started, placed_by)

            attempts += 1
            if attempts > 1:
                stats.retries += 1
            sent_at = clock()
            pacer.note_sent(sent_at)
            stats.requests += 1
            stats.in_flight += 1
            try:
                call = await self._trigger(prepared)
            except VoiceHubError as exc:
                error: VoiceHubError = exc
            except asyncio.CancelledError:
                self.stop()
                cut = AmbiguousTriggerError(
                    APIConnectionError(
                        "trigger cancelled while in flight (drain timeout); "
                        "it may have reached the service",
                        sent=True,
                        attempts=attempts,
                    ),
                    attempts=attempts,
                )
                return DispatchResult(
                    index, raw, None, cut, "ambiguous", attempts, clock() - started
                )
            except Exception as exc:
                # Not a failure of this row but a bug or misuse (a closed
                # client, say): stop everything, and assume the worst here.
                self._fail(exc)
                return DispatchResult(
                    index, raw, None, exc, "ambiguous", attempts, clock() - started
                )
            else:
                if gate is not None:
                    gate.attempted(index, None)
                return DispatchResult(
                    index, raw, call, None, _outcome_of(call), attempts, clock() - started
                )
            finally:
                stats.in_flight -= 1
            if gate is not None:
                gate.attempted(index, error)

            # The attempt failed; the client's policy decides what next.
            cause = error.cause if isinstance(error, AmbiguousTriggerError) else error
            if placed_by is None and isinstance(error, AmbiguousTriggerError):
                placed_by = error
            limited = isinstance(cause, APIStatusError) and cause.status == 429
            if limited and gate is not None and _is_concurrency_limit(cause):
                # At the service's concurrent-call cap: nothing was placed, and
                # only a call ending makes room. Wait for that, not the pace.
                stats.rate_limited += 1
                last_error = error
                if self._stopping:
                    return self._unsent(index, raw, last_error, attempts, started, placed_by)
                worker.cancellable = True
                try:
                    await gate.concurrency_limited(index, self._retry_delay(cause, attempts))
                except asyncio.CancelledError:
                    self.stop()
                    return self._unsent(index, raw, last_error, attempts, started, placed_by)
                finally:
                    worker.cancellable = False
                continue
            retry = attempts <= self._max_retries and self._policy.should_retry(cause, trigger=True)
            delay = self._retry_delay(cause, attempts) if retry or limited else 0.0
            if limited:
                stats.rate_limited += 1
                backoffs = pacer.backoffs
                pacer.note_rate_limited(sent_at, delay)
                if pacer.backoffs != backoffs:
                    logger.info(
                        "dispatch: 429 from the service; all workers pause %.1fs, "
                        "pace now %.0f requests/s",
                        delay,
                        pacer.rate or 0.0,
                    )
            if not retry:
                error.attempts = attempts
                cause.attempts = attempts
                if placed_by is not None:
                    placed_by.attempts = attempts
                    return DispatchResult(
                        index, raw, None, placed_by, "ambiguous", attempts, clock() - started
                    )
                return DispatchResult(
                    index, raw, None, error, "failed", attempts, clock() - started
                )
            last_error = error
            if self._stopping:
                return self._unsent(index, raw, last_error, attempts, started, placed_by)
            if not limited:  # a 429 waits in pacer.wait_turn(), with everybody
                worker.cancellable = True
                try:
                    await self._sleep(delay)
                except asyncio.CancelledError:
                    self.stop()
                    return self._unsent(index, raw, last_error, attempts, started, placed_by)
                finally:
                    worker.cancellable = False

    def _unsent(
        self,
        index: int,
        raw: Any,
        error: Exception | None,
        attempts: int,
        started: float,
        placed_by: AmbiguousTriggerError | None,
    ) -> DispatchResult:
        """The result of an input the dispatch stopped before (re)sending.

        ``not_sent``, unless an earlier attempt may have placed the call
        (``placed_by``): then ``ambiguous``, reported with that attempt's error.
        """
        if placed_by is not None:
            placed_by.attempts = attempts
            return DispatchResult(
                index, raw, None, placed_by, "ambiguous", attempts, self._clock() - started
            )
        if isinstance(error, VoiceHubError) and attempts:
            error.attempts = attempts
        return DispatchResult(
            index, raw, None, error, "not_sent", attempts, self._clock() - started
        )

    def _retry_delay(self, error: VoiceHubError, attempt: int) -> float:
        """Seconds to wait before retrying after ``error``, per the client's policy."""
        owner = self._retry_owner
        if owner is None:
            owner = self._retry_owner = tenacity.AsyncRetrying()
        state = tenacity.RetryCallState(owner, None, (), {})
        state.attempt_number = attempt
        state.set_exception((type(error), error, error.__traceback__))
        return max(0.0, float(self._wait(state)))
