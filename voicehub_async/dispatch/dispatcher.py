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
  dispatcher sends one attempt at a time (``client.send_trigger``) and feeds
  each failure to the policy's :class:`~voicehub_async.retry.Attempts`, so
  that the classification lives in one place while the dispatcher can act
  on a 429 for everybody: a request-rate 429 pauses *all* workers until its
  ``Retry-After`` and halves the pace, which then grows back slowly (see
  :mod:`voicehub_async._ratelimit`); a 429 about the live-call cap waits
  without slowing the pace. A trigger that may have reached the service is
  never re-sent (unless the client opted in).
* Every input taken from the iterable gets exactly one
  :class:`DispatchResult`, also when the dispatch is stopped: inputs not sent
  yet come out as ``not_sent``; a trigger cut off on the wire (drain timeout)
  as ``ambiguous``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
import warnings
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sized,
)
from types import TracebackType
from typing import Final

from .._ratelimit import Pacer
from ..models import CallRequest, PreparedRequest, assume_prepared
from ..protocols import TriggerClient
from ..stats import DispatchStats, Outcome, StatsRecorder
from .channel import Channel
from .control import Control, Worker, logger
from .feed import Feed
from .results import DispatchResult, OnResult, OnSending, RequestItem, TriggerGate
from .sender import Sender, call_hook

__all__ = ["Dispatcher"]


class _UseDefault(enum.Enum):
    TOKEN = enum.auto()


_USE_DEFAULT: Final = _UseDefault.TOKEN


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
    * ``gate``: a :class:`~voicehub_async.dispatch.results.TriggerGate`
      consulted around every trigger (a campaign's live-call cap and its
      stop-early breaker).
    * ``max_retries``, ``timeout``: per request, as for
      :meth:`~voicehub_async.VoiceHubClient.trigger` (default: the client's).
    * ``prepared`` (deprecated): take every request as prepared already.
      Pass what :meth:`~voicehub_async.VoiceHubClient.prepare` returns
      instead: a :class:`~voicehub_async.PreparedRequest` is never validated
      twice.
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
        client: TriggerClient,
        requests: Iterable[RequestItem] | AsyncIterable[RequestItem],
        *,
        concurrency: int = 100,
        rate_limit: float | None = None,
        on_sending: OnSending | None = None,
        on_result: OnResult | None = None,
        gate: TriggerGate | None = None,
        max_retries: int | None = None,
        timeout: float | None = None,
        prepared: bool | None = None,
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
        if prepared is not None:
            warnings.warn(
                "Dispatcher(prepared=...) is deprecated: pass the PreparedRequest objects "
                "that client.prepare() returns, which are never validated twice",
                DeprecationWarning,
                stacklevel=2,
            )
        policy = client.retry_policy
        self.client = client
        self.concurrency = concurrency
        self.rate_limit = rate_limit
        self._on_sending = on_sending
        self._on_result = on_result
        self._gate = gate
        self._max_retries = policy.max_retries if max_retries is None else max_retries
        self._timeout = timeout
        self._drain_timeout = drain_timeout
        self._clock_option = clock
        self._sleep = sleep or policy.sleep or asyncio.sleep
        self._channel: Channel[DispatchResult] = Channel(buffer or concurrency)
        self._stats = StatsRecorder(lambda: 0.0)
        self._clock: Callable[[], float] = self._stats.clock
        self._control = Control(self.stop)
        prepare: Callable[[CallRequest], PreparedRequest] = (
            assume_prepared if prepared else client.prepare
        )
        self._feed = Feed(requests, prepare, self._stats, self._control)
        self._requests = requests
        self._pacer: Pacer | None = None
        #: Ends the telemetry gauges' watch of this dispatch.
        self._unwatch = contextlib.ExitStack()
        self._sender: Sender | None = None
        self._workers: list[Worker] = []
        self._live_workers = 0
        self._started = False

    def __repr__(self) -> str:
        state = "stopping" if self._control.stopping else "running" if self._started else "new"
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
        return self._control.stopping

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
        self._control.stopping = True
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
        self._pacer = pacer = Pacer(self.rate_limit, clock=clock, sleep=self._sleep)
        self._sender = Sender(
            self.client,
            control=self._control,
            stats=self._stats,
            pacer=pacer,
            clock=clock,
            sleep=self._sleep,
            on_sending=self._on_sending,
            gate=self._gate,
            max_retries=self._max_retries,
            timeout=self._timeout,
        )
        self._stats.start()
        stats = self._stats
        self._unwatch.enter_context(
            self.client.telemetry.watch("dispatch", lambda: stats.in_flight, lambda: pacer.rate)
        )
        self._feed.start()
        count = self.concurrency
        requests = self._requests
        if isinstance(requests, Sized):
            count = min(count, len(requests))
        self._live_workers = count
        if count == 0:
            self._finish()
            return
        for number in range(count):
            worker = Worker()
            worker.task = loop.create_task(self._work(worker), name=f"voicehub-dispatch-{number}")
            self._workers.append(worker)

    def _finish(self) -> None:
        # Inputs read ahead but left by workers cut off mid-way (cancelled
        # in on_result, say) still get their one result: never sent.
        pending = self._feed.pending
        while pending:
            index, raw, _, invalid = pending.popleft()
            outcome: Outcome = "invalid" if invalid is not None else "not_sent"
            self._stats.counts[outcome] += 1
            self._channel.push(DispatchResult(index, raw, None, invalid, outcome, 0, 0.0))
        self._stats.finish()
        self._unwatch.close()
        self._channel.close()

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
        if self._control.failure is not None:
            raise self._control.failure

    # -- the workers -------------------------------------------------------------------

    async def _work(self, worker: Worker) -> None:
        stats = self._stats
        channel = self._channel
        feed = self._feed
        pending = feed.pending
        control = self._control
        sender = self._sender
        assert sender is not None
        send = sender.send
        sync_input = feed.sync
        try:
            while True:
                if pending:
                    entry = pending.popleft()
                elif sync_input:
                    if feed.refill():
                        continue
                    break
                else:
                    try:
                        taken = await feed.take_async(worker)
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
                elif prepared is None or control.stopping:
                    result = DispatchResult(index, raw, None, None, "not_sent", 0, 0.0)
                else:
                    result = await send(worker, index, raw, prepared)
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

    async def _deliver(self, result: DispatchResult) -> None:
        """Pass ``result`` to ``on_result``, then to the consumer (it is never lost)."""
        hook = self._on_result
        if hook is not None:
            try:
                await call_hook(hook(result))
            except asyncio.CancelledError:
                self._channel.push(result)
                raise
            except Exception as exc:
                self._control.fail(exc)
        if self._channel.has_room():
            self._channel.push(result)
        else:
            await self._channel.put(result)
