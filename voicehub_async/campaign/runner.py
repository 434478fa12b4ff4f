"""``Campaign``: dial every row of a contacts file, safely, resumably.

The pieces and how they fit:

* :mod:`.contacts` streams the rows; :mod:`.planning` decides, row by row,
  what each needs (dial, follow, skip as duplicate or suppressed, report);
  :mod:`.journal` is the SQLite record of every row and every attempt;
  :mod:`.groupcommit` batches the writes; :mod:`.hours` keeps calls inside
  the contact's calling hours and days; :mod:`.redial` says when a contact
  is dialed again; :mod:`.suppression` reads do-not-call lists.
* Rows go to a :class:`~voicehub_async.dispatch.Dispatcher` through a
  generator that merges each row with what the journal already knows about
  it (the journal is read in row order, in chunks, beside the file) and
  carries out the plan's decision; redials join that stream when they are
  due, and the stream stays open while one may still come.
* The dispatcher's ``on_sending`` hook commits the row's ``sending`` mark
  before the trigger goes out (group commit: the marks of the requests about
  to leave share one commit); ``on_result`` stores the call id or the failure.
* A :class:`~voicehub_async.poller.StatusPoller` follows placed calls to
  their final status (:meth:`Campaign._on_call_end` is where a call's end is
  handled); :mod:`.recordings` fetches recording URLs.
* At the end :mod:`.results` writes one line per row from the journal (and,
  if asked, one per attempt).

The three points where a call's life is handled, kept small so that other
features can hook in: :meth:`Campaign._on_sending` (before a trigger),
:meth:`Campaign._on_result` (a trigger's answer) and
:meth:`Campaign._on_call_end` (a call's final status).

Following stops at a horizon (``max_wait``, default two hours after the last
trigger): calls scheduled later, redials due later and calls still live then
stay in the journal as they are, the summary says so, and running again
follows them. When everything left is due after the horizon, the run ends at
once rather than wait for nothing.

Nothing here installs signal handlers: :meth:`Campaign.stop` (finish what is
in flight, then return) and :meth:`Campaign.abort` (cut in-flight requests
short, flush the journal, return) are what a command line or a backend calls.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
import logging
import math
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Final

from voicehub_async.dispatch import Dispatcher, DispatchResult
from voicehub_async.errors import AuthenticationError, InvalidRequestError
from voicehub_async.models import CallRequest, CallStage, PreparedRequest, format_scheduled_at
from voicehub_async.poller import StatusChange, StatusPoller
from voicehub_async.stats import LatencyHistogram

from .contacts import (
    ContactRow,
    ContactsFormat,
    check_columns,
    detect_format,
    fingerprint_file,
    read_contacts,
)
from .counters import Counters, bucket
from .groupcommit import GroupCommitter
from .hours import CallingHours
from .journal import (
    AMBIGUOUS,
    INVALID,
    LOST,
    NOT_SENT,
    Durability,
    JournalMismatchError,
    JournalStore,
    MarkSending,
    RecordAmbiguous,
    RecordInvalid,
    RecordReconciled,
    RecordRedial,
    RecordSkipped,
    RecordStatus,
    RecordTriggered,
    RecordTriggerFailed,
    RecordUnsent,
)
from .live import DEFAULT_MAX_CALL_TIME, LiveControl, live_host
from .planning import (
    Decision,
    Dial,
    Done,
    Follow,
    Invalid,
    LeftSending,
    PlanOptions,
    Redial,
    SeenNumbers,
    Skip,
    plan_row,
    schedule_within_hours,
)
from .reconcile import Reconciled, reconciled_note
from .recordings import RecordingFetcher
from .redial import RedialPolicy
from .results import write_attempts, write_results
from .store import is_postgres_url, open_journal
from .summary import CampaignProgress, CampaignSummary, placed_rate
from .suppression import SuppressionList

if TYPE_CHECKING:
    from voicehub_async.client import VoiceHubClient

__all__ = ["DEFAULT_MAX_WAIT", "Campaign", "default_paths"]

logger = logging.getLogger("voicehub_async.campaign")

#: How long following goes on after the last trigger (seconds): two hours.
DEFAULT_MAX_WAIT: Final = 7200.0
#: The generator yields to the loop after skipping this many rows in a row,
#: so that resuming a long, mostly-done file does not freeze the display.
_SKIP_BATCH: Final = 256
#: Stages at which a call counts as started (for the queued-to-started delay).
_STARTED_STAGES: Final = frozenset({CallStage.STARTED, CallStage.IN_PROGRESS})
#: Longest sleep while waiting, so that the horizon and stops are seen promptly.
_IDLE_STEP: Final = 1.0
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

    __slots__ = ("attempt", "digest", "marked", "note", "redial", "request", "row", "to")

    def __init__(
        self,
        row: int,
        digest: str,
        request: PreparedRequest,
        attempt: int,
        note: str | None,
        redial: bool,
        keep: bool,
    ) -> None:
        self.row = row
        self.digest = digest
        self.to = request.to if isinstance(request.to, str) else None
        self.attempt = attempt
        self.note = note
        #: Counted already (a redial of a row processed before).
        self.redial = redial
        #: Kept for a redial; None without a redial policy.
        self.request = request if keep else None
        self.marked = False


class _Tracked:
    """A placed call being followed."""

    __slots__ = ("attempt", "bucket", "digest", "due", "queued_at", "request", "row", "started")

    def __init__(
        self,
        row: int,
        digest: str,
        attempt: int,
        bucket: str,
        queued_at: float | None,
        request: PreparedRequest | None,
        due: float | None = None,
    ) -> None:
        self.row = row
        self.digest = digest
        self.attempt = attempt
        self.bucket = bucket
        self.queued_at = queued_at
        self.request = request
        #: Unix time a scheduled call is due (None: live now).
        self.due = due
        self.started = False


class _Due:
    """A redial waiting for its time (in a heap, by ``due``)."""

    __slots__ = ("attempt", "digest", "due", "request", "row")

    def __init__(
        self, due: float, row: int, digest: str, attempt: int, request: PreparedRequest
    ) -> None:
        self.due = due
        self.row = row
        self.digest = digest
        self.attempt = attempt
        self.request = request


def _error_text(error: BaseException | None) -> str | None:
    if error is None:
        return None
    if isinstance(error, InvalidRequestError):
        return f"{error.field}: {error.reason}"
    return " ".join(str(error).split()) or type(error).__name__


class Campaign:
    """Dial every contact of ``source`` (CSV or JSONL), with a journal.

    ::

        async with VoiceHubClient() as client:
            summary = await Campaign(client, "contacts.csv", agent_id="agent-1").run()
            print(summary.counts, summary.exit_code)

    Options (the command line's flags map onto them):

    * ``agent_id``: the agent for rows without an ``agent_id`` column.
    * ``journal``, ``results``: paths (defaults: see :func:`default_paths`);
      ``results=False`` writes no results file; ``attempts``: a path for
      one line per dial attempt (default: none).
    * ``columns``: the file's column for a known one, e.g. ``{"to": "phone"}``.
    * ``concurrency``, ``rate_limit`` (calls per second), ``max_retries``:
      passed to the dispatcher. Give the client ``max_connections`` at least
      ``concurrency``.
    * ``poll``: follow each call to its final status (``poll_interval`` is the
      shortest time between two reads of a call, ``max_poll_interval`` the
      longest); ``follow_schedule=False`` reads scheduled calls from the start
      instead of waiting for their time (for simulators with a fast clock).
      ``max_wait``: seconds following goes on after the last trigger
      (default two hours; None: no limit); what is left then stays in the
      journal for the next run.
    * ``recordings``: store each completed call's recording URL.
    * ``calling_hours``: a :class:`~.hours.CallingHours` (hours and days).
    * ``allow_duplicates``: dial a number again when it is on several rows
      (by default only its first row is dialed, the others are ``duplicate``).
    * ``suppress``: do-not-call lists, as paths (read with the client's
      ``default_region``) or a :class:`~.suppression.SuppressionList`;
      matching rows are ``suppressed``, never dialed.
    * ``redial``: a :class:`~.redial.RedialPolicy` (needs ``poll``).
    * ``redial_ambiguous``: dial again rows whose earlier trigger may have
      placed a call (the person may be phoned twice).
    * ``durability``: ``"normal"`` (the default: every commit survives a
      crash or kill of this process, the OS writes it to the disk within
      seconds) or ``"full"`` (each commit is flushed to the disk before the
      trigger goes out, so a ``sending`` mark also survives a power cut or
      an OS crash; costs an fsync per group commit, see the benchmark).
    * ``max_live``: calls of the campaign live at once at most (see
      :mod:`.live`); ``max_call_time``: seconds an ambiguous trigger keeps
      its live-call slot; ``webhook_port``/``webhook_secret``: receive
      VoiceHub's webhooks beside the campaign (calls finish, slots free and
      ambiguous rows are reconciled as soon as VoiceHub says so).
    * ``now``: the clock for calling hours (tests).

    :meth:`open` checks everything that can be checked before dialing (the
    file, the lists, the journal) and :meth:`run` calls it if needed; a
    Campaign runs once. A journal made for another contacts file (or another
    agent) raises :class:`~.journal.JournalMismatchError` before anything is
    sent.
    """

    def __init__(
        self,
        client: VoiceHubClient,
        source: str | Path,
        *,
        agent_id: str | None = None,
        journal: str | Path | None = None,
        results: str | Path | bool | None = None,
        attempts: str | Path | None = None,
        format: ContactsFormat | None = None,
        columns: Mapping[str, str] | None = None,
        concurrency: int = 50,
        rate_limit: float | None = None,
        max_retries: int | None = None,
        poll: bool = True,
        poll_interval: float = 2.0,
        max_poll_interval: float = 30.0,
        follow_schedule: bool = True,
        max_wait: float | None = DEFAULT_MAX_WAIT,
        recordings: bool = False,
        calling_hours: CallingHours | None = None,
        allow_duplicates: bool = False,
        suppress: SuppressionList | Iterable[str | Path] | None = None,
        redial: RedialPolicy | None = None,
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
        if redial is not None and not poll:
            raise ValueError("redials need poll=True: a call's end must be seen to redial it")
        if max_wait is not None and max_wait < 0:
            raise ValueError("max_wait must be 0 or more seconds (or None)")
        self.client = client
        self.source = Path(source)
        url = journal if is_postgres_url(journal) else None
        out, db = default_paths(
            self.source,
            results if isinstance(results, (str, Path)) else None,
            None if url else journal,
        )
        self.results_path: Path | None = None if results is False else out
        self.attempts_path = None if attempts is None else Path(attempts)
        #: An SQLite file, or a PostgreSQL URL (the campaign is the file's name there).
        self.journal_path: Path | str = url or db
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
        self.max_wait = max_wait
        self.recordings = recordings
        self.calling_hours = calling_hours
        self.allow_duplicates = allow_duplicates
        self.suppress = suppress
        self.redial = redial
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

        self._counters = Counters()
        self._entries: dict[int, _Entry] = {}
        self._calls: dict[str, _Tracked] = {}
        self._redials: list[tuple[float, int, _Due]] = []
        self._redial_seq = itertools.count()
        self._next_index = 0
        self._total_estimate: int | None = None
        self._rows_read = 0
        self._start_delays = LatencyHistogram()
        self._phase = "starting"
        self._started = False
        self._stopping = False
        self._aborting = False
        self._horizon_reached = False
        self._stop_event: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None
        self._fatal: BaseException | None = None
        self._clock = time.monotonic
        self._started_at: float | None = None
        self._last_trigger: float | None = None
        self._waiting_since: float | None = None
        self._checked_at = 0.0
        self._options: PlanOptions | None = None
        self._seen: SeenNumbers | None = None
        self._contacts: Iterator[ContactRow] | None = None
        self._resumed = False
        self._journal: JournalStore | None = None
        self._writer: GroupCommitter | None = None
        self._poller: StatusPoller | None = None
        self._dispatcher: Dispatcher | None = None
        self._fetcher: RecordingFetcher | None = None

    def __repr__(self) -> str:
        return f"<Campaign source={str(self.source)!r} phase={self._phase}>"

    # -- control -------------------------------------------------------------------

    def stop(self) -> None:
        """Stop dialing; calls in flight finish and are journaled, then
        :meth:`run` returns (calls still in progress, and redials, are
        followed on resume)."""
        if self._stopping:
            return
        self._stopping = True
        self._phase = "stopping"
        if self._dispatcher is not None:
            self._dispatcher.stop()
        if self._stop_event is not None:
            self._stop_event.set()
        self._nudge()

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
        """The live-call cap, the stop-early breaker and the webhooks of this
        campaign (``live.cause``: why dialing stopped early, if it did)."""
        return self._live

    def progress(self) -> CampaignProgress:
        """A snapshot of where the campaign is (cheap; for progress displays)."""
        c = self._counters
        now = self._clock()
        elapsed = 0.0 if self._started_at is None else now - self._started_at
        dispatcher = self._dispatcher
        stats = dispatcher.stats if dispatcher is not None else None
        rate = placed_rate(stats) if stats is not None and stats.elapsed > 0.5 else 0.0
        total = self._total_estimate
        eta = None
        if total is not None and rate > 0 and self._phase == "dialing":
            eta = max(0.0, (total - c.processed) / rate)
        retries = stats.retries if stats is not None else 0
        live, live_limit = self._live.live_calls()
        next_redial = None
        if self._redials:
            next_redial = max(0.0, self._redials[0][0] - time.time())
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
            skipped=c.skipped,
            redials=c.redials,
            redials_waiting=len(self._redials),
            next_redial=next_redial,
            waiting=self._live.waiting(),
            live=live,
            live_limit=live_limit,
        )

    # -- the run -------------------------------------------------------------------------

    async def open(self) -> None:
        """Check and open what the campaign needs, before anything is dialed:
        the contacts file (its header), the do-not-call lists, the journal
        (and its identity). Called by :meth:`run` if not called before.

        Raises :class:`~.contacts.ContactsError`,
        :class:`~.suppression.SuppressionError` or
        :class:`~.journal.JournalError`; nothing is sent either way.
        """
        if self._journal is not None:
            return
        fingerprint = await asyncio.to_thread(fingerprint_file, self.source)
        kind = self.format or detect_format(self.source)
        # Newlines, minus the CSV header: exact for files without blank lines
        # or multi-line cells, and only used for the ETA.
        self._total_estimate = max(0, fingerprint.approx_rows - (kind == "csv"))
        suppress = self.suppress
        region = self.client.default_region
        if suppress is not None and not isinstance(suppress, SuppressionList):
            suppress = await asyncio.to_thread(SuppressionList.read, list(suppress), region)
        self._options = PlanOptions(
            agent_id=self.agent_id,
            region=region,
            calling_hours=self.calling_hours,
            redial=self.redial,
            redial_ambiguous=self.redial_ambiguous,
            allow_duplicates=self.allow_duplicates,
            suppressed=suppress if suppress is not None else frozenset(),
            prepare=self.client.prepare,
        )
        contacts = read_contacts(self.source, kind, columns=self.columns)
        try:
            journal = await asyncio.to_thread(
                open_journal,
                self.journal_path,
                campaign=self.source.name,
                durability=self.durability,
            )
        except BaseException:
            _close(contacts)
            raise
        try:
            self._resumed = not journal.bind(
                {"source_sha256": fingerprint.sha256, "agent_id": self.agent_id or ""},
                describe={
                    "source_name": self.source.name,
                    "source_size": str(fingerprint.size),
                    "source_rows": str(fingerprint.approx_rows),
                },
            )
        except BaseException:
            _close(contacts)
            journal.close()
            raise
        self._contacts = contacts
        self._journal = journal

    def close(self) -> None:
        """Release the file and the journal of a campaign opened but not run."""
        if self._contacts is not None:
            _close(self._contacts)
        if self._journal is not None:
            self._journal.close()
        if self._seen is not None:
            self._seen.close()
            self._seen = None

    async def run(self) -> CampaignSummary:
        """Run (or resume) the campaign; returns its summary.

        Raises what :meth:`open` raises (before anything is sent), and
        :class:`~voicehub_async.VoiceHubError` when the service refuses the
        API key.
        """
        if self._started:
            raise RuntimeError("a Campaign runs once; make a new one to resume")
        self._started = True
        self._started_at = self._clock()
        self._stop_event = asyncio.Event()
        self._wake = asyncio.Event()
        if self._stopping:
            self._stop_event.set()
        try:
            await self.open()
            journal, contacts = self._journal, self._contacts
            assert journal is not None and contacts is not None
            self._seen = SeenNumbers()
            await self._run(journal, contacts)
            return await self._finish(journal, contacts, self._resumed)
        finally:
            self.close()

    async def _run(self, journal: JournalStore, contacts: Iterator[ContactRow]) -> None:
        counters = self._counters
        # Telemetry's gauges read these only when metrics are collected.
        with self.client.telemetry.watch(
            "campaign",
            lambda: counters.queued + counters.in_progress,
            lambda: self.progress().rate,
        ):
            await self._run_watched(journal, contacts)

    async def _run_watched(self, journal: JournalStore, contacts: Iterator[ContactRow]) -> None:
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
                    if poller is not None and not self._stopping:
                        self._phase = "waiting"
                        await self._follow_rest()
            finally:
                if poller is not None:
                    await poller.aclose()
                if follower is not None:
                    await follower
                if self._fetcher is not None:
                    if self._stopping or self._horizon_reached:
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

    async def _dial(self, journal: JournalStore, contacts: Iterator[ContactRow]) -> None:
        self._phase = "dialing" if not self._stopping else "stopping"
        plan = self._plan(journal, contacts)
        inputs: Iterator[CallRequest] | AsyncGenerator[CallRequest, None]
        if journal.rows_after(0, 1) or self.redial is not None:
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
            # Every request is a PreparedRequest from the plan (numbers are
            # compared in E.164 there): the dispatcher does not validate it twice.
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

    # -- waiting -------------------------------------------------------------------------

    def _nudge(self) -> None:
        """Something changed that a waiting loop may care about."""
        if self._wake is not None:
            self._wake.set()

    async def _idle(self, timeout: float) -> None:
        wake = self._wake
        assert wake is not None
        wake.clear()
        try:
            await asyncio.wait_for(wake.wait(), max(0.0, min(timeout, _IDLE_STEP)))
        except TimeoutError:
            pass

    def _deadline(self) -> float:
        """Unix time after which nothing more is awaited (``max_wait``)."""
        if self.max_wait is None:
            return math.inf
        if self._waiting_since is None:
            self._waiting_since = time.time()
        return (self._last_trigger or self._waiting_since) + self.max_wait

    def _past_horizon(self) -> bool:
        """True when waiting longer is pointless: past the deadline, or
        everything left is due after it (a call scheduled for next year)."""
        deadline = self._deadline()
        now = time.time()
        if now >= deadline:
            self._horizon_reached = True
            return True
        if deadline == math.inf or self._entries or now - self._checked_at < _IDLE_STEP:
            return False
        self._checked_at = now
        if self._redials and self._redials[0][0] <= deadline:
            return False
        if not self._redials and not self._calls:
            return False
        if all(t.due is not None and t.due > deadline for t in self._calls.values()):
            self._horizon_reached = True
            return True
        return False

    async def _follow_rest(self) -> None:
        """After the last trigger: wait for the calls still live, up to the horizon."""
        while self._calls and not self._stopping and not self._past_horizon():
            await self._idle(self._deadline() - time.time())

    async def _finish(
        self, journal: JournalStore, contacts: Iterator[ContactRow], resumed: bool
    ) -> CampaignSummary:
        interrupted = self._stopping
        self._phase = "stopped" if interrupted else "done"
        total = self._rows_read
        if interrupted and not self._aborting:
            # Rows never read are pending: count them, so the summary (and
            # the results file) still has one line per contact.
            total = await asyncio.to_thread(_count_rest, contacts, total)
        elif self._aborting:
            total = max(total, self._total_estimate or 0)
        results = None
        if self.results_path is not None and not self._aborting:
            await asyncio.to_thread(
                functools.partial(write_results, horizon_reached=self._horizon_reached),
                self.results_path,
                journal.iter_rows(),
                total,
            )
            results = self.results_path
        if self.attempts_path is not None and not self._aborting:
            await asyncio.to_thread(write_attempts, self.attempts_path, journal.iter_attempts())
        counts = journal.counts()
        counts.setdefault("pending", 0)
        counts["pending"] += max(0, total - sum(counts.values()))
        if not counts["pending"]:
            del counts["pending"]
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
            throughput=placed_rate(stats) if stats else 0.0,
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
            redials=journal.redials(),
            horizon_reached=self._horizon_reached,
            attempts=self.attempts_path if not self._aborting else None,
        )

    # -- rows into requests -----------------------------------------------------------

    def _plan(
        self, journal: JournalStore, contacts: Iterator[ContactRow]
    ) -> Iterator[CallRequest | None]:
        """The requests to send, in row order; everything else is dealt with here.

        Yields None after every few hundred rows skipped in a row (already
        done on a resume), so that an async caller can let the loop breathe.
        """
        options, seen = self._options, self._seen
        assert options is not None and seen is not None
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
            decision = plan_row(contact, previous, options, self._now(), seen)
            request = self._carry_out(contact, decision)
            if request is None:
                skipped += 1
                if skipped % _SKIP_BATCH == 0:
                    yield None
                continue
            skipped = 0
            yield request
        self._total_estimate = self._rows_read  # the file is read: the real total

    def _carry_out(self, contact: ContactRow, decision: Decision) -> CallRequest | None:
        """Do what ``decision`` says for ``contact``; the request to send, if any."""
        c = self._counters
        row = contact.row
        if isinstance(decision, Dial):
            return self._enter(
                row, contact.digest, decision.request, decision.attempt, decision.note, redial=False
            )
        writer = self._writer
        assert writer is not None
        now = time.time()
        if isinstance(decision, Done):
            c.count_done(decision.state, decision.call_id is not None)
            if decision.wants_recording and self._fetcher is not None and decision.call_id:
                self._fetcher.add(row, decision.call_id)
        elif isinstance(decision, Follow):
            self._resume_call(row, contact.digest, decision)
        elif isinstance(decision, Redial):
            c.processed += 1
            c.sent += 1
            c.add("queued")
            self._push_redial(
                _Due(decision.due, row, contact.digest, decision.attempt, decision.request)
            )
        elif isinstance(decision, LeftSending):
            writer.write(RecordAmbiguous(row, decision.attempt, _AMBIGUOUS_AFTER_CRASH, now))
            c.count_done(AMBIGUOUS, False)
        elif isinstance(decision, Invalid):
            writer.write(
                RecordInvalid(
                    row, contact.digest, decision.number, _error_text(decision.error), now
                )
            )
            c.count_done(INVALID, False)
        elif isinstance(decision, Skip):
            writer.write(
                RecordSkipped(
                    row,
                    contact.digest,
                    decision.number,
                    decision.state,
                    now,
                    decision.duplicate_of,
                    decision.note,
                )
            )
            c.count_done(decision.state, False)
        return None

    def _enter(
        self,
        row: int,
        digest: str,
        request: PreparedRequest,
        attempt: int,
        note: str | None,
        *,
        redial: bool,
    ) -> CallRequest:
        """Register ``request`` as the next input of the dispatcher."""
        index = self._next_index
        self._next_index = index + 1
        keep = self.redial is not None
        self._entries[index] = _Entry(row, digest, request, attempt, note, redial, keep)
        return request

    def _push_redial(self, due: _Due) -> None:
        heapq.heappush(self._redials, (due.due, next(self._redial_seq), due))
        self._nudge()

    def _pop_due_redial(self) -> CallRequest | None:
        """The next redial whose time has come, registered for the dispatcher."""
        redials = self._redials
        if not redials or redials[0][0] > time.time() or self._stopping:
            return None
        due = heapq.heappop(redials)[2]
        request = due.request
        note = None
        if self.calling_hours is not None:
            try:
                request, note = schedule_within_hours(request, self.calling_hours, self._now())
            except InvalidRequestError as error:
                logger.info("row %d: no redial: %s", due.row, error.reason)
                c = self._counters
                c.move("queued", "failed")
                return None
        self._counters.redials += 1
        return self._enter(due.row, due.digest, request, due.attempt, note, redial=True)

    @staticmethod
    def _sync_inputs(plan: Iterator[CallRequest | None]) -> Iterator[CallRequest]:
        """For a fresh journal: the dispatcher's fast path (it reads and
        validates small batches of a plain iterator at once)."""
        for request in plan:
            if request is not None:
                yield request

    async def _async_inputs(
        self, plan: Iterator[CallRequest | None]
    ) -> AsyncGenerator[CallRequest, None]:
        """For a resume, or with redials: long runs of rows already done are
        skipped without keeping the event loop (the display, the poller)
        waiting; redials join as they fall due, and once the file is read
        the stream stays open while a redial may still come."""
        for request in plan:
            if request is None:
                await asyncio.sleep(0)
            else:
                yield request
            while (redial := self._pop_due_redial()) is not None:
                yield redial
        if self.redial is None:
            return
        self._phase = "waiting"
        while not self._stopping:
            redial = self._pop_due_redial()
            if redial is not None:
                yield redial
                continue
            if not self._redials and not self._entries and not self._calls:
                return
            if self._past_horizon():
                return
            wait = self._deadline() - time.time()
            if self._redials:
                wait = min(wait, self._redials[0][0] - time.time())
            await self._idle(wait)

    def _resume_call(self, row: int, digest: str, follow: Follow) -> None:
        """A call placed by an earlier run: follow it (or count it, without polling)."""
        c = self._counters
        c.processed += 1
        c.sent += 1
        state_bucket = bucket(follow.state)
        c.add(state_bucket)
        poller = self._poller
        if poller is None or poller.closed:
            return
        when = follow.scheduled_at if self.follow_schedule and follow.state == "scheduled" else None
        self._calls[follow.call_id] = _Tracked(
            row,
            digest,
            follow.attempt,
            state_bucket,
            None,
            follow.request,
            None if when is None else when.timestamp(),
        )
        self._live.resumed(follow.call_id)
        poller.track(follow.call_id, scheduled_at=when)

    # -- the three points of a call's life ------------------------------------------------

    def _on_sending(self, index: int, prepared: CallRequest) -> Awaitable[None] | None:
        """Before a trigger: commit the row's ``sending`` mark before its
        first request goes out."""
        entry = self._entries[index]
        if entry.marked:
            return None  # a retry: the mark made for the first attempt still holds
        entry.marked = True
        assert self._writer is not None
        to = prepared.to if isinstance(prepared.to, str) else None
        op = MarkSending(entry.row, entry.digest, to, entry.attempt, time.time(), entry.note)
        return self._writer.mark(op)

    def _on_result(self, result: DispatchResult) -> None:
        """A trigger's answer: journal it (buffered: committed within ms)."""
        entry = self._entries.pop(result.index)
        writer = self._writer
        assert writer is not None
        c = self._counters
        now = time.time()
        if result.attempts:
            self._last_trigger = now
        self._nudge()
        outcome = result.outcome
        if outcome in ("queued", "scheduled"):
            call = result.call
            assert call is not None
            state = call.status.name
            terminal = call.status.is_terminal
            request = result.request
            when = request.scheduled_at if isinstance(request, CallRequest) else None
            writer.write(
                RecordTriggered(
                    entry.row,
                    entry.attempt,
                    state,
                    call.id,
                    call.status.value,
                    result.attempts,
                    None if when is None else format_scheduled_at(when),
                    now,
                    terminal,
                )
            )
            state_bucket = bucket(state)
            if entry.redial:
                c.move("queued", state_bucket)
            else:
                c.processed += 1
                c.sent += 1
                c.add(state_bucket)
            if terminal:
                self._on_call_end(entry.row, entry.digest, entry.attempt, state, entry.request)
                return
            poller = self._poller
            if poller is not None and not poller.closed:
                follow = when if self.follow_schedule else None
                self._calls[call.id] = _Tracked(
                    entry.row,
                    entry.digest,
                    entry.attempt,
                    state_bucket,
                    self._clock(),
                    entry.request,
                    None if follow is None else follow.timestamp(),
                )
                poller.track(call, scheduled_at=follow)
            return
        error_text = _error_text(result.error)
        if outcome == "invalid":
            assert result.error is not None
            writer.write(RecordInvalid(entry.row, entry.digest, entry.to, error_text, now))
            if entry.redial:
                c.move("queued", "failed")
            else:
                c.count_done(INVALID, False)
            return
        if outcome == "not_sent":
            if entry.marked or result.attempts:
                # Marked, then stopped before (re)sending: provably not placed.
                writer.write(
                    RecordUnsent(entry.row, entry.attempt, result.attempts, error_text, now)
                )
            return
        state = AMBIGUOUS if outcome == "ambiguous" else NOT_SENT
        writer.write(
            RecordTriggerFailed(entry.row, entry.attempt, state, result.attempts, error_text, now)
        )
        if entry.redial:
            c.move("queued", "failed")
            if state == AMBIGUOUS:
                c.ambiguous += 1
        else:
            c.count_done(state, False)
        if state == AMBIGUOUS:
            self._live.ambiguous(entry, result)
        if isinstance(result.error, AuthenticationError) and self._fatal is None:
            # Every other row would be refused the same way.
            self._fatal = result.error
            self.stop()

    def _on_reconciled(self, found: Reconciled) -> None:
        """A webhook named the call an ambiguous trigger placed: record it,
        then follow the call like any other."""
        entry = found.row
        assert isinstance(entry, _Entry) and self._writer is not None
        now = time.time()
        self._writer.write(
            RecordReconciled(
                entry.row, entry.attempt, found.call_id, found.status, now, reconciled_note(found)
            )
        )
        c = self._counters
        c.ambiguous -= 1
        state_bucket = bucket(found.status)
        c.move("failed", state_bucket)
        if not entry.redial:
            c.sent += 1
        poller = self._poller
        if poller is not None and not poller.closed:
            self._calls[found.call_id] = _Tracked(
                entry.row, entry.digest, entry.attempt, state_bucket, None, entry.request
            )
            poller.track(found.call_id)

    def _on_call_end(
        self, row: int, digest: str, attempt: int, state: str, request: PreparedRequest | None
    ) -> None:
        """A call reached its final ``state``: dial the contact again later
        if the redial policy says so (the row is then ``redial``, not final)."""
        policy = self.redial
        if policy is None or request is None:
            return
        now = time.time()
        due = policy.due(state, attempt, now)
        if due is None:
            return
        hours = self.calling_hours
        if hours is not None and isinstance(request.to, str):
            try:
                wanted = datetime.fromtimestamp(due, timezone.utc)
                moved = hours.next_allowed(request.to, self._now(), wanted)
            except InvalidRequestError:
                return  # no opening in the coming week: the contact keeps this outcome
            if moved is not None:
                due = moved.timestamp()
        assert self._writer is not None
        self._writer.write(RecordRedial(row, attempt, due, now))
        self._counters.move(bucket(state), "queued")
        self._push_redial(_Due(due, row, digest, attempt + 1, request))

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
        if state != "scheduled":
            tracked.due = None
        new_bucket = bucket(state)
        self._counters.move(tracked.bucket, new_bucket)
        tracked.bucket = new_bucket
        started_at = None
        now = time.time()
        started = state not in (LOST, "timed_out") and change.new.stage in _STARTED_STAGES
        if started and not tracked.started:
            tracked.started = True
            started_at = now
            if tracked.queued_at is not None:
                self._start_delays.add(max(0.0, self._clock() - tracked.queued_at))
        final = change.is_final
        assert self._writer is not None
        self._writer.write(
            RecordStatus(
                tracked.row, change.call_id, state, change.new.value, now, final, started_at
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
            self._on_call_end(tracked.row, tracked.digest, tracked.attempt, state, tracked.request)
            self._nudge()


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
