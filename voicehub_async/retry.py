"""Which failures are safe to retry, and how long to wait: the retry policy.

Reads are idempotent and retry on anything transient. A trigger is not: the
API has no idempotency key, so re-sending a trigger that reached the service
phones a person twice. A trigger is retried only when the request provably
did not reach the service: the connection could not be opened, or the service
answered 429 or 503 (both refused before processing). A read timeout, a
connection broken after sending and a 500/502/504 are *ambiguous* and are
raised as :class:`~voicehub_async.errors.AmbiguousTriggerError` at once,
unless the policy opts in with ``retry_ambiguous_triggers=True``.

Waits are exponential with full jitter (tenacity's ``wait_random_exponential``),
except when the service said how long to wait (``Retry-After``, in seconds or
as an HTTP date), which is honoured up to ``retry_after_max``.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Awaitable, Callable
from datetime import timezone
from typing import NoReturn, TypeVar

import attrs
import tenacity
from tenacity.wait import wait_base

from .errors import (
    AmbiguousTriggerError,
    APIConnectionError,
    APIStatusError,
    ServerError,
    UnexpectedResponseError,
    VoiceHubError,
)

__all__ = [
    "RetryPolicy",
    "is_ambiguous_trigger_failure",
    "is_retryable_read",
    "is_safe_trigger_retry",
    "parse_retry_after",
    "wait_retry_after",
]

T = TypeVar("T")


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


def is_retryable_read(error: BaseException) -> bool:
    """True when an idempotent read may be sent again after ``error``."""
    if isinstance(error, APIConnectionError):
        return True
    if isinstance(error, APIStatusError):
        return error.status == 429 or error.status >= 500
    return False


def is_safe_trigger_retry(error: BaseException) -> bool:
    """True when ``error`` proves the trigger did not reach the service."""
    if isinstance(error, APIConnectionError):
        return not error.sent
    if isinstance(error, APIStatusError):
        return error.status in (429, 503)
    return False


def is_ambiguous_trigger_failure(error: BaseException) -> bool:
    """True when a trigger that failed with ``error`` may have placed a call."""
    if isinstance(error, APIConnectionError):
        return error.sent
    if isinstance(error, ServerError):
        return error.status != 503
    # A success answer without a readable call: the call was probably placed.
    return isinstance(error, UnexpectedResponseError)


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
        """Whether ``error`` may be followed by another attempt."""
        if not trigger:
            return is_retryable_read(error)
        if is_safe_trigger_retry(error):
            return True
        return self.retry_ambiguous_triggers and is_ambiguous_trigger_failure(error)

    def wait(self) -> wait_base:
        """The tenacity wait strategy: Retry-After, else full-jitter exponential."""
        return wait_retry_after(
            tenacity.wait_random_exponential(multiplier=self.backoff_base, max=self.backoff_max),
            cap=self.retry_after_max,
        )

    async def call(
        self,
        attempt: Callable[[int], Awaitable[T]],
        *,
        trigger: bool,
        max_retries: int | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> T:
        """Run ``attempt(n)`` (n = 1, 2, ...) until it succeeds or may not be retried.

        The first attempt runs outside tenacity, so the happy path pays nothing
        for retrying; tenacity takes over only after a retryable failure. The
        error raised carries ``attempts``; an ambiguous trigger failure is
        raised as :class:`AmbiguousTriggerError`.
        """
        retries = self.max_retries if max_retries is None else max_retries
        try:
            return await attempt(1)
        except VoiceHubError as error:
            if retries <= 0 or not self.should_retry(error, trigger=trigger):
                _raise_final(error, 1, trigger)
            first_error = error
        # Under opt-in, an attempt after an ambiguous one may fail safely
        # (503, no connection): the trigger as a whole stays ambiguous.
        placed_by: VoiceHubError | None = (
            first_error if trigger and is_ambiguous_trigger_failure(first_error) else None
        )

        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(retries + 1),
            wait=self.wait(),
            retry=tenacity.retry_if_exception(lambda e: self.should_retry(e, trigger=trigger)),
            reraise=True,
            sleep=sleep or self.sleep or asyncio.sleep,
        )
        number = 1
        try:
            async for attempt_state in retrying:
                with attempt_state:
                    number = attempt_state.retry_state.attempt_number
                    if number == 1:
                        # Replay the failure already seen, so that tenacity's
                        # numbering, waits and stop count match the real attempts.
                        raise first_error
                    try:
                        return await attempt(number)
                    except VoiceHubError as error:
                        if placed_by is None and trigger and is_ambiguous_trigger_failure(error):
                            placed_by = error
                        raise
        except VoiceHubError as error:
            _raise_final(error, number, trigger, placed_by)
        raise AssertionError("unreachable: tenacity ended without an outcome")  # pragma: no cover


def _raise_final(
    error: VoiceHubError, attempts: int, trigger: bool, placed_by: VoiceHubError | None = None
) -> NoReturn:
    """Raise the error that ends an operation, with ``attempts`` set on it;
    ``placed_by`` is an earlier attempt's error that may have placed the call."""
    error.attempts = attempts
    if trigger and is_ambiguous_trigger_failure(error):
        raise AmbiguousTriggerError(error, attempts=attempts) from error
    if placed_by is not None:
        placed_by.attempts = attempts
        raise AmbiguousTriggerError(placed_by, attempts=attempts) from error
    raise error
