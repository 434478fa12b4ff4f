"""StatusPoller: follow many calls to their final status with few reads.

VoiceHub tells a call's status only when asked (or by webhook, see
:meth:`StatusPoller.ingest`). Asking every call every second costs a read per
call per second; most of those answer "nothing changed". The poller instead
keeps one heap of tracked calls ordered by when each is next due, and one
scheduling coroutine that sends the due reads with bounded concurrency:

* **Adaptive interval.** Right after a change a call is read again after
  ``min_interval``; each read that finds nothing new multiplies its interval
  by ``growth`` (1.5) up to ``max_interval``. So a call is read often while it
  moves (queued → started → in-progress) and rarely during a long
  conversation, and a change is never seen later than about ``max_interval``
  after it happened.
* **Scheduled calls** are not read before ``scheduled_lead`` seconds ahead of
  their ``scheduled_at``.
* **Flat memory.** A tracked call is one slotted record plus one heap entry; no
  task or timer per call. A rescheduled call pushes a new heap entry and
  invalidates the old one (lazy deletion; the heap is compacted when stale
  entries outnumber live ones).
* **Every tracked call ends with exactly one final change** (``is_final``): a
  terminal status, ``lost`` (the status endpoint kept answering 404) or
  ``timed_out`` (its ``deadline`` passed). Nothing is dropped.
* **Push and poll together.** A status learned from a webhook is given to
  :meth:`~StatusPoller.ingest`: it is reported like a polled change (the same
  status twice is not a change) and moves the call's next read to
  ``push_interval`` later, as a safety net; a terminal status ends tracking
  with no further read.

Changes are read with ``async for change in poller.changes()``. They go to a
buffer that is bounded while somebody iterates: when ``max_buffered_changes``
are waiting, the scheduler stops sending reads until the consumer catches up
(backpressure, so a slow consumer loses nothing and the service is not read
for results nobody looks at). Reads already in flight and ingested events
still land in the buffer, so it may exceed the bound by ``concurrency`` plus
whatever is ingested meanwhile. While nobody iterates, the buffer keeps every
change, so a consumer that starts late still sees all of them; a program that
only uses :meth:`~StatusPoller.wait`/:meth:`~StatusPoller.wait_all` passes
``stream_changes=False`` and nothing is buffered.

Errors: the client's :class:`~voicehub_async.RetryPolicy` already retries
transient read failures. When it gives up, the poller logs the error, backs
that call off (its interval doubles, up to ``max_interval``) and keeps tracking
it; only ``max_not_found`` consecutive 404 answers end a call as ``lost``.

The package has one module per job: :mod:`.values` (changes, counters,
``lost``/``timed_out``), :mod:`.errors`, :mod:`.schedule` (the heap of due
calls), :mod:`.stream` (the change buffer and ``changes()``), :mod:`.core`
(:class:`StatusPoller`) and :mod:`.oneshot` (:func:`trigger_and_wait`). The
poller depends on :class:`~voicehub_async.protocols.StatusReader`, not on the
client, so the client can import it without a circle.
"""

from __future__ import annotations

from .core import StatusPoller
from .errors import CallLostError, CallTimedOutError, CallTrackingError, WaitTimeoutError
from .oneshot import trigger_and_wait
from .stream import ChangeStream
from .values import LOST, TIMED_OUT, PollerStats, StatusChange, StatusEvent

__all__ = [
    "LOST",
    "TIMED_OUT",
    "CallLostError",
    "CallTimedOutError",
    "CallTrackingError",
    "ChangeStream",
    "PollerStats",
    "StatusChange",
    "StatusEvent",
    "StatusPoller",
    "WaitTimeoutError",
    "trigger_and_wait",
]
