"""What a failure means for a request, and how long to wait: the retry policy.

This module is the one answer to "may this request be sent again?". Every
failure is classified once, by :func:`classify`, into a
:class:`FailureKind`; :class:`RetryPolicy` turns the kinds met so far into a
decision (:class:`Attempts`) and one delay rule (:meth:`RetryPolicy.delay`).
``RetryPolicy.call`` uses them for one request, the dispatcher for many (it
also acts on the kind: a 429 pauses all its workers).

Reads are idempotent and retry on anything transient. A trigger is not: the
API has no idempotency key, so re-sending a trigger that reached the service
phones a person twice. A trigger is retried only when the request provably
did not reach the service (:attr:`FailureKind.not_sent`): the connection
could not be opened, or the service answered 429 or 503 (both refused before
processing). A read timeout, a connection broken after sending, a
500/502/504 and a success answer without a readable call *may have placed
the call* (:attr:`FailureKind.maybe_placed`) and are raised as
:class:`~voicehub_async.errors.AmbiguousTriggerError` at once, unless the
policy opts in with ``retry_ambiguous_triggers=True``. Everything else (4xx,
a redirect) is final.

Waits are exponential with full jitter, except when the service said how
long to wait (``Retry-After``, in seconds or as an HTTP date), which is
honoured up to ``retry_after_max``.
"""

from __future__ import annotations

import asyncio
import email.utils
import enum
import random
import time
from collections.abc import Awaitable, Callable
from datetime import timezone
from typing import Final, TypeVar

import attrs
import tenacity
from tenacity.wait import wait_base

from .errors import (
    AmbiguousTriggerError,
    APIConnectionError,
    APIStatusError,
    UnexpectedResponseError,
    VoiceHubError,
)

__all__ = [
    "Attempts",
    "FailureKind",
    "RetryPolicy",
    "classify",
    "is_ambiguous_trigger_failure",
    "is_live_call_limit",
    "is_retryable_read",
    "is_safe_trigger_retry",
    "parse_retry_after",
    "wait_retry_after",
]

T = TypeVar("T")

#: The words (lower case) by which a 429 says the account's cap on calls live
#: at once is reached, rather than a request-rate limit: "concurrent call
#: limit exceeded", "concurrency limit reached", ...
_LIVE_LIMIT_WORD: Final = "concurren"


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header, or None if absent or unreadable.

    Accepts delta-seconds (``"3"``, ``"1.5"``) and an HTTP date; a date in the
    past means "now" (0).
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


class FailureKind(enum.Enum):
    """What one failed request means, for a trigger and for a read.

    Three groups, read through the properties: :attr:`not_sent` (provably did
    not reach the service: safe to send again, even a trigger),
    :attr:`maybe_placed` (a trigger may have placed a call) and :attr:`final`
    (refused; sending it again changes nothing). Within "not sent", a 429 is
    told apart from the rest because a dispatcher acts on it for all its
    workers, and a 429 about the account's *live-call* cap apart from a
    request-rate 429, because slowing down the request rate does not help
    with it (see :func:`is_live_call_limit`).
    """

    #: No connection could be had (refused, DNS, TLS, pool timeout).
    NOT_CONNECTED = "not_connected"
    #: 503: the service refused before processing.
    UNAVAILABLE = "unavailable"
    #: 429, a request-rate limit: wait, and send more slowly.
    RATE_LIMITED = "rate_limited"
    #: 429 saying the account's concurrent-call limit is reached: nothing
    #: was placed; wait for a live call to end, the request rate is fine.
    LIVE_CALL_LIMIT = "live_call_limit"
    #: Read timeout, connection broken after sending, 500/502/504.
    MAYBE_PLACED = "maybe_placed"
    #: A success status without a readable answer: for a trigger the call
    #: was probably placed; for a read, asking again would not help.
    UNREADABLE_ANSWER = "unreadable_answer"
    #: Any other refusal (4xx, a redirect), or an error that is not the SDK's.
    FINAL = "final"

    @property
    def not_sent(self) -> bool:
        """True when the request provably did not reach the service."""
        return self in _NOT_SENT

    @property
    def maybe_placed(self) -> bool:
        """True when a trigger that failed so may have placed a call."""
        return self is FailureKind.MAYBE_PLACED or self is FailureKind.UNREADABLE_ANSWER

    @property
    def final(self) -> bool:
        """True when sending again would not change the answer."""
        return self is FailureKind.FINAL

    @property
    def throttled(self) -> bool:
        """True for a 429 (either kind)."""
        return self is FailureKind.RATE_LIMITED or self is FailureKind.LIVE_CALL_LIMIT

    def retryable(self, *, trigger: bool) -> bool:
        """Whether a request that failed so may be sent again without opting in."""
        if trigger:
            return self in _NOT_SENT
        return self in _READ_RETRYABLE


