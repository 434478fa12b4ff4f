"""The live-call cap: a pool of slots, one per call of the campaign that may be live.

Every voice platform caps the calls live at once per account, and a trigger
above the cap is refused with a 429. Pacing triggers per second cannot keep
under such a cap (calls last minutes); counting live calls can. A slot is:

* **taken** before a trigger goes out (:meth:`SlotPool.acquire`, which waits
  while every slot is in use);
* **given back** when the trigger provably placed nothing
  (:meth:`SlotPool.release`), or when the call it placed ends
  (:meth:`SlotPool.call_ended`, fed by the poller or a webhook);
* **held** while its trigger is ambiguous (:meth:`SlotPool.hold`): the call
  may exist, so the slot stays taken until the call's fate is known (the row
  is reconciled to a call id, :meth:`SlotPool.bind`) or ``hold_timeout``
  seconds pass (the longest a call can last, ``--max-call-time``). The cap
  holds even then.

The pool also learns: when the service answers the concurrent-call 429
although the pool had room (another campaign on the same account, or a cap
below ``--max-live``), the refused trigger waits for one of our calls to end
(:meth:`SlotPool.refused`). If it keeps happening (``lower_after`` such 429s
within ``probe_after`` seconds) each one lowers the pool's limit to the calls
this campaign has live: the service is at its cap with those (plus whatever
else the account runs). Triggers that were already out when the limit came
down and succeed prove the service had room for them: the limit follows them
up (:meth:`SlotPool.bind`), so that a burst of 429s at the start does not
leave the limit below what the service allows. Every ``probe_after`` seconds
without such a 429 the limit grows back by one, up to the configured cap, so
that capacity freed elsewhere is used again; a 429 right after such a probe
lowers it at once.

A slot is named by a hashable key (the dispatcher's input index while the
trigger is out); a bound slot is named by its call id. All methods are
called from the event loop; nothing here blocks or touches the network.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Final

__all__ = ["SlotPool"]

logger = logging.getLogger("voicehub_async.campaign")

#: Concurrent-call 429s within ``_PROBE_AFTER`` seconds before each one lowers the limit.
_LOWER_AFTER: Final = 2
#: Seconds without a concurrent-call 429 before a lowered limit grows by one.
_PROBE_AFTER: Final = 30.0


class SlotPool:
    """At most ``limit`` calls of the campaign live at once (None: no cap).

    ``cap`` is the user's ``--max-live`` (None: no cap of our own; the pool
    still counts live calls, so that a concurrent-call 429 can set a limit).
    ``hold_timeout`` bounds how long an ambiguous trigger (or a call nobody
    follows) keeps its slot. ``clock`` is monotonic seconds (tests).
    """

    def __init__(
        self,
        cap: int | None,
        *,
        hold_timeout: float,
        lower_after: int = _LOWER_AFTER,
        probe_after: float = _PROBE_AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if cap is not None and cap < 1:
            raise ValueError("the live-call cap must be at least 1 (or None)")
        if not hold_timeout > 0:
            raise ValueError("hold_timeout must be > 0 seconds")
        if lower_after < 1:
            raise ValueError("lower_after must be at least 1")
        self.cap = cap
        self.hold_timeout = float(hold_timeout)
        self._lower_after = lower_after
        self._probe_after = float(probe_after)
        self._clock = clock
        self._limit: int | None = cap
        # key -> None while the trigger is out; call id -> expiry handle (or
        # None) once bound; key -> expiry handle while held (ambiguous).
        self._sending: set[Hashable] = set()
        self._calls: dict[str, asyncio.TimerHandle | None] = {}
        self._held: dict[Hashable, asyncio.TimerHandle] = {}
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._freed: list[asyncio.Future[None]] = []
        # Slots handed to woken waiters that have not run yet: taken already.
        self._handed = 0
        self._strikes: deque[float] = deque()
        self._limited_at: float | None = None
        self._raised_at: float | None = None
        self.peak = 0
        self.lowered = 0
        self.expired = 0

    def __repr__(self) -> str:
        return (
            f"<SlotPool cap={self.cap} limit={self._limit} in_use={self.in_use} "
            f"live={self.live} waiting={len(self._waiters)}>"
        )

    # -- what is in use ----------------------------------------------------------

    @property
    def limit(self) -> int | None:
        """The cap in force now: ``cap``, or lower after concurrent-call 429s."""
        return self._limit

    @property
    def in_use(self) -> int:
        """Slots taken: triggers out, calls live, ambiguous triggers held."""
        return len(self._sending) + len(self._calls) + len(self._held)

    @property
    def live(self) -> int:
        """Calls of ours that may be live: placed and not ended, or ambiguous."""
        return len(self._calls) + len(self._held)

    @property
    def waiting(self) -> int:
        """Triggers waiting for a slot."""
        return len(self._waiters)

    @property
    def full(self) -> bool:
        """True when a trigger would have to wait for a slot."""
        return self._limit is not None and self.in_use + self._handed >= self._limit

    # -- taking and giving back -------------------------------------------------------

    async def acquire(self, key: Hashable) -> None:
        """Take a slot for the trigger ``key``, waiting while none is free.

        Waiters are served first come, first served. Cancelling the wait
        takes nothing.
        """
        self._probe()
        if not self._waiters and not self.full:
            self._take(key)
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._handed -= 1  # handed a slot just as we were cancelled: pass it on
                self._serve()
            else:
                self._discard_waiter(waiter)
            raise
        self._handed -= 1
        self._take(key)

    def release(self, key: Hashable) -> None:
        """Give back the slot of ``key``: its trigger provably placed nothing
        (or was never sent). Does nothing when ``key`` holds no slot."""
        if key in self._sending:
            self._sending.discard(key)
            self._serve()
            return
        handle = self._held.pop(key, None)
        if handle is not None:
            handle.cancel()
            self._free()

    def bind(self, key: Hashable, call_id: str, *, timeout: float | None = None) -> bool:
        """The trigger ``key`` placed ``call_id``: its slot now follows that call,
        until :meth:`call_ended` (or ``timeout`` seconds, for a call nobody follows).

        Works for a trigger still out and for an ambiguous one held (the
        row was reconciled to its call). A call already bound keeps its slot:
        the key's is given back. False when ``key`` held no slot.
        """
        if key in self._sending:
            self._sending.discard(key)
        else:
            handle = self._held.pop(key, None)
            if handle is None:
                return False  # no slot for this key (its hold timed out, say)
            handle.cancel()
        if call_id in self._calls:
            self._serve()
            return True
        self._calls[call_id] = None if timeout is None else self._expiry(timeout, call_id)
        limit = self._limit
        if limit is not None and self.lowered and self.live > limit:
            # The service took this call with that many of ours live: it has room.
            self._limit = self.live if self.cap is None else min(self.cap, self.live)
        return True

    def has_call(self, call_id: str) -> bool:
        """True while ``call_id`` holds a slot."""
        return call_id in self._calls

    def hold(self, key: Hashable) -> None:
        """The trigger ``key`` is ambiguous: keep its slot until :meth:`bind`
        or :meth:`release`, or for ``hold_timeout`` seconds."""
        if key not in self._sending:
            return
        self._sending.discard(key)
        self._held[key] = self._expiry(self.hold_timeout, key)

    def call_ended(self, call_id: str) -> bool:
        """``call_id`` reached its final status: give its slot back. False when
        the pool did not know it (a call of an earlier run, say)."""
        if call_id not in self._calls:
            return False
        handle = self._calls.pop(call_id)
        if handle is not None:
            handle.cancel()
        self._free()
        return True

    def track(self, call_id: str, *, timeout: float | None = None) -> None:
        """Count a call already live (placed by an earlier run and followed again)."""
        if call_id not in self._calls:
            self._calls[call_id] = None if timeout is None else self._expiry(timeout, call_id)
            self.peak = max(self.peak, self.in_use)

    # -- the service's own cap -----------------------------------------------------------

    async def refused(self, key: Hashable, delay: float) -> None:
        """The service answered the trigger ``key`` with its concurrent-call 429.

        Learn from it (see the module documentation), give the slot back,
        wait until one of our calls ends (or ``delay`` seconds: the calls
        filling the service may be somebody else's), and take a slot again.
        """
        self._note_refused()
        self.release(key)
        await self.wait_freed(delay)
        await self.acquire(key)

    def _note_refused(self) -> None:
        now = self._clock()
        self._limited_at = now
        strikes = self._strikes
        strikes.append(now)
        while strikes and now - strikes[0] > self._probe_after:
            strikes.popleft()
        probing = self._raised_at is not None and now - self._raised_at < self._probe_after
        if len(strikes) < self._lower_after and not probing:
            return
        self._raised_at = None
        # The service is at its cap with our live calls (and maybe others').
        new = max(1, self.live)
        if self._limit is None or new < self._limit:
            if self.lowered == 0 or self._limit is None:
                logger.warning(
                    "campaign: the service's concurrent-call limit was reached with %d "
                    "call(s) of this campaign live; lowering the live-call cap to %d",
                    self.live,
                    new,
                )
            else:
                logger.info("campaign: concurrent-call limit again; live-call cap now %d", new)
            self._limit = new
            self.lowered += 1

    async def wait_freed(self, timeout: float) -> None:
        """Wait until a call of ours ends, or ``timeout`` seconds.

        What a trigger refused with the concurrent-call 429 does instead of
        slowing everybody down: the service will take it once a call ends.
        The timeout covers calls we do not see end (another campaign's).
        """
        future = asyncio.get_running_loop().create_future()
        self._freed.append(future)
        try:
            await asyncio.wait_for(future, max(0.0, timeout))
        except asyncio.TimeoutError:
            pass
        finally:
            if future in self._freed:
                self._freed.remove(future)

    # -- internals ---------------------------------------------------------------------

    def _take(self, key: Hashable) -> None:
        self._sending.add(key)
        if self.in_use > self.peak:
            self.peak = self.in_use

    def _free(self) -> None:
        """A call of ours ended (or is presumed ended): hand its slot to the
        first waiter, and wake the triggers refused at the service's cap."""
        freed = self._freed
        if freed:
            self._freed = []
            for future in freed:
                if not future.done():
                    future.set_result(None)
        self._serve()

    def _serve(self) -> None:
        limit = self._limit
        waiters = self._waiters
        while waiters and (limit is None or self.in_use + self._handed < limit):
            waiter = waiters.popleft()
            if waiter.done():
                continue
            waiter.set_result(None)
            self._handed += 1

    def _discard_waiter(self, waiter: asyncio.Future[None]) -> None:
        try:
            self._waiters.remove(waiter)
        except ValueError:
            pass

    def _expiry(self, seconds: float, name: Hashable) -> asyncio.TimerHandle:
        return asyncio.get_running_loop().call_later(seconds, self._expire, name)

    def _expire(self, name: Hashable) -> None:
        """A held slot (or an unfollowed call's) outlived ``hold_timeout``: the
        call, if any, has ended by now."""
        if name in self._held:
            del self._held[name]
        elif isinstance(name, str) and name in self._calls:
            del self._calls[name]
        else:
            return
        self.expired += 1
        self._free()

    def _probe(self) -> None:
        """Grow a lowered limit by one after ``probe_after`` quiet seconds."""
        limit = self._limit
        if limit is None or (self.cap is not None and limit >= self.cap):
            return
        if self._limited_at is None:
            return
        now = self._clock()
        last = max(self._limited_at, self._raised_at or self._limited_at)
        if now - last >= self._probe_after:
            self._raised_at = now
            self._limit = limit + 1
            self._serve()
