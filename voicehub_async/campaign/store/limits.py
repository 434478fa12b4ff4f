"""Shared limits across workers: leases of rate and live-call slots.

VoiceHub enforces its rate limit and its live-call cap per account, so a
campaign's ``--rate`` and ``--max-live`` must hold for all its workers
together. Asking the database before every trigger would make PostgreSQL the
bottleneck (and a round trip the floor of every trigger's latency), so each
worker holds a **lease** that it renews about once a second
(:meth:`~.postgres.PostgresStore.renew`, one transaction, serialised per
campaign by an advisory lock), and spends it locally with this module's
:class:`LocalLimits`, with no database call per trigger:

* **Rate.** A renewal gives the worker ``rate x factor / live workers`` calls
  per second. Locally it is a token bucket holding at most a tenth of a
  second's worth of tokens (at least one). ``factor`` is the campaign's
  shared slow-down: a worker whose dispatcher saw a 429 since its last
  renewal halves it in the store and sets ``paused_until`` (Retry-After);
  every worker reads both at its next renewal, so a 429 seen by one slows all
  of them within a lease period. The factor grows back by 10% a second (at
  most once a second, whoever renews).
* **Live slots.** The store counts the campaign's live rows (``sending``,
  ``queued``, ``started``, ``in-progress``, and ``ambiguous`` ones for
  ``max_call_time`` after their mark: their call may be live). A renewal
  grants the worker ``spare`` slots: at most ``max_live - live - the spare
  slots granted to the others``, and at most its fair share. A slot is spent
  when a row is claimed (the claim commits the ``sending`` mark, so the row
  is counted from then on); a call that ends frees its slot at the next
  renewal, when the store no longer counts it. The worker's own claims and
  renewals never overlap (one lock), and a grant still recorded in the store
  covers the claims made with it until the grantee renews, so the sum of
  live rows and grants never exceeds ``max_live``: the cap holds exactly.

**The burst, documented.** In any one second the campaign sends at most
``rate`` triggers plus each worker's bucket (``max(1, rate / workers / 10)``):
for ``--rate 50`` and 3 workers, 55. A worker that joins waits one lease
period before its first trigger, so that the others have renewed to their
smaller shares; a worker that dies or leaves only makes the others slower
until the next renewals. Retries of triggers that provably did not reach the
service (connection refused, 503, 429) are paced by the dispatcher, not by
the bucket.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Final

from .postgres import Lease

__all__ = ["BUCKET_SECONDS", "LocalLimits"]

#: The bucket holds this many seconds' worth of rate tokens (the burst).
BUCKET_SECONDS: Final = 0.1


class LocalLimits:
    """A worker's lease, spent locally (see the module doc). Not thread-safe:
    used from one event loop."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._rate: float | None = None
        self._spare: int | None = 0  # nothing before the first lease
        self._tokens = 0.0
        self._filled_at = clock()
        self._paused_until = 0.0
        self._changed = asyncio.Event()
        self._closed = False

    @property
    def rate(self) -> float | None:
        return self._rate

    @property
    def spare(self) -> int | None:
        return self._spare

    def update(self, lease: Lease) -> None:
        """Apply a renewal: a new rate share, a new slot grant, maybe a pause."""
        now = self._clock()
        self._refill(now)
        self._rate = lease.rate
        self._spare = lease.spare
        if lease.paused_for > 0:
            self._paused_until = max(self._paused_until, now + lease.paused_for)
        self._changed.set()

    def close(self) -> None:
        """Wake every waiter: :meth:`take` returns 0 from now on."""
        self._closed = True
        self._changed.set()

    def _capacity(self) -> float:
        assert self._rate is not None
        return max(1.0, self._rate * BUCKET_SECONDS)

    def _refill(self, now: float) -> None:
        if self._rate is not None:
            gained = (now - self._filled_at) * self._rate
            self._tokens = min(self._capacity(), self._tokens + gained)
        self._filled_at = now

    def available(self) -> int:
        """How many triggers could start right now."""
        now = self._clock()
        if self._closed or now < self._paused_until:
            return 0
        self._refill(now)
        n = math.inf if self._rate is None else math.floor(self._tokens + 1e-9)
        if self._spare is not None:
            n = min(n, self._spare)
        return int(min(n, 1 << 20))

    async def take(self, wanted: int) -> int:
        """Wait until at least one trigger may start, then take up to ``wanted``
        (returns how many: at least 1, or 0 once closed)."""
        while True:
            if self._closed:
                return 0
            n = min(wanted, self.available())
            if n >= 1:
                if self._rate is not None:
                    self._tokens -= n
                if self._spare is not None:
                    self._spare -= n
                return n
            self._changed.clear()
            await self._wait()

    def give_back(self, n: int) -> None:
        """Return ``n`` taken but unused permits (a claim found fewer rows)."""
        if n <= 0:
            return
        if self._rate is not None:
            self._tokens = min(self._capacity(), self._tokens + n)
        if self._spare is not None:
            self._spare += n

    async def _wait(self) -> None:
        now = self._clock()
        delay: float | None = None
        if now < self._paused_until:
            delay = self._paused_until - now
        elif self._rate is not None and self._rate > 0 and (self._spare is None or self._spare > 0):
            delay = max(0.001, (1.0 - self._tokens) / self._rate)
        # Without a rate or slots, only a renewal can help: wait for it.
        try:
            await asyncio.wait_for(self._changed.wait(), delay)
        except asyncio.TimeoutError:
            pass
