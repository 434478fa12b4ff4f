"""``CampaignWorker``: one of many processes dialing one PostgreSQL campaign.

The life of a contact (see also the README):

1. ``voicehub campaign load`` put it in the store: ``pending`` with its
   request, or ``invalid`` / ``duplicate`` already.
2. A worker with a free dispatcher slot, a rate token and a live-call slot
   (:mod:`.limits`) claims it: the claim commits ``sending`` with the
   worker's id (:meth:`~.postgres.PostgresStore.claim`), and only then is the
   row handed to the dispatcher. Claims are sized to what can leave at once,
   so a claimed row waits for nothing but its turn on the wire.
3. The trigger's answer is written (group-committed every few milliseconds):
   the call id and ``queued``, or ``not_sent`` (refused, provably not
   placed), ``ambiguous`` (may have been placed: never re-sent), or back to
   ``pending`` when the worker stopped before sending it.
4. The status poller follows the call to its final status, written the same
   way; a call whose worker died is adopted by another and followed there.
5. ``voicehub campaign results`` writes one line per contact from the store.

A worker heartbeats with every lease renewal. If it stops answering (killed,
partitioned) the others mark it dead after ``worker_timeout``: its ``sending``
rows become ``ambiguous`` and its placed calls are adopted. It ends when no
row of the campaign needs a worker any more (or on :meth:`stop`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections import deque
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Final

import attrs

from voicehub_async.dispatch import Dispatcher, DispatchResult
from voicehub_async.errors import InvalidRequestError
from voicehub_async.models import CallRequest, format_scheduled_at
from voicehub_async.poller import StatusChange, StatusPoller

from ..journal import (
    JournalOp,
    RecordRedial,
    RecordStatus,
    RecordTriggered,
    RecordTriggerFailed,
    RecordUnsent,
)
from .limits import LocalLimits
from .postgres import CampaignInfo, Claim, PostgresStore
from .webhooks import StoreStatusSink

if TYPE_CHECKING:
    from aiohttp import web

    from voicehub_async.client import VoiceHubClient

    from ..redial import RedialPolicy

__all__ = ["CampaignWorker", "WorkerSummary"]

logger = logging.getLogger("voicehub_async.campaign")

#: Seconds between two commits of buffered writes (results, statuses).
_FLUSH_INTERVAL: Final = 0.02
_FLUSH_SIZE: Final = 500
_IDLE_WAIT: Final = 0.25
#: Seconds of a worker's recent pace claimed beyond its free slots (see _inputs).
_CLAIM_AHEAD: Final = 0.01
#: The shortest time between two renewals (see CampaignWorker._renewals).
_EARLY_RENEWAL: Final = 0.1


@attrs.frozen
class WorkerSummary:
    """What one worker did, and where the campaign stands."""

    worker_id: str
    triggers: int
    placed: int
    retries: int
    rate_limited: int
    adopted: int
    counts: dict[str, int]
    wall_time: float
    stopped: bool
    declared_dead: bool

    @property
    def exit_code(self) -> int:
        """0 when every row of the campaign has an outcome that is not in doubt."""
        if self.stopped or self.declared_dead:
            return 1
        doubtful = ("ambiguous", "not_sent", "lost", "pending", "sending")
        return 1 if any(self.counts.get(state) for state in doubtful) else 0


def _error_text(error: BaseException | None) -> str | None:
    if error is None:
        return None
    if isinstance(error, InvalidRequestError):
        return f"{error.field}: {error.reason}"
    return " ".join(str(error).split()) or type(error).__name__


def default_worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class CampaignWorker:
    """Dial the campaign ``campaign`` of ``store`` with ``client``, beside any
    number of other workers (see the module doc). :meth:`run` once."""

    def __init__(
        self,
        client: VoiceHubClient,
        store: PostgresStore,
        campaign: CampaignInfo,
        *,
        name: str | None = None,
        concurrency: int = 10,
        max_retries: int | None = None,
        poll: bool = True,
        poll_interval: float = 2.0,
        max_poll_interval: float = 30.0,
        follow_schedule: bool = True,
        lease_interval: float = 1.0,
        worker_timeout: float = 10.0,
        webhook_port: int | None = None,
        webhook_secret: str | None = None,
        webhook_host: str = "127.0.0.1",
        redial: RedialPolicy | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if worker_timeout <= 2 * lease_interval:
            raise ValueError("worker_timeout must be more than two lease intervals")
        self.client = client
        self.store = store
        self.campaign = campaign
        self.name = name or default_worker_name()
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.poll = poll
        self.poll_interval = poll_interval
        self.max_poll_interval = max(poll_interval, max_poll_interval)
        self.follow_schedule = follow_schedule
        self.lease_interval = lease_interval
        self.worker_timeout = worker_timeout
        if webhook_port is not None and not webhook_secret:
            raise ValueError("a webhook port needs the webhook secret")
        self.webhook_port = webhook_port
        self.webhook_secret = webhook_secret
        self.webhook_host = webhook_host
        #: Busy/unanswered calls dialed again later (the campaign's redial
        #: sequence); the due rows are claimed like pending ones, by any worker.
        self.redial = redial
        #: The webhook sink, while the receiver runs (its counters).
        self.webhooks: StoreStatusSink | None = None
        self.limits = LocalLimits()
        self.worker_id: str | None = None
        self._lock = asyncio.Lock()
        self._flush_lock = asyncio.Lock()
        self._claims: dict[int, Claim] = {}
        self._calls: dict[str, tuple[int, int]] = {}  # call id: (row, attempt)
        self._yielded = 0
        self._results = 0
        self._started_at = time.monotonic()
        #: Wall time of the last trigger's result (benchmarks: dialing time).
        self.last_result_at: float | None = None
        self._ops: list[JournalOp] = []
        self._flushing: asyncio.Task[None] | None = None
        self._stopping = False
        self._dead = False
        self._adopted = 0
        self._seen_429 = 0
        self._dispatcher: Dispatcher | None = None
        self._poller: StatusPoller | None = None
        self._wake = asyncio.Event()
        self._freed = False
        self._freed_event = asyncio.Event()
        self._fatal: BaseException | None = None

    def stop(self) -> None:
        """Claim nothing more; the triggers in flight finish and are written,
        then :meth:`run` returns (calls still live go to the other workers)."""
        self._stopping = True
        self.limits.close()
        self._wake.set()
        if self._dispatcher is not None:
            self._dispatcher.stop()

    async def run(self) -> WorkerSummary:
        started = self._started_at = time.monotonic()
        store, cid = self.store, self.campaign.id
        worker = self.worker_id = await store.register_worker(cid, self.name)
        workers = await self._renew()
        if workers > 1 and self.limits.rate is not None:
            # The others still pace themselves for one worker less until
            # their next renewal: start after it (see .limits).
            await asyncio.sleep(self.lease_interval * 1.2)
            await self._renew()
        tasks: list[asyncio.Task[None]] = []
        poller: StatusPoller | None = None
        if self.poll:
            poller = self._poller = StatusPoller(
                self.client,
                concurrency=min(100, max(10, self.concurrency)),
                min_interval=self.poll_interval,
                max_interval=self.max_poll_interval,
                max_buffered_changes=10_000,
            )
            poller.start()
            tasks.append(asyncio.create_task(self._follow(poller), name="voicehub-worker-follow"))
        tasks.append(asyncio.create_task(self._renewals(), name="voicehub-worker-lease"))
        site = await self._serve_webhooks(poller)
        dispatcher = self._dispatcher = Dispatcher(
            self.client,
            self._inputs(),
            concurrency=self.concurrency,
            max_retries=self.max_retries,
            on_result=self._on_result,
        )
        if self._stopping:
            dispatcher.stop()
        try:
            async with dispatcher:
                async for _ in dispatcher:
                    pass
            await self._flush()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if site is not None:
                await site.cleanup()
            if poller is not None:
                await poller.aclose()
            try:
                await self._flush()
            finally:
                # Whatever is still live is followed by the others from now on.
                await store.leave(worker)
        if self._fatal is not None:
            raise self._fatal
        stats = dispatcher.stats
        return WorkerSummary(
            worker_id=worker,
            triggers=stats.requests,
            placed=stats.queued + stats.scheduled,
            retries=stats.retries,
            rate_limited=stats.rate_limited,
            adopted=self._adopted,
            counts=await store.counts(cid),
            wall_time=time.monotonic() - started,
            stopped=self._stopping and not self._dead,
            declared_dead=self._dead,
        )

    async def _serve_webhooks(self, poller: StatusPoller | None) -> web.AppRunner | None:
        """The SDK's receiver on ``webhook_port``, writing into the store (see
        :mod:`.webhooks`): any worker's receiver updates any worker's call."""
        if self.webhook_port is None:
            return None
        from aiohttp import web

        from voicehub_async.webhooks import WebhookReceiver, aiohttp_app

        assert self.webhook_secret is not None
        sink = self.webhooks = StoreStatusSink(self.store, poller)
        runner = web.AppRunner(aiohttp_app(WebhookReceiver(self.webhook_secret, poller=sink)))
        await runner.setup()
        try:
            await web.TCPSite(runner, self.webhook_host, self.webhook_port).start()
        except BaseException:
            await runner.cleanup()
            raise
        return runner

    # -- leases -----------------------------------------------------------------------

    async def _renew(self) -> int:
        """One renewal (see .limits); returns the number of live workers."""
        assert self.worker_id is not None
        dispatcher = self._dispatcher
        seen = dispatcher.stats.rate_limited if dispatcher is not None else 0
        limited = seen > self._seen_429
        self._seen_429 = seen
        async with self._lock:
            await self._flush()
            lease = await self.store.renew(
                self.campaign.id,
                self.worker_id,
                want=0 if self._stopping else self.concurrency,
                rate_limited=limited,
                retry_after=1.0,
                worker_timeout=self.worker_timeout,
                now=time.time(),
            )
        if lease.dead:
            logger.error(
                "worker %s was declared dead by the others (no heartbeat for %.0f s): stopping",
                self.worker_id,
                self.worker_timeout,
            )
            self._dead = True
            self.stop()
            return 0
        self.limits.update(lease)
        if self._poller is not None and not self._poller.closed and not self._stopping:
            placed = await self.store.adopt(self.campaign.id, self.worker_id)
            for call in placed:
                self._calls[call.call_id] = (call.row, call.attempt)
                self._poller.track(call.call_id)
            self._adopted += len(placed)
        self._wake.set()
        return lease.workers

    async def _renewals(self) -> None:
        """Renew every lease interval, or sooner (not more than every
        ``_EARLY_RENEWAL`` s) when this worker is out of live slots and one of
        its calls has ended: the store gives the slot back at a renewal."""
        loop = asyncio.get_running_loop()
        try:
            while not self._dead:
                due = loop.time() + self.lease_interval
                await asyncio.sleep(_EARLY_RENEWAL)
                while loop.time() < due and not (self._freed and self.limits.spare == 0):
                    self._freed_event.clear()
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._freed_event.wait(), due - loop.time())
                self._freed = False
                await self._renew()
        except Exception as exc:  # the store is gone: nothing can be recorded
            self._fatal = exc
            self.stop()

    # -- inputs: claims ---------------------------------------------------------------------

    async def _inputs(self) -> AsyncGenerator[CallRequest, None]:
        """Claimed requests, one per free dispatcher slot (pulled one at a time)."""
        ready: deque[Claim] = deque()
        assert self.worker_id is not None
        while not self._stopping:
            if ready:
                claim = ready.popleft()
                self._claims[self._yielded] = claim
                self._yielded += 1
                yield claim.request
                continue
            in_flight = self._yielded - self._results
            free = max(1, self.concurrency - in_flight)
            # Plus what this worker sends in about _CLAIM_AHEAD seconds at its
            # recent pace: when triggers are answered fast, slots free one by
            # one, and a claim (a round trip) per slot would be the bottleneck.
            # A claimed row still leaves within milliseconds.
            elapsed = time.monotonic() - self._started_at
            pace = self._results / elapsed if elapsed > 0.5 else 0.0
            ahead = min(self.concurrency, int(pace * _CLAIM_AHEAD))
            permits = await self.limits.take(free + ahead)
            if permits == 0:
                break
            async with self._lock:
                claims = await self.store.claim(
                    self.campaign.id, self.worker_id, permits, time.time()
                )
            self.limits.give_back(permits - len(claims))
            if claims:
                ready.extend(claims)
                continue
            if await self._finished():
                return
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), _IDLE_WAIT)
            except asyncio.TimeoutError:
                pass

    async def _finished(self) -> bool:
        """Nothing left for any worker: no row pending, being sent or followed."""
        if self._yielded != self._results or self._calls:
            return False
        await self._flush()
        return await self.store.unfinished(self.campaign.id, placed=self.poll) == 0

    # -- results and statuses ----------------------------------------------------------------

    def _write(self, op: JournalOp) -> None:
        self._ops.append(op)
        if self._flushing is None:
            self._flushing = asyncio.get_running_loop().create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        try:
            if len(self._ops) < _FLUSH_SIZE:
                await asyncio.sleep(_FLUSH_INTERVAL)
        finally:
            self._flushing = None
        try:
            await self._flush()
        except Exception as exc:  # the store is gone: what follows could not be recorded
            self._fatal = self._fatal or exc
            self.stop()

    async def _flush(self) -> None:
        """Commit the buffered writes. One flush at a time: two batches in flight
        on two connections could commit out of order (a call's ``started``
        after its ``completed``)."""
        async with self._flush_lock:
            while self._ops:
                ops, self._ops = self._ops, []
                await self.store.apply_ops(self.campaign.id, ops)

    def _on_result(self, result: DispatchResult) -> None:
        claim = self._claims.pop(result.index)
        self._results += 1
        self.last_result_at = time.time()
        self._wake.set()
        row, attempt, now = claim.row, claim.attempt, time.time()
        outcome = result.outcome
        if outcome in ("queued", "scheduled"):
            call = result.call
            assert call is not None
            terminal = call.status.is_terminal
            request = result.request
            when = request.scheduled_at if isinstance(request, CallRequest) else None
            self._write(
                RecordTriggered(
                    row,
                    attempt,
                    call.status.name,
                    call.id,
                    call.status.value,
                    result.attempts,
                    None if when is None else format_scheduled_at(when),
                    now,
                    terminal,
                )
            )
            poller = self._poller
            if poller is not None and not terminal and not poller.closed:
                self._calls[call.id] = (row, attempt)
                poller.track(call, scheduled_at=when if self.follow_schedule else None)
            return
        error = _error_text(result.error)
        if outcome == "not_sent" and not result.attempts:
            # Claimed, then stopped before it was sent: the attempt never was,
            # and another worker may dial the row.
            self._write(RecordUnsent(row, attempt, 0, error, now))
            return
        state = {"invalid": "invalid", "ambiguous": "ambiguous"}.get(outcome, "not_sent")
        self._write(RecordTriggerFailed(row, attempt, state, result.attempts, error, now))

    async def _follow(self, poller: StatusPoller) -> None:
        async for change in poller.changes(until_idle=False):
            self._on_change(change)

    def _on_change(self, change: StatusChange) -> None:
        known = self._calls.get(change.call_id)
        if known is None:
            return
        row, attempt = known
        if change.is_lost:
            state = "lost"
        elif change.is_timed_out:
            state = "timed_out"
        else:
            state = change.new.name
        now = time.time()
        started = now if state in ("started", "in-progress") else None
        final = change.is_final
        self._write(RecordStatus(row, change.call_id, state, change.new.value, now, final, started))
        if final:
            del self._calls[change.call_id]
            if self._poller is not None:
                self._poller.forget(change.call_id)
            due = (
                None if self.redial is None or not attempt else self.redial.due(state, attempt, now)
            )
            if due is not None:
                self._write(RecordRedial(row, attempt, due, now))
            self._freed = True
            self._freed_event.set()
            self._wake.set()
