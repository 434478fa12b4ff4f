"""Which calls of each API key are live: between their trigger and a final status.

Voice platforms cap the calls an account has live at once and answer 429 to a
trigger above the cap (``FaultConfig.max_live_calls``); tests of a client's
own cap need the server's count, sampled at every trigger. A call's status is
computed lazily from the clock (no timer per call), so this keeps, per key, a
heap of when each live call's drawn timeline ends and sweeps it when asked:
O(log n) per call, nothing per read.

"Live" follows the simulator's answers: a call counts from its creation
(scheduled calls included: the trigger created them) until its status is one
of the final ones. A status pinned with ``Simulator.set_status`` wins over the
timeline (an undocumented one such as ``voicemail`` keeps the call live, as
the API says such statuses are not final).
"""

from __future__ import annotations

import heapq
import itertools
import math
import threading
from collections.abc import Callable

from .calls import SimulatedCall

__all__ = ["FINAL_STATUSES", "LiveCalls"]

#: The statuses after which a simulated call is over (the server's spelling).
FINAL_STATUSES = frozenset({"Completed", "Failed", "Cancelled", "Unanswered", "Busy"})

_Entry = tuple[float, int, SimulatedCall]


class LiveCalls:
    """Live calls per API key.

    ``status_of`` answers a call's current status (the server's view, pinned
    statuses included); ``clock`` is the server's monotonic clock and
    ``time_scale`` its simulated seconds per real second. Thread-safe (a
    lock): a test may pin statuses from another thread than the server's.
    """

    def __init__(
        self,
        status_of: Callable[[SimulatedCall], str],
        clock: Callable[[], float],
        time_scale: float,
    ) -> None:
        self._status_of = status_of
        self._clock = clock
        self._time_scale = time_scale
        self._live: dict[str, dict[str, SimulatedCall]] = {}
        self._ends: dict[str, list[_Entry]] = {}
        self._key_of: dict[str, str] = {}
        #: The sequence number of each call's current heap entry: an entry
        #: pushed before the call's timeline changed (set_outcome) is stale.
        self._entry_of: dict[str, int] = {}
        self._seq = itertools.count()
        self._lock = threading.Lock()

    def _is_live(self, call: SimulatedCall) -> bool:
        return self._status_of(call) not in FINAL_STATUSES

    def _push(self, key: str, call: SimulatedCall, not_before: float = 0.0) -> None:
        end = max(not_before, call.created_at + call.ends_after / self._time_scale)
        seq = next(self._seq)
        self._entry_of[call.id] = seq
        heapq.heappush(self._ends.setdefault(key, []), (end, seq, call))

    def add(self, key: str, call: SimulatedCall) -> None:
        """``call`` was just created by a trigger made with ``key``."""
        with self._lock:
            self._add(key, call)

    def _add(self, key: str, call: SimulatedCall) -> None:
        self._live.setdefault(key, {})[call.id] = call
        self._key_of[call.id] = key
        self._push(key, call)

    def count(self, key: str) -> int:
        """How many of ``key``'s calls are live now."""
        with self._lock:
            return self._count(key)

    def _count(self, key: str) -> int:
        live = self._live.get(key)
        if not live:
            return 0
        heap = self._ends.get(key)
        now = self._clock()
        while heap and heap[0][0] <= now:
            _, seq, call = heapq.heappop(heap)
            if call.id not in live or self._entry_of.get(call.id) != seq:
                continue  # ended already (a pinned final status), or a stale entry
            if not self._is_live(call):
                del live[call.id]
                del self._entry_of[call.id]
            elif call.forced_status is None:
                # At its end within rounding: look again just after now.
                self._push(key, call, not_before=math.nextafter(now, math.inf))
            # else: pinned to a live status; stays live, off the heap.
        return len(live)

    def status_changed(self, call: SimulatedCall) -> None:
        """A status was pinned on (or unpinned from) ``call``: re-judge it."""
        with self._lock:
            self._changed(call)

    def _changed(self, call: SimulatedCall) -> None:
        key = self._key_of.get(call.id)
        if key is None:
            return
        live = self._live.setdefault(key, {})
        if not self._is_live(call):
            live.pop(call.id, None)
            self._entry_of.pop(call.id, None)
            return
        live[call.id] = call
        if call.forced_status is None:
            self._push(key, call)  # its timeline decides again

    def clear(self) -> None:
        """Forget every call."""
        with self._lock:
            self._live.clear()
            self._ends.clear()
            self._key_of.clear()
            self._entry_of.clear()
