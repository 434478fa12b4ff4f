"""LoadTest: place calls following a ramp, follow each one, and measure.

One coroutine walks the ramp's send times (:meth:`Ramp.send_times`) and
starts a task per trigger; one :class:`~voicehub_async.poller.StatusPoller`
follows every placed call (fed by webhooks too when a
:class:`~voicehub_async.webhooks.WebhookReceiver` is given); one consumer
turns the poller's changes into :class:`~.metrics.LoadMetrics` events. The
run ends when the ramp is over and no call is live any more.

Decisions that shape the numbers:

* **The ceiling drops, it does not queue.** A call due while ``max_live``
  calls are live is *dropped* and counted (as k6 counts dropped iterations):
  queueing it would send a burst the moment calls end and make the rate chart
  say the service kept up with a ramp it did not.
* **One clock, the ramp's.** Times are ``(now - start) * time_scale``, so with
  the simulator's time scale the ramp, the poll intervals and every reported
  duration are in simulated seconds; against the real service the scale is 1.
* **Triggers are sent once.** The client's retry policy still retries what
  provably did not reach the service (could not connect, 429, 503); anything
  ambiguous is counted as ``ambiguous`` and never re-sent, and a trigger
  cancelled in flight (the run was interrupted) counts as ambiguous too.
* **Started and answered are first sightings.** With polling they are as
  precise as the poll interval; with webhooks, as the delivery. ``started``
  counts once a call is seen ``started``, ``in-progress`` or ``completed``;
  *answered* once it is seen ``in-progress`` or ``completed``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Final

import attrs

from .._aio import wake
from ..errors import (
    AmbiguousTriggerError,
    APIConnectionError,
    APIStatusError,
    RateLimitError,
    VoiceHubError,
)
from ..models import CallRequest, PreparedRequest
from ..poller import StatusChange, StatusPoller
from .metrics import LoadMetrics, LoadTestResult, RunInfo, nice_bucket
from .ramp import Ramp
from .thresholds import Threshold, check_all

if TYPE_CHECKING:
    from ..client import VoiceHubClient
    from ..webhooks import WebhookReceiver

__all__ = ["LoadTest", "LoadTestConfig", "LoadTestProgress", "failure_kind"]

logger = logging.getLogger("voicehub_async.loadtest")

#: With webhooks, a call is read after this many --max-poll-interval of silence.
_PUSH_POLLS: Final = 3
#: Real seconds between two looks at whether a threshold is lost (``abort_on_fail``).
_THRESHOLD_CHECK: Final = 0.1


def _positive(_inst: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be positive, got {value!r}")


def _numbers(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        raise TypeError("numbers must be a collection of phone numbers, not one string")
    return tuple(value)


def _thresholds(value: Iterable[Threshold]) -> tuple[Threshold, ...]:
    return tuple(value)


def _not_empty(_inst: object, _attribute: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    if not value:
        raise ValueError("a load test needs at least one test number")


@attrs.frozen
class LoadTestConfig:
    """What a load test does. Times are ramp seconds (simulated ones when
    ``time_scale`` is not 1).

    ``numbers`` are called in turn, round and round; ``max_live`` bounds the
    calls live at once (a due call is dropped at the ceiling).
    ``poll_interval``/``max_poll_interval`` are the poller's intervals after a
    change and at most; ``poll_concurrency`` bounds its reads in flight.
    ``max_call_time`` ends following a call as ``timed_out``. ``bucket`` is
    the timeline's resolution (default: about 60 points over the ramp).
    ``thresholds`` are judged at the end (the result's ``verdicts``); with
    ``abort_on_fail`` the ramp stops as soon as one of them cannot hold any
    more (live calls are still followed to their end, as after :meth:`LoadTest.stop`).
    """

    agent_id: str = attrs.field(validator=attrs.validators.min_len(1))
    numbers: tuple[str, ...] = attrs.field(converter=_numbers, validator=_not_empty)
    ramp: Ramp
    max_live: int = attrs.field(default=500, validator=attrs.validators.ge(1))
    time_scale: float = attrs.field(default=1.0, validator=_positive)
    poll_interval: float = attrs.field(default=2.0, validator=_positive)
    max_poll_interval: float = attrs.field(default=15.0, validator=_positive)
    poll_concurrency: int = attrs.field(default=50, validator=attrs.validators.ge(1))
    max_call_time: float = attrs.field(default=1800.0, validator=_positive)
    bucket: float | None = None
    context: Mapping[str, Any] | None = None
    from_number: str | None = None
    thresholds: tuple[Threshold, ...] = attrs.field(default=(), converter=_thresholds)
    abort_on_fail: bool = False

    def __attrs_post_init__(self) -> None:
        if self.max_poll_interval < self.poll_interval:
            raise ValueError("max_poll_interval must not be shorter than poll_interval")
        if self.abort_on_fail and not self.thresholds:
            raise ValueError("abort_on_fail needs thresholds to judge")


@attrs.frozen
class LoadTestProgress:
    """A snapshot for a progress display: ``due`` of ``total`` ramp calls so
    far, and where they stand. ``elapsed`` is ramp seconds; ``placing`` is
    False once the ramp is over (or stopped) and only live calls remain."""

    elapsed: float
    total: int
    due: int
    dropped: int
    sent: int
    placed: int
    not_placed: int
    live: int
    ended: int
    placing: bool


def failure_kind(error: BaseException) -> str:
    """How a failed trigger is counted: ``ambiguous``, ``rate_limited``,
    ``http_<status>``, ``connection_failed`` or ``error``."""
    if isinstance(error, AmbiguousTriggerError):
        return "ambiguous"
    if isinstance(error, RateLimitError):
        return "rate_limited"
    if isinstance(error, APIStatusError):
        return f"http_{error.status}"
    if isinstance(error, APIConnectionError):
        return "connection_failed"
    return "error"


class _Tracked:
    """What the runner remembers of one live call (slotted: one per live call)."""

    __slots__ = ("answered", "sent_at", "started_at")

    def __init__(self, sent_at: float) -> None:
        self.sent_at = sent_at
        self.started_at: float | None = None
        self.answered = False


class LoadTest:
    """One load test run against ``client``; see the module documentation.

    ``receiver`` (optional) is a webhook receiver already being served: its
    status events are fed to this run's poller. ``simulated`` only labels the
    report. Run once::

        result = await LoadTest(client, config).run()

    :meth:`stop` (e.g. on Ctrl-C) ends the ramp early; calls already live are
    still followed to the end so that the report is complete.
    """

    def __init__(
        self,
        client: VoiceHubClient,
        config: LoadTestConfig,
        *,
        receiver: WebhookReceiver | None = None,
        simulated: bool = False,
    ) -> None:
        self.client = client
        self.config = config
        self.receiver = receiver
        self.simulated = simulated
        self.total_calls = config.ramp.total_calls
        bucket = config.bucket or nice_bucket(config.ramp.duration)
        self.metrics = LoadMetrics(bucket)
        self._calls: dict[str, _Tracked] = {}
        self._triggers: set[asyncio.Task[None]] = set()
        self._poller: StatusPoller | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._t0 = 0.0
        self._placing = False
        self._stopping = False
        self._stopped_at: float | None = None
        self._aborted_by: str | None = None
        self._ran = False
        self._waker: asyncio.Future[None] | None = None
        self._done: asyncio.Event | None = None
        self._failure: BaseException | None = None

    def __repr__(self) -> str:
        return f"<LoadTest agent={self.config.agent_id!r} ramp={str(self.config.ramp)!r}>"

    # -- clock ----------------------------------------------------------------------

    def now(self) -> float:
        """Ramp seconds since the run started (0 before it did)."""
        if self._loop is None:
            return 0.0
        return (self._loop.time() - self._t0) * self.config.time_scale

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds`` real seconds, or until :meth:`stop`."""
        assert self._loop is not None
        waker: asyncio.Future[None] = self._loop.create_future()
        self._waker = waker
        handle = self._loop.call_later(seconds, wake, waker)
        try:
            await waker
        finally:
            handle.cancel()
            self._waker = None

    # -- control -----------------------------------------------------------------------

    def stop(self) -> None:
        """Place no more calls; the run ends once the live ones have ended."""
        if not self._stopping and self._placing:
            self._stopped_at = self.now()
        self._stopping = True
        if self._waker is not None:
            wake(self._waker)

    def progress(self) -> LoadTestProgress:
        m = self.metrics
        return LoadTestProgress(
            elapsed=self.now(),
            total=self.total_calls,
            due=m.due,
            dropped=m.dropped,
            sent=m.sent,
            placed=m.placed,
            not_placed=sum(m.not_placed.values()),
            live=m.live,
            ended=sum(m.final_statuses.values()),
            placing=self._placing,
        )

    # -- the run -------------------------------------------------------------------------

    async def run(self) -> LoadTestResult:
        """Run the ramp, follow every call to its end, and return the figures.

        Every number is validated first: a bad one raises
        :class:`~voicehub_async.InvalidRequestError` before anything is sent.
        """
        if self._ran:
            raise RuntimeError("a LoadTest runs once; make a new one")
        self._ran = True
        config = self.config
        requests = [
            self.client.prepare(
                CallRequest(
                    to=number,
                    agent_id=config.agent_id,
                    context=config.context,
                    from_number=config.from_number,
                )
            )
            for number in config.numbers
        ]
        loop = self._loop = asyncio.get_running_loop()
        self._done = asyncio.Event()
        scale = config.time_scale
        poller = StatusPoller(
            self.client,
            concurrency=config.poll_concurrency,
            min_interval=config.poll_interval / scale,
            max_interval=config.max_poll_interval / scale,
            # With webhooks a read is only a safety net for a lost event: the
            # calls' own statuses should not double the load on the service.
            push_interval=(
                None if self.receiver is None else _PUSH_POLLS * config.max_poll_interval / scale
            ),
        )
        started_at = datetime.now(timezone.utc)
        self._t0 = loop.time()
        async with poller:
            self._poller = poller
            if self.receiver is not None:
                self.receiver.poller = poller
            consumer = loop.create_task(self._consume(poller), name="voicehub-loadtest-changes")
            watcher = (
                loop.create_task(self._watch_thresholds(), name="voicehub-loadtest-thresholds")
                if config.abort_on_fail
                else None
            )
            try:
                self._placing = True
                await self._place(requests)
                self._placing = False
                self._check_done()
                await self._done.wait()
            finally:
                self._placing = False
                if self.receiver is not None:
                    self.receiver.poller = None
                consumer.cancel()
                if watcher is not None:
                    watcher.cancel()
                for task in list(self._triggers):
                    task.cancel()
                await asyncio.gather(
                    consumer,
                    *(() if watcher is None else (watcher,)),
                    *self._triggers,
                    return_exceptions=True,
                )
        if self._failure is not None:
            raise RuntimeError(f"the load test's status tracking failed: {self._failure!r}")
        elapsed = loop.time() - self._t0
        info = RunInfo(
            agent_id=config.agent_id,
            numbers=len(set(config.numbers)),
            ramp=str(config.ramp),
            ramp_seconds=config.ramp.duration,
            max_live=config.max_live,
            poll_interval=config.poll_interval,
            time_scale=scale,
            simulated=self.simulated,
            webhooks=self.receiver is not None,
            started_at=started_at.isoformat(timespec="seconds"),
            wall_seconds=elapsed,
            stopped_at=self._stopped_at,
            aborted_by=self._aborted_by,
        )
        # The timeline covers the ramp (or what ran of it) and the calls' tail.
        end = config.ramp.duration if self._stopped_at is None else self._stopped_at
        result = self.metrics.result(info, until=max(self.now(), end))
        return attrs.evolve(result, verdicts=check_all(config.thresholds, result))

    def _info_so_far(self) -> RunInfo:
        config = self.config
        return RunInfo(
            agent_id=config.agent_id,
            numbers=len(config.numbers),
            ramp=str(config.ramp),
            ramp_seconds=config.ramp.duration,
            max_live=config.max_live,
        )

    async def _watch_thresholds(self) -> None:
        """Stop the ramp once a threshold cannot hold whatever the rest of it does."""
        info = self._info_so_far()
        while True:
            await asyncio.sleep(_THRESHOLD_CHECK)
            if self._stopping or not self._placing:
                return  # the ramp is over: nothing left to stop
            so_far = self.metrics.result(info, timeline=False)
            for threshold in self.config.thresholds:
                if threshold.cannot_recover(so_far, self.total_calls):
                    logger.info("threshold %s cannot hold any more: stopping the ramp", threshold)
                    self._aborted_by = threshold.expression
                    self.stop()
                    return

    async def _place(self, requests: list[PreparedRequest]) -> None:
        config, metrics = self.config, self.metrics
        assert self._loop is not None
        loop, scale, t0 = self._loop, config.time_scale, self._t0
        targets = itertools.cycle(requests)
        for due in config.ramp.send_times():
            if self._stopping:
                return
            delay = due / scale - (loop.time() - t0)
            if delay > 0:
                await self._pause(delay)
                if self._stopping:
                    return
            metrics.record_due(due)
            if metrics.live >= config.max_live:
                metrics.record_dropped(due)
                continue
            now = self.now()
            metrics.record_sent(now, max(0.0, now - due))
            task = loop.create_task(self._trigger(next(targets), now))
            self._triggers.add(task)
            task.add_done_callback(self._triggers.discard)

    async def _trigger(self, request: PreparedRequest, sent_at: float) -> None:
        assert self._loop is not None and self._poller is not None
        began = self._loop.time()
        try:
            call = await self.client.trigger(request)
        except asyncio.CancelledError:
            # The request may have reached the service: unknown, never re-sent.
            self.metrics.record_not_placed(self.now(), "ambiguous")
            raise
        except VoiceHubError as error:
            kind = failure_kind(error)
            # Numbers are personal data: at DEBUG only (rule 3).
            logger.debug("trigger to %s not placed (%s)", request.to, kind)
            logger.info("trigger not placed (%s): %s", kind, error)
            self.metrics.record_not_placed(self.now(), kind)
            self._check_done()
            return
        latency = self._loop.time() - began
        self.metrics.record_placed(self.now(), sent_at, latency)
        self._calls[call.id] = _Tracked(sent_at)
        self._poller.track(
            call, deadline=timedelta(seconds=self.config.max_call_time / self.config.time_scale)
        )

    async def _consume(self, poller: StatusPoller) -> None:
        try:
            async for change in poller.changes(until_idle=False):
                self._on_change(change)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a bug: end the run rather than hang it
            self._failure = exc
        else:
            self._failure = RuntimeError("the status poller stopped")
        assert self._done is not None
        self._done.set()

    def _on_change(self, change: StatusChange) -> None:
        record = self._calls.get(change.call_id)
        if record is None:
            return
        metrics = self.metrics
        now = self.now()
        name = change.new.name
        seen_started = record.started_at is not None
        if not seen_started and change.new.has_started:
            record.started_at = now
            metrics.record_started(record.sent_at, now - record.sent_at)
        if not record.answered and change.new.is_answered:
            record.answered = True
            metrics.record_answered(now)
        if change.is_final:
            del self._calls[change.call_id]
            if self._poller is not None:
                # The poller keeps final changes for a late wait(); nobody
                # waits here, and a long run must not grow with its calls.
                self._poller.forget(change.call_id)
            duration = None
            if name == "completed" and seen_started and record.started_at is not None:
                duration = now - record.started_at
            metrics.record_ended(now, name, record.sent_at, duration, answered=record.answered)
            self._check_done()

    def _check_done(self) -> None:
        if not self._placing and self.metrics.live == 0 and self._done is not None:
            self._done.set()