_NOT_SENT: Final = frozenset(
    {
        FailureKind.NOT_CONNECTED,
        FailureKind.UNAVAILABLE,
        FailureKind.RATE_LIMITED,
        FailureKind.LIVE_CALL_LIMIT,
    }
)
_READ_RETRYABLE: Final = _NOT_SENT | {FailureKind.MAYBE_PLACED}


def is_live_call_limit(error: APIStatusError) -> bool:
    """True when a 429 says the account's concurrent-call (live-call) cap is reached.

    The API does not document this answer; voice platforms word it like
    Bandwidth's "concurrent call limit exceeded" (beside "call creation rate
    limit exceeded" for the request rate). So a 429 whose message or body
    contains ``"concurren"`` (concurrent, concurrency), in any case, is taken
    as the live-call cap; any other 429 as a request-rate limit.
    """
    if error.status != 429:
        return False
    return _LIVE_LIMIT_WORD in error.message.lower() or _LIVE_LIMIT_WORD in error.body.lower()


def classify(error: BaseException) -> FailureKind:
    """The one classification of a failed request (see :class:`FailureKind`)."""
    if isinstance(error, APIConnectionError):
        return FailureKind.MAYBE_PLACED if error.sent else FailureKind.NOT_CONNECTED
    if isinstance(error, APIStatusError):
        status = error.status
        if status == 429:
            if is_live_call_limit(error):
                return FailureKind.LIVE_CALL_LIMIT
            return FailureKind.RATE_LIMITED
        if status == 503:
            return FailureKind.UNAVAILABLE
        if status >= 500:
            return FailureKind.MAYBE_PLACED
        return FailureKind.FINAL
    if isinstance(error, UnexpectedResponseError):
        return FailureKind.UNREADABLE_ANSWER
    return FailureKind.FINAL


def is_retryable_read(error: BaseException) -> bool:
    """True when an idempotent read may be sent again after ``error``."""
    return classify(error).retryable(trigger=False)


def is_safe_trigger_retry(error: BaseException) -> bool:
    """True when ``error`` proves the trigger did not reach the service."""
    return classify(error).not_sent


def is_ambiguous_trigger_failure(error: BaseException) -> bool:
    """True when a trigger that failed with ``error`` may have placed a call."""
    return classify(error).maybe_placed


@attrs.frozen
class Decision:
    """What to do after one failed attempt (see :meth:`Attempts.failed`).

    ``kind`` is the failure's :class:`FailureKind`. When ``retry`` is True,
    wait ``delay`` seconds and send again; otherwise ``error`` is what the
    operation ends with: the attempt's own error, or an
    :class:`AmbiguousTriggerError` when any attempt may have placed the call.
    """

    kind: FailureKind
    retry: bool
    delay: float
    error: VoiceHubError


class Attempts:
    """The retry state of one operation (one trigger, one read): a small state machine.

    Fed each failed attempt with :meth:`failed`, it answers with a
    :class:`Decision`. It remembers the first attempt of a trigger that may
    have placed the call: once there is one, the trigger can only end
    ambiguous, reported with that attempt's error, whatever later attempts
    (under ``retry_ambiguous_triggers``) answer.
    """

    __slots__ = ("_policy", "_trigger", "max_retries", "number", "placed_by")

    def __init__(self, policy: RetryPolicy, *, trigger: bool, max_retries: int) -> None:
        self._policy = policy
        self._trigger = trigger
        self.max_retries = max_retries
        #: Attempts that have failed so far.
        self.number = 0
        #: The first error that may have placed the call (triggers only).
        self.placed_by: VoiceHubError | None = None

    def failed(self, error: VoiceHubError) -> Decision:
        """Record the failure of the next attempt; say whether and when to retry."""
        self.number = number = self.number + 1
        kind = classify(error)
        policy = self._policy
        trigger = self._trigger
        if trigger and self.placed_by is None and kind.maybe_placed:
            self.placed_by = error
        allowed = kind.retryable(trigger=trigger) or (
            trigger and kind.maybe_placed and policy.retry_ambiguous_triggers
        )
        retry = allowed and number <= self.max_retries
        delay = policy.delay(error, number) if retry or kind.throttled else 0.0
        if retry:
            return Decision(kind, True, delay, error)
        return Decision(kind, False, delay, self.outcome(error))

    def outcome(self, error: VoiceHubError | None) -> VoiceHubError:
        """The error the operation ends with, after ``error`` (None: stopped
        before an attempt, only meaningful once one may have placed the call),
        with ``attempts`` set on it."""
        number = self.number
        placed_by = self.placed_by
        if error is not None:
            error.attempts = number
        if placed_by is not None:
            placed_by.attempts = number
            return AmbiguousTriggerError(placed_by, attempts=number)
        assert error is not None, "outcome(None) before any ambiguous attempt"
        return error


