"""The input side of a dispatch: reading the caller's iterable lazily, numbering
and validating each input once (:class:`Feed`)."""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import Any, Final

from ..errors import InvalidRequestError
from ..models import CallRequest, PreparedRequest
from ..stats import StatsRecorder
from .control import Control, Worker
from .results import RequestItem

__all__ = ["BATCH", "Entry", "Feed", "as_call_request"]

_FIELDS: Final = ("to", "agent_id", "context", "scheduled_at", "from_number")
_FIELD_SET: Final = frozenset(_FIELDS)
_REQUIRED: Final = ("to", "agent_id")
# The wire's spelling of a field, a likely mistake in a hand-written dict.
_WIRE_NAMES: Final = {
    "agentId": "agent_id",
    "scheduledAt": "scheduled_at",
    "scheduleAt": "scheduled_at",
    "from": "from_number",
}

#: Inputs of a sync iterable read (and validated) at once.
BATCH: Final = 32

#: An input read from the iterable: (index, as given, prepared request or
#: None, the error that makes it invalid or None).
Entry = tuple[int, Any, PreparedRequest | None, Exception | None]


def as_call_request(item: Any) -> CallRequest:
    """``item`` (a CallRequest or a mapping of trigger_call's keywords) as a CallRequest."""
    if isinstance(item, CallRequest):
        return item
    if isinstance(item, Mapping):
        if not item.keys() <= _FIELD_SET:
            name = sorted(str(key) for key in item.keys() - _FIELD_SET)[0]
            hint = f"did you mean {_WIRE_NAMES[name]!r}? " if name in _WIRE_NAMES else ""
            key = next(k for k in item if str(k) == name)
            raise InvalidRequestError(
                name,
                item[key],
                f"unknown field; {hint}a request takes {', '.join(_FIELDS)}",
            )
        for name in _REQUIRED:
            if name not in item:
                raise InvalidRequestError(name, None, "required field missing")
        return CallRequest(**item)
    raise InvalidRequestError(
        "request",
        item,
        "expected a CallRequest or a mapping with trigger_call's keyword names",
    )


class Feed:
    """Inputs taken from the caller's iterable, each numbered and validated once.

    A sync iterable is read :data:`BATCH` inputs at a time into ``pending``
    (:meth:`refill`); an async one an input at a time, behind a lock
    (:meth:`take_async`). A :class:`~voicehub_async.PreparedRequest` is not
    validated again. ``prepare`` is the client's.
    """

    __slots__ = (
        "_aiterator",
        "_control",
        "_iterator",
        "_lock",
        "_prepare",
        "_requests",
        "_stats",
        "exhausted",
        "pending",
    )

    def __init__(
        self,
        requests: Iterable[RequestItem] | AsyncIterable[RequestItem],
        prepare: Callable[[CallRequest], PreparedRequest],
        stats: StatsRecorder,
        control: Control,
    ) -> None:
        self._requests = requests
        self._prepare = prepare
        self._stats = stats
        self._control = control
        self._iterator: Iterator[RequestItem] | None = None
        self._aiterator: AsyncIterator[RequestItem] | None = None
        self._lock: asyncio.Lock | None = None
        self.exhausted = False
        #: Inputs read and validated, not yet picked up by a worker.
        self.pending: deque[Entry] = deque()

    def start(self) -> None:
        """Begin reading (inside the running loop)."""
        requests = self._requests
        if isinstance(requests, AsyncIterable):
            self._aiterator = aiter(requests)
            self._lock = asyncio.Lock()
        else:
            self._iterator = iter(requests)

    @property
    def sync(self) -> bool:
        return self._iterator is not None

    def take(self, raw: Any) -> Entry:
        """Number and validate one input just read from the iterable."""
        stats = self._stats
        index = stats.taken
        stats.taken = index + 1
        try:
            request = raw if isinstance(raw, CallRequest) else as_call_request(raw)
            return (index, raw, self._prepare(request), None)
        except Exception as error:  # InvalidRequestError, or a bug in a field's value
            return (index, raw, None, error)

    def refill(self) -> bool:
        """Read and validate up to :data:`BATCH` inputs of a sync iterable at once.

        Validating a few dozen numbers in a row is markedly cheaper than one
        at a time between network events (libphonenumber's tables stay in
        the CPU caches); the look-ahead stays small and bounded. Returns
        False when there is nothing more to read.
        """
        iterator = self._iterator
        if self.exhausted or self._control.stopping or iterator is None:
            return False
        raws: list[Any] = []
        try:
            raws.extend(itertools.islice(iterator, BATCH))
        except Exception as exc:  # the caller's iterable failed: stop, keep what was read
            self.exhausted = True
            self._control.fail(exc)
        else:
            if len(raws) < BATCH:
                self.exhausted = True
        take = self.take
        self.pending.extend([take(raw) for raw in raws])
        return bool(raws)

    async def take_async(self, worker: Worker) -> Entry | None:
        """The next input of an async iterable, validated; None at the end.

        One at a time: an async source may trickle, and an input must not
        wait for others to arrive before it is sent.
        """
        lock = self._lock
        aiterator = self._aiterator
        assert lock is not None and aiterator is not None
        worker.cancellable = True
        try:
            async with lock:
                if self.exhausted or self._control.stopping:
                    return None
                try:
                    raw = await aiterator.__anext__()
                except StopAsyncIteration:
                    self.exhausted = True
                    return None
                except Exception as exc:
                    self.exhausted = True
                    self._control.fail(exc)
                    return None
        finally:
            worker.cancellable = False
        return self.take(raw)
