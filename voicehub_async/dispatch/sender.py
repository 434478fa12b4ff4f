"""Sending one input of a dispatch, and re-sending it while allowed: :class:`Sender`.

What a failure means is not decided here: each failed attempt goes to the
client's :class:`~voicehub_async.retry.RetryPolicy` (one
:class:`~voicehub_async.retry.Attempts` per input), whose
:class:`~voicehub_async.retry.FailureKind` the sender acts on for the whole
dispatch: a request-rate 429 pauses *every* worker until its ``Retry-After``
and halves the pace (see :mod:`voicehub_async._ratelimit`); a 429 about the
account's live-call cap does not slow the pace (nothing was placed, the rate
is not the problem): that input waits its ``Retry-After`` or backoff and is
sent again.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .._ratelimit import Pacer
from ..errors import AmbiguousTriggerError, APIConnectionError, VoiceHubError
from ..models import PreparedRequest
from ..protocols import TriggerClient
from ..retry import Attempts, FailureKind, classify
from ..stats import Outcome, StatsRecorder
from ..telemetry import NO_OPERATION, Operation, Telemetry
from .control import Control, Worker
from .results import DispatchResult, OnSending, TriggerGate, outcome_of

if TYPE_CHECKING:
    from ..config import TimeoutTypes

__all__ = ["Sender", "call_hook"]

logger = logging.getLogger("voicehub_async")

#: A dispatch result's outcome as telemetry names a trigger's (the client's word).
_TELEMETRY_OUTCOMES = {"queued": "placed"}


async def call_hook(result: Awaitable[object] | None) -> None:
    """Await what a hook returned, if it is awaitable."""
    if inspect.isawaitable(result):
        await result


def _records_nothing(telemetry: Telemetry) -> bool:
    """True for telemetry whose operations are the shared no-op (telemetry off).

    Asked of the method, not of ``enabled``, so that a :class:`Telemetry`
    subclass recording operations is never skipped.
    """
    return getattr(type(telemetry), "operation", None) is Telemetry.operation


class Sender:
    """Sends validated inputs, one attempt at a time, under the dispatch's pace."""

    __slots__ = (
        "_client",
        "_clock",
        "_control",
        "_gate",
        "_max_retries",
        "_on_sending",
        "_pacer",
        "_sleep",
        "_stats",
        "_timeout",
        "send",
    )

    def __init__(
        self,
        client: TriggerClient,
        *,
        control: Control,
        stats: StatsRecorder,
        pacer: Pacer,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
        on_sending: OnSending | None,
        max_retries: int,
        gate: TriggerGate | None = None,
        timeout: TimeoutTypes | None,
    ) -> None:
        self._client = client
        self._control = control
        self._stats = stats
        self._pacer = pacer
        self._clock = clock
        self._sleep = sleep
        self._on_sending = on_sending
        self._gate = gate
        self._max_retries = max_retries
        self._timeout = timeout
        #: Send (and resend while allowed) one validated input; never raises.
        #: Chosen once here, not per input: with telemetry off (its
        #: ``operation`` the base class's no-op) an input costs no operation,
        #: no context manager and no extra coroutine frame.
        self.send: Callable[[Worker, int, Any, PreparedRequest], Awaitable[DispatchResult]] = (
            self._send if _records_nothing(client.telemetry) else self._traced_send
        )

    async def _traced_send(
        self, worker: Worker, index: int, raw: Any, prepared: PreparedRequest
    ) -> DispatchResult:
        """:attr:`send` with telemetry on.

        One telemetry operation spans all of the input's attempts, so a trace
        shows one ``trigger_call`` with its resends, and the triggers counter
        counts the input once, by its outcome.
        """
        with self._client.telemetry.operation(
            "trigger_call", trigger=True, agent_id=prepared.agent_id
        ) as operation:
            operation.set_personal(prepared.to, prepared.context)
            result = await self._send(worker, index, raw, prepared, operation)
            outcome = result.outcome
            operation.set_outcome(
                _TELEMETRY_OUTCOMES.get(outcome, outcome), ambiguous=outcome == "ambiguous"
            )
            if result.call is not None:
                operation.set_call(result.call.id)
            return result

    async def _send(
        self,
        worker: Worker,
        index: int,
        raw: Any,
        prepared: PreparedRequest,
        operation: Operation = NO_OPERATION,
    ) -> DispatchResult:
        clock = self._clock
        started = clock()
        stats = self._stats
        pacer = self._pacer
        control = self._control
        on_sending = self._on_sending
        client = self._client
        trigger = client.trigger
        timeout = self._timeout
        attempts = 0
        last_error: VoiceHubError | None = None
        state: Attempts | None = None  # made at the first failure only
        gate = self._gate
        if gate is not None:
            worker.cancellable = True
            try:
                await gate.acquire(index)
            except asyncio.CancelledError:
                control.stop()
                return self._unsent(index, raw, None, 0, started, None)
            finally:
                worker.cancellable = False
        while True:
            if pacer.gated:
                worker.cancellable = True
                try:
                    await pacer.wait_turn()
                except asyncio.CancelledError:
                    control.stop()
                    return self._unsent(index, raw, last_error, attempts, started, state)
                finally:
                    worker.cancellable = False
            if control.stopping:
                return self._unsent(index, raw, last_error, attempts, started, state)
            if on_sending is not None:
                try:
                    await call_hook(on_sending(index, prepared))
                except asyncio.CancelledError:
                    control.stop()
                    return self._unsent(index, raw, last_error, attempts, started, state)
                except Exception as exc:
                    control.fail(exc)
                    return self._unsent(index, raw, exc, attempts, started, state)
                if control.stopping:
                    return self._unsent(index, raw, last_error, attempts, started, state)

            attempts += 1
            if attempts > 1:
                stats.retries += 1
            sent_at = clock()
            pacer.note_sent(sent_at)
            stats.requests += 1
            stats.in_flight += 1
            try:
                call = await trigger(
                    prepared, attempt=attempts, timeout=timeout, operation=operation
                )
            except VoiceHubError as exc:
                error: VoiceHubError = exc
            except asyncio.CancelledError:
                control.stop()
                cut = AmbiguousTriggerError(
                    APIConnectionError(
                        "trigger cancelled while in flight (drain timeout); "
                        "it may have reached the service",
                        sent=True,
                        attempts=attempts,
                    ),
                    attempts=attempts,
                )
                return DispatchResult(
                    index, raw, None, cut, "ambiguous", attempts, clock() - started
                )
            except Exception as exc:
                # Not a failure of this row but a bug or misuse (a closed
                # client, say): stop everything, and assume the worst here.
                control.fail(exc)
                return DispatchResult(
                    index, raw, None, exc, "ambiguous", attempts, clock() - started
                )
            else:
                if gate is not None:
                    gate.attempted(index, None)
                return DispatchResult(
                    index, raw, call, None, outcome_of(call), attempts, clock() - started
                )
            finally:
                stats.in_flight -= 1
            if gate is not None:
                gate.attempted(index, error)
                if classify(error) is FailureKind.LIVE_CALL_LIMIT and (
                    state is None or state.placed_by is None
                ):
                    # At the account's live-call cap: nothing was placed and
                    # only a call ending makes room. The gate waits for that;
                    # the pace and the retry budget are left alone.
                    stats.rate_limited += 1
                    last_error = error
                    if control.stopping:
                        return self._unsent(index, raw, last_error, attempts, started, state)
                    worker.cancellable = True
                    try:
                        delay = client.retry_policy.delay(error, attempts)
                        await gate.concurrency_limited(index, delay)
                    except asyncio.CancelledError:
                        control.stop()
                        return self._unsent(index, raw, last_error, attempts, started, state)
                    finally:
                        worker.cancellable = False
                    continue

            # The attempt failed: the policy says what it means and what next.
            if state is None:
                state = client.retry_policy.attempts(trigger=True, max_retries=self._max_retries)
            decision = state.failed(error)
            kind = decision.kind
            if kind is FailureKind.RATE_LIMITED:
                stats.rate_limited += 1
                backoffs = pacer.backoffs
                pacer.note_rate_limited(sent_at, decision.delay)
                if pacer.backoffs != backoffs:
                    logger.info(
                        "dispatch: 429 from the service; all workers pause %.1fs, "
                        "pace now %.0f requests/s",
                        decision.delay,
                        pacer.rate or 0.0,
                    )
            elif kind is FailureKind.LIVE_CALL_LIMIT:
                stats.rate_limited += 1
                logger.debug(
                    "dispatch: 429, the account's live-call limit; waiting %.1fs, pace unchanged",
                    decision.delay,
                )
            if not decision.retry:
                outcome: Outcome = "ambiguous" if state.placed_by is not None else "failed"
                return DispatchResult(
                    index, raw, None, decision.error, outcome, attempts, clock() - started
                )
            last_error = error
            if control.stopping:
                return self._unsent(index, raw, last_error, attempts, started, state)
            if kind is not FailureKind.RATE_LIMITED:  # that one waits in wait_turn(), with all
                worker.cancellable = True
                try:
                    await self._sleep(decision.delay)
                except asyncio.CancelledError:
                    control.stop()
                    return self._unsent(index, raw, last_error, attempts, started, state)
                finally:
                    worker.cancellable = False

    def _unsent(
        self,
        index: int,
        raw: Any,
        error: Exception | None,
        attempts: int,
        started: float,
        state: Attempts | None,
    ) -> DispatchResult:
        """The result of an input the dispatch stopped before (re)sending.

        ``not_sent``, unless an earlier attempt may have placed the call:
        then ``ambiguous``, reported with that attempt's error.
        """
        elapsed = self._clock() - started
        if state is not None and state.placed_by is not None:
            ambiguous = state.outcome(error if isinstance(error, VoiceHubError) else None)
            return DispatchResult(index, raw, None, ambiguous, "ambiguous", attempts, elapsed)
        if isinstance(error, VoiceHubError) and attempts:
            error.attempts = attempts
        return DispatchResult(index, raw, None, error, "not_sent", attempts, elapsed)
