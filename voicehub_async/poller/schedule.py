"""The poller's schedule: one heap of tracked calls, ordered by when each is due.

A tracked call is one slotted :class:`TrackedCall` plus one heap entry; no
task or timer per call. Rescheduling a call pushes a new entry and marks the
old one stale (lazy deletion: an entry whose sequence number is not the
call's current one is skipped when it reaches the top); the heap is compacted
when stale entries outnumber live ones, so memory stays flat however often
calls are rescheduled.
"""

from __future__ import annotations

import heapq
import itertools

from ..models import Call, CallStatus

__all__ = ["Schedule", "TrackedCall"]


class TrackedCall:
    """The state of one tracked call: everything the scheduler needs, slotted."""

    __slots__ = (
        "call",
        "call_id",
        "deadline",
        "due",
        "failures",
        "interval",
        "misses",
        "not_before",
        "reading",
        "seq",
        "status",
        "version",
    )

    def __init__(
        self,
        call_id: str,
        status: CallStatus | None,
        call: Call | None,
        interval: float,
        not_before: float | None,
        deadline: float | None,
    ) -> None:
        self.call_id = call_id
        self.status = status
        self.call = call
        self.interval = interval
        #: Monotonic time before which a scheduled call is not read.
        self.not_before = not_before
        #: Monotonic time at which the call ends as ``timed_out``.
        self.deadline = deadline
        #: Consecutive 404 answers; consecutive other failures.
        self.misses = 0
        self.failures = 0
        #: The sequence number of the live heap entry; -1 when none (being
        #: read, or finished). Older entries carrying another number are stale.
        self.seq = -1
        #: When the call is (or was last) due to be read, monotonic.
        self.due = 0.0
        #: Bumped by each ingested status, so that a read sent before it can
        #: tell that its answer may be older than what is known.
        self.version = 0
        self.reading = False


_HeapEntry = tuple[float, int, TrackedCall]


class Schedule:
    """When each tracked call is next due (monotonic seconds)."""

    __slots__ = ("_seq", "heap")

    def __init__(self) -> None:
        self.heap: list[_HeapEntry] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        """Heap entries, stale ones included."""
        return len(self.heap)

    def push(self, record: TrackedCall, due: float, tracked: int) -> bool:
        """Put ``record`` in the heap at ``due``, bounded by its deadline and
        its scheduled time, invalidating any older entry. ``tracked`` is how
        many calls are tracked (to know when to compact). True when it became
        the earliest entry (the scheduler may have to wake up sooner)."""
        not_before = record.not_before
        if not_before is not None:
            status = record.status
            if status is None or status == CallStatus.SCHEDULED:
                due = max(due, not_before)
            else:
                record.not_before = None
        deadline = record.deadline
        if deadline is not None and deadline < due:
            due = deadline
        seq = next(self._seq)
        record.seq = seq
        record.due = due
        heap = self.heap
        heapq.heappush(heap, (due, seq, record))
        if len(heap) > 2 * tracked + 1024:
            self._compact()
            heap = self.heap
        return heap[0][1] == seq

    def next_due(self) -> float | None:
        """When the earliest live entry is due, None when there is none
        (stale entries at the top are dropped on the way)."""
        heap = self.heap
        while heap and heap[0][1] != heap[0][2].seq:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def pop(self) -> TrackedCall:
        """Take the earliest entry (after :meth:`next_due` said there is one)."""
        record = heapq.heappop(self.heap)[2]
        record.seq = -1
        return record

    def _compact(self) -> None:
        self.heap = [entry for entry in self.heap if entry[1] == entry[2].seq]
        heapq.heapify(self.heap)
