"""``Campaign``: dial every row of a contacts file, safely, resumably.

The pieces and how they fit:

* :mod:`.contacts` streams the rows; :mod:`.journal` is the SQLite record of
  every row; :mod:`.groupcommit` batches the writes; :mod:`.hours` moves
  calls into the contact's calling hours.
* Rows go to a :class:`~voicehub_async.dispatch.Dispatcher` through an async
  generator that first merges each row with what the journal already knows
  about it (the journal is read in row order, in chunks, beside the file):
  rows already done are skipped, calls already placed are only followed, and
  rows left ``sending`` by a crash are reported ``ambiguous`` rather than
  dialed again (unless ``redial_ambiguous``).
* The dispatcher's ``on_sending`` hook commits the row's ``sending`` mark
  before the trigger goes out (group commit: the marks of the requests about
  to leave share one commit); ``on_result`` stores the call id or the failure.
* A :class:`~voicehub_async.poller.StatusPoller` follows placed calls to
  their final status; :mod:`.recordings` fetches recording URLs.
* At the end :mod:`.results` writes one line per row from the journal.

Nothing here installs signal handlers: :meth:`Campaign.stop` (finish what is
in flight, then return) and :meth:`Campaign.abort` (cut in-flight requests
short, flush the journal, return) are what a command line or a backend calls.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Final

import attrs

from voicehub_async.dispatch import Dispatcher, DispatchResult
from voicehub_async.errors import AuthenticationError, InvalidRequestError
from voicehub_async.models import CallRequest, format_scheduled_at
from voicehub_async.poller import StatusChange, StatusPoller
from voicehub_async.stats import LatencyHistogram

from .contacts import (
    ContactRow,
    ContactsFormat,
    check_columns,
    detect_format,
    fingerprint_file,
    read_contacts,
    row_request,
)
from .groupcommit import GroupCommitter
from .hours import CallingHours
from .journal import (
    AMBIGUOUS,
    DONE_STATES,
    INVALID,
    LOST,
    NOT_SENT,
    SENDING,
    SQL_AMBIGUOUS,
    SQL_INVALID,
    SQL_MARK_SENDING,
    SQL_STATUS,
    SQL_TRIGGER_FAILED,
    SQL_TRIGGERED,
    Durability,
    Journal,
    JournalMismatchError,
    JournalRow,
)
from .live import DEFAULT_MAX_CALL_TIME, LiveControl, live_host
from .progress import dial_rate
from .reconcile import Reconciled, reconciled_op
from .recordings import RecordingFetcher
from .results import write_results
from .summary import CampaignProgress, CampaignSummary

if TYPE_CHECKING:
    from voicehub_async.client import VoiceHubClient

__all__ = ["Campaign", "default_paths"]

logger = logging.getLogger("voicehub_async.campaign")

#: The generator yields to the loop after skipping this many rows in a row,
#: so that resuming a long, mostly-done file does not freeze the display.
_SKIP_BATCH: Final = 256
_QUEUED_STATES: Final = frozenset({"queued", "scheduled"})
_STARTED_STATES: Final = frozenset({"started", "in-progress"})
_AMBIGUOUS_AFTER_CRASH: Final = (
    "the run stopped while this row's trigger was being sent: the call may have been "
    "placed; check VoiceHub before dialing it again (--redial-ambiguous)"
)


def default_paths(
    source: str | Path, results: str | Path | None = None, journal: str | Path | None = None
) -> tuple[Path, Path]:
    """The (results, journal) paths: ``<contacts>.results.csv`` beside the
    contacts file, and ``<results>.journal.db`` beside the results."""
    source = Path(source)
    out = Path(results) if results is not None else source.with_name(source.stem + ".results.csv")
    db = Path(journal) if journal is not None else out.with_name(out.stem + ".journal.db")
    return out, db


class _Entry:
    """A row handed to the dispatcher, until its result comes back."""

    __slots__ = ("digest", "marked", "row", "to")

    def __init__(self, row: int, digest: str, to: str | None) -> None:
        self.row = row
        self.digest = digest
        self.to = to
        self.marked = False


class _Tracked:
    """A placed call being followed: its row, its display bucket, when it was queued."""

    __slots__ = ("bucket", "queued_at", "row", "started")

    def __init__(self, row: int, bucket: str, queued_at: float | None) -> None:
        self.row = row
        self.bucket = bucket
        self.queued_at = queued_at
        self.started = False


def _bucket(state: str) -> str:
    """Which progress counter a row in ``state`` belongs to."""
    if state == "completed":
        return "completed"
    if state in DONE_STATES or state in (NOT_SENT, "timed_out"):
        return "failed"
    if state in _QUEUED_STATES:
        return "queued"
    return "in_progress"


def _error_text(error: BaseException | None) -> str | None:
    if error is None:
        return None
    if isinstance(error, InvalidRequestError):
        return f"{error.field}: {error.reason}"
    return " ".join(str(error).split()) or type(error).__name__


@attrs.define
class _Counters:
    processed: int = 0
    sent: int = 0
    queued: int = 0
    in_progress: int = 0
    completed: int = 0
    failed: int = 0
    invalid: int = 0
    ambiguous: int = 0

    def add(self, bucket: str, n: int = 1) -> None:
        setattr(self, bucket, getattr(self, bucket) + n)


class Campaign:
    """Dial every contact of ``source`` (CSV or JSONL), with a journal.

    ::

        async with VoiceHubClient() as client:
            summary = await Campaign(client, "contacts.csv", agent_id="agent-1").run()
            print(summary.counts, summary.exit_code)

    Options (the command line's flags map onto them):

    * ``agent_id``: the agent for rows without an ``agent_id`` column.
    * ``journal``, ``results``: paths (defaults: see :func:`default_paths`);
      ``results=False`` writes no results file.
    * ``columns``: the file's column for a known one, e.g. ``{"to": "phone"}``.
    * ``concurrency``, ``rate_limit`` (calls per second), ``max_retries``:
      passed to the dispatcher. Give the client ``max_connections`` at least
      ``concurrency``.
    * ``poll``: follow each call to its final status (``poll_interval`` is the
      shortest time between two reads of a call, ``max_poll_interval`` the
      longest); ``follow_schedule=False`` reads scheduled calls from the start
      instead of waiting for their time (for simulators with a fast clock).
    * ``recordings``: store each completed call's recording URL.
    * ``calling_hours``: a :class:`~.hours.CallingHours`.
    * ``redial_ambiguous``: dial again rows whose earlier trigger may have
      placed a call (the person may be phoned twice).
    * ``durability``: ``"normal"`` (the default: every commit survives a
      crash or kill of this process, the OS writes it to the disk within
      seconds) or ``"full"`` (each commit is flushed to the disk before the
      trigger goes out, so a ``sending`` mark also survives a power cut or
      an OS crash; costs an fsync per group commit, see the benchmark).
    * ``now``: the clock for calling hours (tests).

    :meth:`run` can be called once. A journal made for another contacts file
    (or another agent) raises :class:`~.journal.JournalMismatchError` before
    anything is sent.
    """

    def __init__(
        self,
        client: VoiceHubClient,
        source: str | Path,
        *,
        agent_id: str | None = None,
        journal: str | Path | None = None,
        results: str | Path | bool | None = None,
        format: ContactsFormat | None = None,
        columns: Mapping[str, str] | None = None,
        concurrency: int = 50,
        rate_limit: float | None = None,
        max_retries: int | None = None,
        poll: bool = True,
        poll_interval: float = 2.0,
        max_poll_interval: float = 30.0,
        follow_schedule: bool = True,
        recordings: bool = False,
        calling_hours: CallingHours | None = None,
        redial_ambiguous: bool = False,
        durability: Durability = "normal",
        now: Callable[[], datetime] | None = None,
        max_live: int | None = None,
        max_call_time: float = DEFAULT_MAX_CALL_TIME,
        webhook_port: int | None = None,
        webhook_secret: str | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.client = client
        self.source = Path(source)
        out, db = default_paths(
            self.source, results if isinstance(results, (str, Path)) else None, journal
        )
        self.results_path: Path | None = None if results is False else out
        self.journal_path = db
        self.agent_id = agent_id
        self.format = format
        self.columns = check_columns(columns)
        self.concurrency = concurrency
        self.rate_limit = rate_limit
        self.max_retries = max_retries
        self.poll = poll
        self.poll_interval = poll_interval
        self.max_poll_interval = max(poll_interval, max_poll_interval)
        self.follow_schedule = follow_schedule
        self.recordings = recordings
        self.calling_hours = calling_hours
        self.redial_ambiguous = redial_ambiguous
        self.durability: Durability = durability
        self._now = now or (lambda: datetime.now(timezone.utc))
        self._live = LiveControl(
            host=live_host(client),
            stop=self.stop,
            max_live=max_live,
            max_call_time=max_call_time,
            follow=poll,
            webhook_port=webhook_port,
            webhook_secret=webhook_secret,
        )

        self._counters = _Counters()
        self._entries: dict[int, _Entry] = {}
        self._calls: dict[str, _Tracked] = {}
        self._next_index = 0
        self._total_estimate: int | None = None
        self._rows_read = 0
        self._start_delays = LatencyHistogram()
        self._phase = "starting"
        self._started = False
        self._stopping = False
        self._aborting = False
        self._stop_event: asyncio.Event | None = None
        self._fatal: BaseException | None = None
        self._clock = time.monotonic
        self._started_at: float | None = None
        self._journal: Journal | None = None
        self._writer: GroupCommitter | None = None
        self._poller: StatusPoller | None = None
        self._dispatcher: Dispatcher | None = None
        self._fetcher: RecordingFetcher | None = None

    def __repr__(self) -> str:
        return f"<Campaign source={str(self.source)!r} phase={self._phase}>"

    # -- control -------------------------------------------------------------------

    def stop(self) -> None:
        """Stop dialing; calls in flight finish and are journaled, then
        :meth:`run` returns (calls still in progress are followed on resume)."""
        if self._stopping:
            return
        self._stopping = True
        self._phase = "stopping"
        if self._dispatcher is not None:
            self._dispatcher.stop()
        if self._stop_event is not None:
            self._stop_event.set()

    def abort(self) -> None:
        """Stop at once: requests in flight are cut off (their rows stay
        ``sending``, hence ambiguous on resume), buffered journal writes are
        flushed, no results file is written. The journal still resumes correctly."""
        self._aborting = True
        self.stop()
        if self._dispatcher is not None:
            asyncio.get_running_loop().create_task(self._dispatcher.aclose(drain_timeout=0))

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def live(self) -> LiveControl:
        """The live-call cap, the stop-early breaker and webhooks of this campaign
        (``live.cause`` says why dialing stopped early, if it did)."""
        return self._live

    def progress(self) -> CampaignProgress:
        """A snapshot of where the campaign is (cheap; for progress displays)."""
        c = self._counters
        now = self._clock()
        elapsed = 0.0 if self._started_at is None else now - self._started_at
        dispatcher = self._dispatcher
        stats = dispatcher.stats if dispatcher is not None else None
        rate = dial_rate(stats) if stats is not None and stats.elapsed > 0.5 else 0.0
        total = self._total_estimate
        eta = None
        if total is not None and rate > 0 and self._phase == "dialing":
            eta = max(0.0, (total - c.processed) / rate)
        retries = stats.retries if stats is not None else 0
        return CampaignProgress(
            phase=self._phase,
            total=total,
            processed=c.processed,
            sent=c.sent,
            queued=c.queued,
            in_progress=c.in_progress,
            completed=c.completed,
            failed=c.failed,
            invalid=c.invalid,
            ambiguous=c.ambiguous,
            retries=retries,
            rate=rate,
            eta=eta,
            elapsed=elapsed,
            waiting=self._live.waiting(),
        )

    # -- the run -------------------------------------------------------------------------

    async def run(self) -> CampaignSummary:
        """Run (or resume) the campaign; returns its summary.

        Raises :class:`~.contacts.ContactsError` for an unusable file,
        :class:`~.journal.JournalError` for an unusable or mismatched journal
        (both before anything is sent), and :class:`~voicehub_async.VoiceHubError`
        when the service refuses the API key.
        """
        if self._started:
            raise RuntimeError("a Campaign runs once; make a new one to resume")
        self._started = True
        self._started_at = self._clock()
        self._stop_event = asyncio.Event()
        if self._stopping:
            self._stop_event.set()
        fingerprint = await asyncio.to_thread(fingerprint_file, self.source)
        kind = self.format or detect_format(self.source)
        # Newlines, minus the CSV header: exact for files without blank lines
        # or multi-line cells, and only used for the ETA.
        self._total_estimate = max(0, fingerprint.approx_rows - (kind == "csv"))
        contacts = read_contacts(self.source, kind, columns=self.columns)
        try:
            journal = await asyncio.to_thread(
                Journal.open, self.journal_path, durability=self.durability
            )
        except BaseException:
            _close(contacts)
            raise
        self._journal = journal
        try:
            resumed = not journal.bind(
                {"source_sha256": fingerprint.sha256, "agent_id": self.agent_id or ""},
                describe={
                    "source_name": self.source.name,
                    "source_size": str(fingerprint.size),
                    "source_rows": str(fingerprint.approx_rows),
                },
            )
            await self._run(journal, contacts)
            return await self._finish(journal, contacts, resumed)
        finally:
            _close(contacts)
            journal.close()

    async def _run(self, journal: Journal, contacts: Iterator[ContactRow]) -> None:
        counters = self._counters
        # Telemetry's gauges read these only when metrics are collected.
        with self.client.telemetry.watch(
            "campaign",
            lambda: counters.queued + counters.in_progress,
            lambda: self.progress().rate,
        ):
            await self._run_watched(journal, contacts)

    async def _run_watched(self, journal: Journal, contacts: Iterator[ContactRow]) -> None:
        writer = self._writer = GroupCommitter(journal)
        try:
            poller: StatusPoller | None = None
            follower: asyncio.Task[None] | None = None
            if self.poll:
                poller = self._poller = StatusPoller(
                    self.client,
                    concurrency=min(100, max(10, self.concurrency // 2)),
                    min_interval=self.poll_interval,
                    max_interval=self.max_poll_interval,
                    max_buffered_changes=10_000,
                )
                poller.start()
                follower = asyncio.get_running_loop().create_task(
                    self._follow(poller), name="voicehub-campaign-follow"
                )
            if self.recordings:
                self._fetcher = RecordingFetcher(
                    self.client, writer, retry_delay=self.poll_interval
                )
            try:
                async with self._live.serving(
                    poller, known=self._calls.__contains__, on_reconciled=self._on_reconciled
                ):
                    await self._dial(journal, contacts)
                    self._phase = "waiting"
                    if poller is not None and not self._stopping:
                        await self._wait_for_calls(poller)
            finally:
                if poller is not None:
                    await poller.aclose()
                if follower is not None:
                    await follower
                if self._fetcher is not None:
                    if self._stopping:
                        await self._fetcher.close()
                    else:
                        await self._fetcher.drain()
            await writer.aclose()
        except BaseException:
            if self._aborting:
                writer.abandon()
            else:
                try:
                    await writer.aclose()
                except Exception:
                    writer.abandon()
            raise

    async def _dial(self, journal: Journal, contacts: Iterator[ContactRow]) -> None:
        self._phase = "dialing" if not self._stopping else "stopping"
        plan = self._plan(journal, contacts)
        inputs: Iterator[CallRequest] | AsyncGenerator[CallRequest, None]
        if journal.rows_after(0, 1):
            inputs = self._async_inputs(plan)
        else:
            inputs = self._sync_inputs(plan)
        dispatcher = self._dispatcher = Dispatcher(
            self.client,
            inputs,
            concurrency=self.concurrency,
            rate_limit=self.rate_limit,
            max_retries=self.max_retries,
            on_sending=self._on_sending,
            on_result=self._on_result,
            gate=self._live,
            # With calling hours every row is validated here already (the
            # number's zones are needed first): a PreparedRequest is not
            # validated twice.
        )
        if self._stopping:
            dispatcher.stop()
        try:
            async with dispatcher:
                async for _ in dispatcher:
                    pass
        finally:
            if isinstance(inputs, AsyncGenerator):
                await inputs.aclose()
        if self._fatal is not None:
            raise self._fatal

    async def _wait_for_calls(self, poller: StatusPoller) -> None:
        assert self._stop_event is not None
        waiting = asyncio.ensure_future(poller.wait_all())
        stopped = asyncio.ensure_future(self._stop_event.wait())
        try:
            await asyncio.wait({waiting, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for future in (waiting, stopped):
                future.cancel()
            await asyncio.gather(waiting, stopped, return_exceptions=True)

    async def _finish(
        self, journal: Journal, contacts: Iterator[ContactRow], resumed: bool
    ) -> CampaignSummary:
        self._phase = "done"
        total = self._rows_read
        interrupted = self._stopping
        if interrupted and not self._aborting:
            # Rows never read are pending: count them, so the summary (and
            # the results file) still has one line per contact.
            total = await asyncio.to_thread(_count_rest, contacts, total)
        elif self._aborting:
            total = max(total, self._total_estimate or 0)
        results = None
        if self.results_path is not None and not self._aborting:
            await asyncio.to_thread(write_results, self.results_path, journal.iter_rows(), total)
            results = self.results_path
        counts = journal.counts()
        counts.setdefault("pending", 0)
        counts["pending"] += max(0, total - sum(counts.values()))
        if not counts["pending"]:
            del counts["pending"]
        self._total_estimate = total  # the progress bar ends at the real total
        dispatcher = self._dispatcher
        stats = dispatcher.stats if dispatcher is not None else None
        assert self._started_at is not None
        wall = self._clock() - self._started_at
        return CampaignSummary(
            total=total,
            counts=counts,
            requests=stats.requests if stats else 0,
            retries=stats.retries if stats else 0,
            rate_limited=stats.rate_limited if stats else 0,
            placed=(stats.queued + stats.scheduled) if stats else 0,
            throughput=dial_rate(stats),
            latency_p50=stats.latency_p50 if stats else None,
            latency_p95=stats.latency_p95 if stats else None,
            latency_p99=stats.latency_p99 if stats else None,
            start_delay_p50=self._start_delays.quantile(0.50),
            start_delay_p95=self._start_delays.quantile(0.95),
            wall_time=wall,
            journal=self.journal_path,
            results=results,
            resumed=resumed,
            interrupted=interrupted,
            polled=self.poll,
            journal_commits=self._writer.commits if self._writer is not None else 0,
        )

    # -- rows into requests -----------------------------------------------------------

    def _plan(
        self, journal: Journal, contacts: Iterator[ContactRow]
    ) -> Iterator[CallRequest | None]:
        """The requests to send, in row order; everything else is dealt with here.

        Yields None after every few hundred rows skipped in a row (already
        done on a resume), so that an async caller can let the loop breathe.
        """
        known_rows = journal.iter_rows()
        known = next(known_rows, None)
        skipped = 0
        for contact in contacts:
            if self._stopping:
                return
            self._rows_read = contact.row
            while known is not None and known.row < contact.row:
                known = next(known_rows, None)
            previous = known if known is not None and known.row == contact.row else None
            if previous is not None and previous.input_hash != contact.digest:
                raise JournalMismatchError(
                    f"row {contact.row} of {self.source} differs from the row the journal "
                    f"{self.journal_path} recorded; use a new --journal for a changed file"
                )
            request = self._decide(contact, previous)
            if request is None:
                skipped += 1
                if skipped % _SKIP_BATCH == 0:
                    yield None
                continue
            skipped = 0
            index = self._next_index
            self._next_index = index + 1
            to = request.to if isinstance(request.to, str) else None
            self._entries[index] = _Entry(contact.row, contact.digest, to)
            yield request
        self._total_estimate = self._rows_read  # the file is read: the real total

    @staticmethod
    def _sync_inputs(plan: Iterator[CallRequest | None]) -> Iterator[CallRequest]:
        """For a fresh journal: the dispatcher's fast path (it reads and
        validates small batches of a plain iterator at once)."""
        for request in plan:
            if request is not None:
                yield request

    @staticmethod
    async def _async_inputs(
        plan: Iterator[CallRequest | None],
    ) -> AsyncGenerator[CallRequest, None]:
        """For a resume: long runs of rows already done are skipped without
        keeping the event loop (the display, the poller) waiting."""
        for request in plan:
            if request is None:
                await asyncio.sleep(0)
            else:
                yield request

    def _decide(self, contact: ContactRow, previous: JournalRow | None) -> CallRequest | None:
        """The request for ``contact``, or None when it needs no trigger
        (after recording, skipping or following it)."""
        c = self._counters
        if previous is not None:
            state = previous.state
            redial = self.redial_ambiguous and state in (AMBIGUOUS, SENDING)
            if state == SENDING and not redial:
                assert self._writer is not None
                now = time.time()
                self._writer.write((SQL_AMBIGUOUS, (_AMBIGUOUS_AFTER_CRASH, now, now, contact.row)))
                c.processed += 1
                c.failed += 1
                c.ambiguous += 1
                return None
            if state in DONE_STATES and not redial:
                c.processed += 1
                c.add(_bucket(state))
                if state == INVALID:
                    c.invalid += 1
                elif state == AMBIGUOUS:
                    c.ambiguous += 1
                elif previous.call_id is not None:
                    c.sent += 1
                if (
                    state == "completed"
                    and self._fetcher is not None
                    and previous.call_id
                    and not previous.recording_url
                ):
                    self._fetcher.add(contact.row, previous.call_id)
                return None
            if previous.call_id is not None and state not in (NOT_SENT, "pending") and not redial:
                self._resume_call(contact.row, previous)
                return None
        try:
            request = row_request(contact, self.agent_id)
            if self.calling_hours is not None:
                request = self._within_hours(request)
        except InvalidRequestError as error:
            raw = contact.fields.get("to")
            self._record_invalid(contact.row, contact.digest, raw, error)
            return None
        return request

    def _within_hours(self, request: CallRequest) -> CallRequest:
        """``request`` validated, with ``scheduled_at`` moved into the calling hours."""
        assert self.calling_hours is not None
        now = self._now()
        prepared = self.client.prepare(request, now=now)
        when = self.calling_hours.next_allowed(prepared.to, now, prepared.scheduled_at)
        if when != prepared.scheduled_at:
            prepared = attrs.evolve(prepared, scheduled_at=when)
        return prepared

    def _resume_call(self, row: int, previous: JournalRow) -> None:
        """A call placed by an earlier run: follow it (or count it, without polling)."""
        c = self._counters
        assert previous.call_id is not None
        c.processed += 1
        c.sent += 1
        bucket = _bucket(previous.state)
        c.add(bucket)
        poller = self._poller
        if poller is None or poller.closed:
            return
        self._calls[previous.call_id] = _Tracked(row, bucket, None)
        self._live.resumed(previous.call_id)
        poller.track(previous.call_id)

    def _record_invalid(self, row: int, digest: str, raw: object, error: BaseException) -> None:
        assert self._writer is not None
        now = time.time()
        number = None if raw is None else str(raw)
        self._writer.write((SQL_INVALID, (row, digest, number, _error_text(error), now, now)))
        c = self._counters
        c.processed += 1
        c.invalid += 1
        c.failed += 1

    # -- dispatcher hooks ------------------------------------------------------------------

    def _on_sending(self, index: int, prepared: CallRequest) -> Awaitable[None] | None:
        """Commit the row's ``sending`` mark before its first request goes out."""
        entry = self._entries[index]
        if entry.marked:
            return None  # a retry: the mark made for the first attempt still holds
        entry.marked = True
        assert self._writer is not None
        now = time.time()
        return self._writer.mark(
            (SQL_MARK_SENDING, (entry.row, entry.digest, prepared.to, now, now))
        )

    def _on_result(self, result: DispatchResult) -> None:
        """Journal what became of a trigger (buffered: committed within ms)."""
        entry = self._entries.pop(result.index)
        writer = self._writer
        assert writer is not None
        c = self._counters
        now = time.time()
        outcome = result.outcome
        if outcome in ("queued", "scheduled"):
            call = result.call
            assert call is not None
            state = call.status.name
            terminal = call.status.is_terminal
            request = result.request
            when = request.scheduled_at if isinstance(request, CallRequest) else None
            writer.write(
                (
                    SQL_TRIGGERED,
                    (
                        state,
                        call.id,
                        call.status.value,
                        result.attempts,
                        None if when is None else format_scheduled_at(when),
                        now,
                        now if terminal else None,
                        now,
                        entry.row,
                    ),
                )
            )
            c.processed += 1
            c.sent += 1
            bucket = _bucket(state)
            c.add(bucket)
            poller = self._poller
            if poller is not None and not terminal and not poller.closed:
                self._calls[call.id] = _Tracked(entry.row, bucket, self._clock())
                follow = when if self.follow_schedule else None
                poller.track(call, scheduled_at=follow)
            return
        error_text = _error_text(result.error)
        if outcome == "invalid":
            assert result.error is not None
            self._record_invalid(entry.row, entry.digest, entry.to, result.error)
            return
        if outcome == "not_sent":
            if entry.marked or result.attempts:
                # Marked, then stopped before (re)sending: provably not placed.
                params = ("pending", result.attempts, error_text, None, now, entry.row)
                writer.write((SQL_TRIGGER_FAILED, params))
            return
        state = AMBIGUOUS if outcome == "ambiguous" else NOT_SENT
        writer.write(
            (SQL_TRIGGER_FAILED, (state, result.attempts, error_text, now, now, entry.row))
        )
        c.processed += 1
        c.failed += 1
        if state == AMBIGUOUS:
            c.ambiguous += 1
            self._live.ambiguous(entry.row, result)
        if isinstance(result.error, AuthenticationError) and self._fatal is None:
            # Every other row would be refused the same way.
            self._fatal = result.error
            self.stop()

    def _on_reconciled(self, found: Reconciled) -> None:
        """A webhook told which call an ambiguous row placed: follow it."""
        assert self._writer is not None and isinstance(found.row, int)
        self._writer.write(reconciled_op(found))
        c = self._counters
        c.failed -= 1
        c.ambiguous -= 1
        c.sent += 1
        c.in_progress += 1
        poller = self._poller
        if poller is not None and not poller.closed:
            self._calls[found.call_id] = _Tracked(found.row, "in_progress", None)
            poller.track(found.call_id)

    # -- following calls ---------------------------------------------------------------------

    async def _follow(self, poller: StatusPoller) -> None:
        async for change in poller.changes(until_idle=False):
            self._on_change(change)

    def _on_change(self, change: StatusChange) -> None:
        tracked = self._calls.get(change.call_id)
        if tracked is None:
            return
        if change.is_lost:
            state = LOST
        elif change.is_timed_out:
            state = "timed_out"
        else:
            state = change.new.name
        c = self._counters
        bucket = _bucket(state)
        if bucket != tracked.bucket:
            c.add(tracked.bucket, -1)
            c.add(bucket)
            tracked.bucket = bucket
        started_at = None
        now = time.time()
        if state in _STARTED_STATES and not tracked.started:
            tracked.started = True
            started_at = now
            if tracked.queued_at is not None:
                self._start_delays.add(max(0.0, self._clock() - tracked.queued_at))
        final = change.is_final
        assert self._writer is not None
        self._writer.write(
            (
                SQL_STATUS,
                (state, change.new.value, started_at, now if final else None, now, tracked.row),
            )
        )
        if final:
            del self._calls[change.call_id]
            self._live.call_ended(change.call_id)
            if self._poller is not None:
                # The poller keeps final changes for late waiters; nobody waits
                # here, and a million of them would be a million entries.
                self._poller.forget(change.call_id)
            if state == "completed" and self._fetcher is not None:
                self._fetcher.add(tracked.row, change.call_id)


def _close(contacts: Iterator[ContactRow]) -> None:
    """Close the contacts file (the reader is a generator holding it open)."""
    close = getattr(contacts, "close", None)
    if close is not None:
        close()


def _count_rest(contacts: Iterator[ContactRow], seen: int) -> int:
    """The number of the last row, reading what is left of ``contacts``."""
    last = seen
    for contact in contacts:
        last = contact.row
    return last
