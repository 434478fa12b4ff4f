"""RetryPolicy: what is retried (reads vs the non-idempotent trigger) and how long it waits.

No network here: attempts are scripted coroutines and the sleep is injected,
so every wait is observed exactly and nothing actually waits.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicehub_async import (
    AmbiguousTriggerError,
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    BadRequestError,
    NotFoundError,
    RateLimitError,
    RedirectError,
    RetryPolicy,
    ServerError,
    UnexpectedResponseError,
    VoiceHubError,
)
from voicehub_async.errors import AuthenticationError, status_error_class
from voicehub_async.retry import (
    is_ambiguous_trigger_failure,
    is_retryable_read,
    is_safe_trigger_retry,
    parse_retry_after,
)


class Script:
    """An attempt function failing with the given errors, then answering ``"ok"``."""

    def __init__(self, errors: Iterable[BaseException]) -> None:
        self.errors = list(errors)
        self.numbers: list[int] = []

    async def __call__(self, number: int) -> str:
        self.numbers.append(number)
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


class Sleeps:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def status(code: int, retry_after: float | None = None) -> APIStatusError:
    return status_error_class(code)(code, "boom", retry_after=retry_after)


def connect_failed() -> APIConnectionError:
    return APIConnectionError("could not connect", sent=False)


def reset_after_send() -> APIConnectionError:
    return APIConnectionError("connection broken after sending", sent=True)


def read_timeout() -> APITimeoutError:
    return APITimeoutError("no answer in time", sent=True)


def connect_timeout() -> APITimeoutError:
    return APITimeoutError("timed out getting a connection", sent=False)


# -- classification ------------------------------------------------------------------------

MakeError = Callable[[], VoiceHubError]

SAFE_FOR_TRIGGER: list[MakeError] = [
    connect_failed,
    connect_timeout,
    lambda: status(429),
    lambda: status(503),
]
AMBIGUOUS: list[MakeError] = [
    reset_after_send,
    read_timeout,
    lambda: status(500),
    lambda: status(502),
    lambda: status(504),
    lambda: UnexpectedResponseError(200, "not JSON"),
]
FINAL: list[MakeError] = [
    lambda: status(400),
    lambda: status(401),
    lambda: status(403),
    lambda: status(404),
    lambda: status(422),
    lambda: status(302),
]


@pytest.mark.parametrize("make", SAFE_FOR_TRIGGER)
def test_safe_trigger_retries(make: Any) -> None:
    error = make()
    assert is_safe_trigger_retry(error)
    assert not is_ambiguous_trigger_failure(error)
    assert RetryPolicy().should_retry(error, trigger=True)
    assert RetryPolicy().should_retry(error, trigger=False)


@pytest.mark.parametrize("make", AMBIGUOUS)
def test_ambiguous_trigger_failures(make: Any) -> None:
    error = make()
    assert is_ambiguous_trigger_failure(error)
    assert not is_safe_trigger_retry(error)
    assert not RetryPolicy().should_retry(error, trigger=True)
    assert RetryPolicy(retry_ambiguous_triggers=True).should_retry(error, trigger=True)


@pytest.mark.parametrize("make", FINAL)
def test_final_errors_never_retried(make: Any) -> None:
    error = make()
    for policy in (RetryPolicy(), RetryPolicy(retry_ambiguous_triggers=True)):
        assert not policy.should_retry(error, trigger=True)
        assert not policy.should_retry(error, trigger=False)


@pytest.mark.parametrize("make", [*SAFE_FOR_TRIGGER, *AMBIGUOUS[:5]])
def test_reads_retry_every_transient_failure(make: Any) -> None:
    assert is_retryable_read(make())


def test_unexpected_answer_not_retried_for_a_read() -> None:
    assert not is_retryable_read(UnexpectedResponseError(200, "not JSON"))


def test_status_classes() -> None:
    assert status_error_class(400) is BadRequestError
    assert status_error_class(422) is BadRequestError
    assert status_error_class(401) is AuthenticationError
    assert status_error_class(404) is NotFoundError
    assert status_error_class(429) is RateLimitError
    assert status_error_class(500) is ServerError
    assert status_error_class(599) is ServerError
    assert status_error_class(301) is RedirectError
    assert status_error_class(418) is APIStatusError


# -- RetryPolicy.call --------------------------------------------------------------------------


async def test_first_attempt_success_never_sleeps() -> None:
    sleeps, script = Sleeps(), Script([])
    assert await RetryPolicy().call(script, trigger=True, sleep=sleeps) == "ok"
    assert script.numbers == [1]
    assert sleeps.waits == []


@pytest.mark.parametrize("make", SAFE_FOR_TRIGGER)
async def test_trigger_retried_when_not_sent(make: Any) -> None:
    sleeps, script = Sleeps(), Script([make(), make()])
    assert await RetryPolicy(max_retries=3).call(script, trigger=True, sleep=sleeps) == "ok"
    assert script.numbers == [1, 2, 3]
    assert len(sleeps.waits) == 2


@pytest.mark.parametrize("make", AMBIGUOUS)
async def test_trigger_ambiguous_raised_at_once(make: Any) -> None:
    cause = make()
    sleeps, script = Sleeps(), Script([cause])
    with pytest.raises(AmbiguousTriggerError) as info:
        await RetryPolicy(max_retries=5).call(script, trigger=True, sleep=sleeps)
    assert script.numbers == [1]
    assert sleeps.waits == []
    assert info.value.cause is cause
    assert info.value.__cause__ is cause
    assert info.value.attempts == 1
    assert cause.attempts == 1
    assert "not re-sent" in str(info.value)


async def test_trigger_ambiguous_after_a_safe_retry_counts_attempts() -> None:
    sleeps, script = Sleeps(), Script([status(503), status(429), status(500)])
    with pytest.raises(AmbiguousTriggerError) as info:
        await RetryPolicy(max_retries=5).call(script, trigger=True, sleep=sleeps)
    assert script.numbers == [1, 2, 3]
    assert info.value.attempts == 3
    assert isinstance(info.value.cause, ServerError)
    assert info.value.cause.status == 500


@pytest.mark.parametrize("make", AMBIGUOUS)
async def test_trigger_ambiguous_retried_on_opt_in(make: Any) -> None:
    sleeps, script = Sleeps(), Script([make()])
    policy = RetryPolicy(retry_ambiguous_triggers=True)
    assert await policy.call(script, trigger=True, sleep=sleeps) == "ok"
    assert script.numbers == [1, 2]


async def test_opt_in_exhausted_still_reports_ambiguous() -> None:
    script = Script([status(500)] * 3)
    policy = RetryPolicy(max_retries=2, retry_ambiguous_triggers=True)
    with pytest.raises(AmbiguousTriggerError) as info:
        await policy.call(script, trigger=True, sleep=Sleeps())
    assert info.value.attempts == 3


@pytest.mark.parametrize("make", FINAL)
async def test_final_error_raised_as_is(make: Any) -> None:
    error = make()
    script = Script([error])
    with pytest.raises(type(error)) as info:
        await RetryPolicy().call(script, trigger=False, sleep=Sleeps())
    assert info.value is error
    assert error.attempts == 1
    assert script.numbers == [1]


async def test_exhausted_retries_raise_the_last_error_with_attempts() -> None:
    sleeps = Sleeps()
    errors = [status(503), status(503), status(503), status(503)]
    script = Script(errors)
    with pytest.raises(ServerError) as info:
        await RetryPolicy(max_retries=3).call(script, trigger=True, sleep=sleeps)
    assert info.value is errors[-1]
    assert info.value.attempts == 4
    assert script.numbers == [1, 2, 3, 4]
    assert len(sleeps.waits) == 3


async def test_read_exhausted_after_read_timeouts() -> None:
    script = Script([read_timeout() for _ in range(3)])
    with pytest.raises(APITimeoutError) as info:
        await RetryPolicy(max_retries=2).call(script, trigger=False, sleep=Sleeps())
    assert info.value.attempts == 3


@pytest.mark.parametrize("trigger", [True, False])
async def test_max_retries_zero_never_retries(trigger: bool) -> None:
    script = Script([status(503)])
    with pytest.raises(ServerError) as info:
        await RetryPolicy(max_retries=0).call(script, trigger=trigger, sleep=Sleeps())
    assert info.value.attempts == 1
    assert script.numbers == [1]


async def test_per_call_max_retries_overrides_policy() -> None:
    script = Script([status(503)] * 10)
    with pytest.raises(ServerError) as info:
        await RetryPolicy(max_retries=0).call(script, trigger=False, max_retries=4, sleep=Sleeps())
    assert info.value.attempts == 5


async def test_policy_sleep_used_when_none_given() -> None:
    sleeps = Sleeps()
    script = Script([status(429, retry_after=2)])
    assert await RetryPolicy(sleep=sleeps).call(script, trigger=True) == "ok"
    assert sleeps.waits == [2]


def test_policy_sleep_not_part_of_equality() -> None:
    assert RetryPolicy(sleep=Sleeps()) == RetryPolicy()
    assert "sleep" not in repr(RetryPolicy(sleep=Sleeps()))


async def test_non_voicehub_errors_propagate_unretried() -> None:
    script = Script([KeyError("bug")])
    with pytest.raises(KeyError):
        await RetryPolicy().call(script, trigger=False, sleep=Sleeps())
    assert script.numbers == [1]


# -- waits ---------------------------------------------------------------------------------------


async def test_retry_after_seconds_honoured() -> None:
    sleeps = Sleeps()
    script = Script([status(429, retry_after=3), status(503, retry_after=1.5)])
    assert await RetryPolicy().call(script, trigger=True, sleep=sleeps) == "ok"
    assert sleeps.waits == [3, 1.5]


async def test_retry_after_capped() -> None:
    sleeps = Sleeps()
    script = Script([status(429, retry_after=3600)])
    await RetryPolicy(retry_after_max=5).call(script, trigger=True, sleep=sleeps)
    assert sleeps.waits == [5]


async def test_backoff_is_jittered_exponential_within_bounds() -> None:
    sleeps = Sleeps()
    script = Script([connect_failed() for _ in range(6)])
    policy = RetryPolicy(max_retries=6, backoff_base=0.5, backoff_max=3.0)
    await policy.call(script, trigger=True, sleep=sleeps)
    assert len(sleeps.waits) == 6
    for number, wait in enumerate(sleeps.waits, start=1):
        assert 0 <= wait <= min(3.0, 0.5 * 2**number)


# -- parse_retry_after ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("3", 3.0),
        (" 1.5 ", 1.5),
        ("0", 0.0),
        ("-4", 0.0),
        (None, None),
        ("", None),
        ("soon", None),
        ("nan", None),
    ],
)
def test_parse_retry_after_seconds(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value) == seconds


def test_parse_retry_after_http_date() -> None:
    now = 1_900_000_000.0
    header = email.utils.formatdate(now + 120, usegmt=True)
    assert parse_retry_after(header, now=now) == pytest.approx(120.0)
    past = email.utils.formatdate(now - 120, usegmt=True)
    assert parse_retry_after(past, now=now) == 0.0


def test_parse_retry_after_http_date_against_the_clock() -> None:
    header = email.utils.formatdate(time.time() + 600, usegmt=True)
    seconds = parse_retry_after(header)
    assert seconds is not None
    assert 500 < seconds <= 601


@settings(deadline=None)
@given(st.text(max_size=60))
def test_parse_retry_after_never_raises(value: str) -> None:
    seconds = parse_retry_after(value)
    assert seconds is None or seconds >= 0


@settings(deadline=None)
@given(st.floats(min_value=0, max_value=1e6, allow_nan=False))
def test_parse_retry_after_delta_seconds_round_trip(seconds: float) -> None:
    assert parse_retry_after(repr(seconds)) == seconds


def test_every_error_is_a_voicehub_error() -> None:
    for make in [*SAFE_FOR_TRIGGER, *AMBIGUOUS, *FINAL]:
        assert isinstance(make(), VoiceHubError)


@pytest.mark.parametrize("last", [lambda: status(503), connect_failed, lambda: status(400)])
async def test_opt_in_retry_after_an_ambiguous_attempt_stays_ambiguous(last: Any) -> None:
    # Attempt 1 may have placed the call; the re-sent attempt 2 then fails
    # safely. The trigger as a whole is still ambiguous, not "not placed".
    script = Script([read_timeout(), last()])
    policy = RetryPolicy(max_retries=1, retry_ambiguous_triggers=True)
    with pytest.raises(AmbiguousTriggerError) as info:
        await policy.call(script, trigger=True, sleep=Sleeps())
    assert info.value.attempts == 2
    assert script.numbers == [1, 2]
