"""The poller's change stream: a buffer of changes and the iterator over it.

Changes go to a buffer that is bounded while somebody iterates: when the
poller's ``max_buffered_changes`` are waiting, its scheduler stops sending
reads until the consumer catches up (backpressure: a slow consumer loses
nothing, and the service is not read for results nobody looks at). While
nobody iterates the buffer keeps every change, so a consumer that starts late
still sees all of them.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from .values import StatusChange

__all__ = ["ChangeBuffer", "ChangeStream"]


class ChangeBuffer:
    """Changes waiting for a consumer, and the signals between both sides.

    ``wake_scheduler`` is called when a consumer takes a change while the
    scheduler waits for space, and when a consumer leaves.
    """

    __slots__ = ("_wake_scheduler", "changes", "consumers", "ready", "waiting_for_space")

    def __init__(self, wake_scheduler: Callable[[], None]) -> None:
        self.changes: deque[StatusChange] = deque()
        #: Set when a change arrives or the stream may have ended.
        self.ready = asyncio.Event()
        #: Streams being iterated right now.
        self.consumers = 0
        #: The scheduler is parked until a change is taken.
        self.waiting_for_space = False
        self._wake_scheduler = wake_scheduler

    def __len__(self) -> int:
        return len(self.changes)

    def put(self, change: StatusChange) -> None:
        self.changes.append(change)
        self.ready.set()

    def is_full(self, limit: int) -> bool:
        """True when somebody iterates and ``limit`` changes are waiting."""
        return bool(self.consumers) and len(self.changes) >= limit

    def take(self) -> StatusChange | None:
        """The oldest change, or None when there is none."""
        if not self.changes:
            return None
        change = self.changes.popleft()
        if self.waiting_for_space:
            self._wake_scheduler()
        return change

    def attach(self) -> None:
        self.consumers += 1

    def detach(self) -> None:
        self.consumers -= 1
        self._wake_scheduler()


class ChangeStream:
    """``async for change in poller.changes()``: the poller's changes, in order.

    Each change goes to one consumer. While a stream is being iterated it
    applies backpressure (see :class:`ChangeBuffer`). Iteration ends when the
    poller is closed and the buffer is empty, or, with ``until_idle=True``
    (the default), as soon as no call is tracked and the buffer is empty.
    Breaking out of the loop detaches the stream. ``over(until_idle)`` is the
    poller's answer to "is there nothing more to come?".
    """

    __slots__ = ("_attached", "_buffer", "_done", "_over", "_until_idle")

    def __init__(
        self, buffer: ChangeBuffer, over: Callable[[bool], bool], until_idle: bool
    ) -> None:
        self._buffer = buffer
        self._over = over
        self._until_idle = until_idle
        self._attached = False
        self._done = False

    def __aiter__(self) -> ChangeStream:
        return self

    async def __anext__(self) -> StatusChange:
        if self._done:
            raise StopAsyncIteration
        buffer = self._buffer
        if not self._attached:
            self._attached = True
            buffer.attach()
        while True:
            change = buffer.take()
            if change is not None:
                return change
            if self._over(self._until_idle):
                self.close()
                raise StopAsyncIteration
            ready = buffer.ready
            ready.clear()
            await ready.wait()

    def close(self) -> None:
        """Stop iterating (also done by ``break`` and by garbage collection)."""
        if self._done:
            return
        self._done = True
        if self._attached:
            self._attached = False
            self._buffer.detach()

    async def aclose(self) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass
