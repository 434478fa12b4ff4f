"""The state a dispatch's parts share: whether it is stopping, its failure, its workers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

__all__ = ["Control", "Worker"]

logger = logging.getLogger("voicehub_async")


class Worker:
    """One worker task and whether stopping may cancel it right now.

    ``cancellable`` is True only while the worker waits for input, for its
    turn or between attempts: cancelling it there costs nothing. A worker in
    a request (or in the ``on_sending`` hook) is left to finish.
    """

    __slots__ = ("cancellable", "task")

    def __init__(self) -> None:
        self.cancellable = False
        self.task: asyncio.Task[None] | None = None


class Control:
    """Stopping and failing, read by the feed and the sender, decided by the dispatcher.

    ``stopping`` is True once no more input is taken. :meth:`stop` is the
    dispatcher's (it also cancels idle workers); :meth:`fail` records the
    error that stops the whole dispatch, re-raised by iteration.
    """

    __slots__ = ("_on_stop", "failure", "stopping")

    def __init__(self, on_stop: Callable[[], None]) -> None:
        self.stopping = False
        self.failure: BaseException | None = None
        self._on_stop = on_stop

    def stop(self) -> None:
        self._on_stop()

    def fail(self, error: BaseException) -> None:
        """Stop the whole dispatch because of ``error`` (raised again by iteration)."""
        if self.failure is None:
            self.failure = error
            logger.error("dispatch stopped: %s: %s", type(error).__name__, error)
        self._on_stop()