@attrs.frozen
class wait_retry_after(wait_base):
    """Honour the service's ``Retry-After``; otherwise defer to ``fallback``.

    Composable like any tenacity wait: ``wait_retry_after(wait_random_exponential(...))``.
    """

    fallback: wait_base
    cap: float = 60.0

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None and outcome.failed else None
        if isinstance(error, APIStatusError) and error.retry_after is not None:
            return min(error.retry_after, self.cap)
        return float(self.fallback(retry_state))


@attrs.frozen
class RetryPolicy:
    """How the client retries: a small immutable value, shared by all requests.

    ``max_retries`` is the number of retries after the first attempt (0: never
    retry). ``backoff_base`` and ``backoff_max`` shape the full-jitter backoff;
    ``retry_after_max`` caps how long a ``Retry-After`` may make us wait.
    ``retry_ambiguous_triggers`` lets a trigger be re-sent after an ambiguous
    failure: only for agents where a second call is harmless.
    ``sleep`` replaces :func:`asyncio.sleep` between attempts (tests use it to
    see the waits without waiting).
    """

    max_retries: int = attrs.field(default=3, validator=attrs.validators.ge(0))
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    retry_after_max: float = 60.0
    retry_ambiguous_triggers: bool = False
    sleep: Callable[[float], Awaitable[None]] | None = attrs.field(
        default=None, eq=False, repr=False, kw_only=True
    )

    def should_retry(self, error: BaseException, *, trigger: bool) -> bool:
        """Whether ``error`` may be followed by another attempt (retries left aside)."""
        kind = classify(error)
        if kind.retryable(trigger=trigger):
            return True
        return trigger and self.retry_ambiguous_triggers and kind.maybe_placed

    def delay(self, error: BaseException | None, attempt: int) -> float:
        """Seconds to wait after attempt number ``attempt`` (1, 2, ...) failed with ``error``.

        The one delay rule: the service's ``Retry-After`` (capped at
        ``retry_after_max``) when it gave one, else full jitter,
        ``uniform(0, min(backoff_max, backoff_base * 2 ** (attempt - 1)))``.
        """
        if isinstance(error, APIStatusError) and error.retry_after is not None:
            return min(error.retry_after, self.retry_after_max)
        exponent = min(attempt - 1, 64)  # no overflow for absurd attempt numbers
        return random.uniform(0.0, min(self.backoff_max, self.backoff_base * 2.0**exponent))

    def wait(self) -> wait_base:
        """:meth:`delay` as a tenacity wait strategy, for code built on tenacity."""
        return _PolicyWait(self)

    def attempts(self, *, trigger: bool, max_retries: int | None = None) -> Attempts:
        """A fresh retry state for one operation (``max_retries``: override the policy's)."""
        limit = self.max_retries if max_retries is None else max_retries
        return Attempts(self, trigger=trigger, max_retries=limit)

    async def call(
        self,
        attempt: Callable[[int], Awaitable[T]],
        *,
        trigger: bool,
        max_retries: int | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> T:
        """Run ``attempt(n)`` (n = 1, 2, ...) until it succeeds or may not be retried.

        The happy path pays nothing for retrying: the retry state is made at
        the first failure. The error raised carries ``attempts``; a trigger
        that may have placed the call is raised as
        :class:`AmbiguousTriggerError`.
        """
        try:
            return await attempt(1)
        except VoiceHubError as error:
            last = error
        state = self.attempts(trigger=trigger, max_retries=max_retries)
        pause = sleep or self.sleep or asyncio.sleep
        while True:
            decision = state.failed(last)
            if not decision.retry:
                if decision.error is last:
                    raise last
                raise decision.error from last
            await pause(decision.delay)
            try:
                return await attempt(state.number + 1)
            except VoiceHubError as error:
                last = error


@attrs.frozen
class _PolicyWait(wait_base):
    """:meth:`RetryPolicy.delay` behind tenacity's wait interface."""

    policy: RetryPolicy

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None and outcome.failed else None
        return self.policy.delay(error, retry_state.attempt_number)
