"""The FIFO from a dispatch's workers to its consumer: :class:`Channel`."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

__all__ = ["Channel"]

T = TypeVar("T")


class Channel(Generic[T]):
    """A FIFO from the workers to the consumer whose bound can be lifted.

    Bounded while the consumer reads (backpressure); unbounded once the
    dispatch stops, so that workers never block on a consumer that has gone
    away. Its size is then still bounded by the number of workers.
    """

    __slots__ = ("_closed", "_getters", "_items", "_limit", "_putters")

    def __init__(self, limit: int) -> None:
        self._items: deque[T] = deque()
        self._limit: float = limit
        self._closed = False
        self._getters: deque[asyncio.Future[None]] = deque()
        self._putters: deque[asyncio.Future[None]] = deque()

    def __len__(self) -> int:
        return len(self._items)

    @staticmethod
    def _wake_one(waiters: deque[asyncio.Future[None]]) -> None:
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def has_room(self) -> bool:
        return len(self._items) < self._limit

    def push(self, item: T) -> None:
        """Append ``item`` whatever the bound (the caller checked, or must not wait)."""
        self._items.append(item)
        if self._getters:
            self._wake_one(self._getters)

    async def put(self, item: T) -> None:
        """Append ``item``, waiting for room while the channel is full."""
        while len(self._items) >= self._limit:
            waiter = asyncio.get_running_loop().create_future()
            self._putters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                # Never lose a result: keep it, then let the cancellation go on.
                self.push(item)
                raise
        self.push(item)

    async def get(self) -> T | None:
        """The next item, or None once the channel is closed and empty."""
        items = self._items
        while not items:
            if self._closed:
                return None
            waiter = asyncio.get_running_loop().create_future()
            self._getters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                # Pass a wake-up meant for us on to another reader, if any.
                if waiter.done() and not waiter.cancelled() and items:
                    self._wake_one(self._getters)
                raise
        item = items.popleft()
        if self._putters:
            self._wake_one(self._putters)
        return item

    def lift_limit(self) -> None:
        self._limit = float("inf")
        while self._putters:
            self._wake_one(self._putters)

    def close(self) -> None:
        self._closed = True
        while self._getters:
            self._wake_one(self._getters)
