"""Group commit: many rows' ``sending`` marks share one SQLite commit.

Committing each mark on its own would cap a campaign at the disk's commits
per second (an fsync each). Instead every write is appended to one buffer,
and one commit at a time carries everything buffered:

* :meth:`GroupCommitter.mark` appends a mark and returns once a commit that
  *includes it* has finished. The workers about to send in the same turn of
  the event loop all share the next commit, and marks made while a commit
  runs share the one after it. No request is ever sent before its mark is
  committed: that is the whole point.
* :meth:`GroupCommitter.write` appends anything else (a call id, a status)
  without waiting; it rides along with the next commit, or is flushed after
  ``max_delay`` seconds at the latest. Losing such a write in a crash only
  leaves its row ``sending``, which a resume reports as ambiguous and does
  not dial: a lost result never causes a second call.

Durability, where the work runs, and why (measured with
``benchmarks/bench_campaign.py``): the SQL and the commit run on the event
loop, in WAL mode with ``synchronous=NORMAL``: the commit is in the WAL
file, in the operating system's hands, in a fraction of a millisecond. That
survives any crash or kill of this process (the crash test kills it with
SIGKILL), not a power cut or an OS crash in the following seconds. With
durability ``full`` the fsync that closes that gap runs in a writer thread
(:meth:`Journal.sync`) and the marks wait for it; it costs the kernel time
of one fsync per group commit plus its latency on every trigger (the
benchmark prints both modes).

Why not a writer thread for everything: a campaign keeps the loop thread
busy, so a thread doing the SQL waits for the GIL at every row it binds (up
to the interpreter's 5 ms switch interval each time): marks waited ~6 ms
instead of ~0.4 ms. Why not an inline fsync: it stalls the loop for the
whole flush (~0.4 ms on this machine's SSD, far more on network storage),
while ``os.fsync`` in a thread needs the GIL only to start and to return.

A failed commit fails every mark waiting on it, so their triggers are not
sent, and the committer refuses further work: the campaign stops.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
from collections.abc import Sequence
from typing import Final

from .journal import JournalError, JournalStore, Op

__all__ = ["GroupCommitter"]

#: Writes buffered without a waiting mark are flushed after this many seconds.
_DEFAULT_MAX_DELAY: Final = 0.05
#: ... or as soon as this many are buffered.
_DEFAULT_MAX_BUFFER: Final = 2000


class GroupCommitter:
    """Batches journal writes into few commits (see the module documentation).

    ``max_delay`` bounds how long a write without a waiting mark stays in
    memory; ``max_buffer`` how many may pile up before a commit is started
    anyway. ``commits`` and ``committed`` count commits and writes, for the
    benchmark's figures. Make it inside the running event loop.
    """

    def __init__(
        self,
        journal: JournalStore,
        *,
        max_delay: float = _DEFAULT_MAX_DELAY,
        max_buffer: int = _DEFAULT_MAX_BUFFER,
    ) -> None:
        self._journal = journal
        self._max_delay = max_delay
        self._max_buffer = max_buffer
        self._executor = (
            concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="voicehub-journal-fsync"
            )
            if journal.durability == "full"
            else None
        )
        self._loop = asyncio.get_running_loop()
        self._buffer: list[Op] = []
        # The marks (and flushes) waiting for the next commit, one future each,
        # so that a waiter cancelled mid-way never cancels anybody else's wait.
        self._waiters: list[asyncio.Future[None]] = []
        self._committing: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._scheduled = False
        self._failure: BaseException | None = None
        self._closed = False
        self.commits = 0
        self.committed = 0

    # -- the two kinds of write -------------------------------------------------------

    async def mark(self, op: Op) -> None:
        """Buffer ``op`` and return once it is committed (raises if the commit fails)."""
        self._check()
        self._buffer.append(op)
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        self._start_soon()
        await waiter

    def write(self, op: Op) -> None:
        """Buffer ``op``; it is committed with the next commit, or after ``max_delay``."""
        self._check()
        self._buffer.append(op)
        if len(self._buffer) >= self._max_buffer:
            self._start_soon()
        elif self._timer is None and not self._scheduled:
            self._timer = self._loop.call_later(self._max_delay, self._on_timer)

    def write_many(self, ops: Sequence[Op]) -> None:
        for op in ops:
            self.write(op)

    async def flush(self) -> None:
        """Commit everything buffered so far, and wait for it."""
        self._check()
        while self._buffer or self._committing is not None:
            if self._buffer:
                waiter = self._loop.create_future()
                self._waiters.append(waiter)
                self._start_soon()
                await waiter
            else:
                assert self._committing is not None
                await asyncio.shield(self._committing)

    async def aclose(self) -> None:
        """Flush, then stop. Safe to call after a failure."""
        if self._closed:
            return
        try:
            if self._failure is None:
                await self.flush()
        finally:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()
            if self._executor is not None:
                self._executor.shutdown(wait=True)

    def abandon(self) -> None:
        """Stop at once, dropping buffered writes (the journal stays consistent:
        committed marks are on disk, and unwritten results only make rows ambiguous)."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        error = JournalError("the journal was closed")
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(error)
        self._waiters.clear()

    @property
    def pending(self) -> int:
        """Writes buffered, not committed yet."""
        return len(self._buffer)

    # -- machinery ------------------------------------------------------------------------

    def _check(self) -> None:
        if self._failure is not None:
            raise JournalError(f"the journal cannot be written: {self._failure}") from self._failure
        if self._closed:
            raise JournalError("the journal is closed")

    def _on_timer(self) -> None:
        self._timer = None
        self._start_soon()

    def _start_soon(self) -> None:
        # call_soon, not now: the marks made in the same turn of the loop (the
        # workers woken together) then share the commit.
        if not self._scheduled and self._committing is None:
            self._scheduled = True
            self._loop.call_soon(self._start)

    def _start(self) -> None:
        self._scheduled = False
        if self._committing is not None or not self._buffer or self._closed:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        ops, self._buffer = self._buffer, []
        waiters, self._waiters = self._waiters, []
        try:
            self._journal.apply(ops)
        except Exception as error:
            self._fail(error, waiters)
            return
        if self._executor is None:
            self._succeed(waiters, len(ops))
            return
        # The commit is written; the marks go out once it is on the disk.
        work = self._loop.run_in_executor(self._executor, self._journal.sync)
        self._committing = work
        work.add_done_callback(functools.partial(self._done, waiters, len(ops)))

    def _done(
        self, waiters: list[asyncio.Future[None]], count: int, work: asyncio.Future[None]
    ) -> None:
        self._committing = None
        if work.cancelled():
            self._fail(JournalError("the journal writer stopped"), waiters)
            return
        error = work.exception()
        if error is not None:
            self._fail(error, waiters)
            return
        self._succeed(waiters, count)

    def _succeed(self, waiters: list[asyncio.Future[None]], count: int) -> None:
        self.commits += 1
        self.committed += count
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        if self._waiters or len(self._buffer) >= self._max_buffer:
            self._start_soon()  # marks arrived during the fsync
        elif self._buffer and self._timer is None:
            self._timer = self._loop.call_later(self._max_delay, self._on_timer)

    def _fail(self, error: BaseException, waiters: list[asyncio.Future[None]]) -> None:
        self._failure = error
        for waiter in (*waiters, *self._waiters):
            if not waiter.done():
                waiter.set_exception(error)
        self._waiters.clear()
