"""What a dispatch hands back: one :class:`DispatchResult` per input, and the hook types."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import attrs

from ..models import Call, CallRequest
from ..stats import Outcome

__all__ = ["DispatchResult", "OnResult", "OnSending", "RequestItem", "TriggerGate", "outcome_of"]

#: One input row: a :class:`~voicehub_async.CallRequest`, or a mapping with
#: :meth:`~voicehub_async.VoiceHubClient.trigger_call`'s keyword names.
RequestItem = CallRequest | Mapping[str, Any]
#: ``on_sending(index, prepared_request)``: returns None, or an awaitable. The
#: request is a :class:`~voicehub_async.PreparedRequest`.
OnSending = Callable[[int, CallRequest], Awaitable[object] | None]


def outcome_of(call: Call) -> Outcome:
    """``scheduled`` for a call answered Scheduled, else ``queued`` (it was placed)."""
    status = call.status.value
    # The service answers "Queued": skip the case-insensitive compare for it.
    if status == "Queued" or status.lower() != "scheduled":
        return "queued"
    return "scheduled"


@attrs.frozen
class DispatchResult:
    """What became of one input of a dispatch.

    ``index`` is the input's position in the iterable (from 0) and
    ``request`` the input exactly as given. ``outcome`` is one of:

    * ``queued`` / ``scheduled``: the call was placed; ``call`` is the answer.
    * ``invalid``: refused before sending (no request made); ``error`` is an
      :class:`~voicehub_async.InvalidRequestError` naming the field.
    * ``failed``: the service refused it (4xx, or 429/503/no connection after
      the last retry); no call was placed.
    * ``ambiguous``: a call *may* have been placed (timeout or broken
      connection after sending, 500/502/504, or cut off by a drain timeout);
      ``error`` is an :class:`~voicehub_async.AmbiguousTriggerError`. Check
      before sending it again.
    * ``not_sent``: the dispatch stopped before this input was sent (or
      before a refused attempt could be retried: ``error`` is then that
      refusal). Safe to send again.

    ``attempts`` is the number of requests made, ``elapsed`` the seconds from
    the moment a worker picked the input up to this result, waits and
    retries included (0.0 when nothing was sent).
    """

    index: int
    request: RequestItem
    call: Call | None
    error: Exception | None
    outcome: Outcome
    attempts: int
    elapsed: float

    @property
    def placed(self) -> bool:
        """True when the call was certainly placed (queued or scheduled)."""
        return self.call is not None


#: ``on_result(result)``: returns None, or an awaitable.
OnResult = Callable[[DispatchResult], Awaitable[object] | None]


class TriggerGate(Protocol):
    """Consulted around every trigger: a campaign's live-call cap and breaker
    (:class:`voicehub_async.campaign.live.LiveControl`).

    ``acquire(index)`` is awaited before an input's first attempt (it may
    wait: a live-call slot); ``attempted(index, error)`` hears every
    attempt's outcome (None: it placed a call); when the service answers the
    live-call-limit 429, ``concurrency_limited(index, delay)`` is awaited
    (the input waits for a call to end rather than slowing every worker
    down) and the trigger goes again, not counted against ``max_retries``:
    it provably placed nothing; ``settled(result)`` gets every result of an
    input that was sent or waited, before ``on_result``.
    """

    async def acquire(self, index: int, /) -> None: ...

    def attempted(self, index: int, error: BaseException | None, /) -> None: ...

    async def concurrency_limited(self, index: int, delay: float, /) -> None: ...

    def settled(self, result: DispatchResult, /) -> None: ...
