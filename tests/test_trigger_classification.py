"""The one classification of a failed request (retry.FailureKind) and what acts on it.

The classification itself is pure (no network); the dispatcher's reaction to
a live-call 429 runs against the simulator's live-call cap over real sockets.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from voicehub_async import (
    AmbiguousTriggerError,
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    CallRequest,
    RateLimitError,
    RetryPolicy,
    UnexpectedResponseError,
    VoiceHubClient,
)
from voicehub_async.errors import VoiceHubError, status_error_class
from voicehub_async.retry import Attempts, FailureKind, classify, is_live_call_limit
from voicehub_async.simulator import (
    CONCURRENT_LIMIT_MESSAGE,
    FaultConfig,
    LifecycleConfig,
    SimulatorConfig,
    SimulatorThread,
)


def status(
    code: int, message: str = "boom", body: str = "", retry_after: float | None = None
) -> APIStatusError:
    return status_error_class(code)(code, message, body, retry_after=retry_after)


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (APIConnectionError("refused", sent=False), FailureKind.NOT_CONNECTED),
        (APITimeoutError("pool", sent=False), FailureKind.NOT_CONNECTED),
        (status(503), FailureKind.UNAVAILABLE),
        (status(429, "rate limit exceeded"), FailureKind.RATE_LIMITED),
        (status(429, "call creation rate limit exceeded"), FailureKind.RATE_LIMITED),
        (status(429, "Concurrent call limit exceeded"), FailureKind.LIVE_CALL_LIMIT),
        (status(429, "too many", '{"error": "CONCURRENCY cap"}'), FailureKind.LIVE_CALL_LIMIT),
        (APITimeoutError("read", sent=True), FailureKind.MAYBE_PLACED),
        (status(500), FailureKind.MAYBE_PLACED),
        (status(502), FailureKind.MAYBE_PLACED),
        (status(504), FailureKind.MAYBE_PLACED),
        (UnexpectedResponseError(200, "not JSON"), FailureKind.UNREADABLE_ANSWER),
        (status(400), FailureKind.FINAL),
        (status(404, "concurrent"), FailureKind.FINAL),  # only a 429 is a live-call limit
        (status(302), FailureKind.FINAL),
        (KeyError("a bug"), FailureKind.FINAL),
    ],
)
def test_every_failure_has_one_kind(error: BaseException, kind: FailureKind) -> None:
    assert classify(error) is kind
    # The three groups partition the kinds: exactly one holds.
    assert [kind.not_sent, kind.maybe_placed, kind.final].count(True) == 1


def test_the_groups_and_what_each_allows() -> None:
    for kind in FailureKind:
        # A trigger is retried exactly when it provably was not sent.
        assert kind.retryable(trigger=True) is kind.not_sent
        # Reads also retry what may have reached the service, but not an
        # answer that came and was unreadable.
        assert kind.retryable(trigger=False) is (
            kind.not_sent or kind is FailureKind.MAYBE_PLACED
        )
    assert FailureKind.RATE_LIMITED.throttled and FailureKind.LIVE_CALL_LIMIT.throttled
    assert not FailureKind.UNAVAILABLE.throttled


def test_live_call_limit_recognition_is_documented_and_case_insensitive() -> None:
    assert is_live_call_limit(status(429, CONCURRENT_LIMIT_MESSAGE))
    assert is_live_call_limit(status(429, "error", "Max CONCURRENT calls reached"))
    assert not is_live_call_limit(status(429, "rate limit exceeded"))
    assert not is_live_call_limit(status(503, "concurrent"))
    assert "concurren" in (is_live_call_limit.__doc__ or "")


def test_attempts_state_machine_remembers_a_maybe_placed_attempt() -> None:
    policy = RetryPolicy(max_retries=3, retry_ambiguous_triggers=True, backoff_max=0.0)
    state = policy.attempts(trigger=True)
    first = APITimeoutError("read", sent=True)
    decision = state.failed(first)
    assert decision.retry and decision.kind is FailureKind.MAYBE_PLACED
    decision = state.failed(status(400))  # the re-sent attempt is refused
    assert not decision.retry
    assert isinstance(decision.error, AmbiguousTriggerError)
    assert decision.error.cause is first
    assert decision.error.attempts == 2 and first.attempts == 2


def test_attempts_without_opt_in_end_at_once_and_throttles_get_a_delay() -> None:
    state = Attempts(RetryPolicy(max_retries=0), trigger=True, max_retries=0)
    limited = status(429, "rate limit exceeded", retry_after=7)
    decision = state.failed(limited)
    # No retry left, but a 429's wait is still known: a dispatcher pauses on it.
    assert not decision.retry and decision.delay == 7
    assert decision.error is limited and limited.attempts == 1


def test_one_delay_rule() -> None:
    policy = RetryPolicy(backoff_base=0.5, backoff_max=3.0, retry_after_max=10)
    assert policy.delay(status(429, retry_after=4), 1) == 4
    assert policy.delay(status(503, retry_after=99), 1) == 10
    for attempt in range(1, 8):
        assert 0 <= policy.delay(APIConnectionError("x", sent=False), attempt) <= min(
            3.0, 0.5 * 2 ** (attempt - 1)
        )
    assert policy.delay(APIConnectionError("x", sent=False), 10_000) <= 3.0


# -- the dispatcher on a live-call 429 -----------------------------------------------------


@pytest.fixture
def capped(voicehub_simulator_factory: Callable[..., SimulatorThread]) -> SimulatorThread:
    # Calls never end on their own: once 2 are live, every further trigger is
    # answered 429 "concurrent call limit exceeded" and creates nothing.
    return voicehub_simulator_factory(
        SimulatorConfig(
            faults=FaultConfig(max_live_calls=2),
            lifecycle=LifecycleConfig(queue_delay=(1e6, 1e6)),
        )
    )


async def test_a_live_call_429_is_retried_without_slowing_the_pace(
    capped: SimulatorThread,
) -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    policy = RetryPolicy(max_retries=2, backoff_base=0.01, backoff_max=0.02, sleep=sleep)
    async with VoiceHubClient(
        capped.api_key, base_url=capped.base_url, retry_policy=policy
    ) as client:
        rows = [CallRequest(to=f"+141555501{i:02d}", agent_id="agent-1") for i in range(5)]
        async with client.dispatch(rows, concurrency=1) as dispatcher:
            results = [result async for result in dispatcher]
        stats = dispatcher.stats
    outcomes = sorted(result.outcome for result in results)
    assert outcomes == ["failed"] * 3 + ["queued"] * 2
    for result in results:
        if result.outcome == "failed":
            assert isinstance(result.error, RateLimitError)
            assert "concurrent" in str(result.error)
            assert result.attempts == 3  # retried: nothing was placed
    assert capped.live_calls() == 2  # nobody was phoned by a refused trigger
    assert stats.rate_limited == 9
    # A request-rate 429 would have set a pace (halved); the live-call cap does not.
    assert stats.rate is None
    # Each retry waited its own backoff instead of a shared pause.
    assert len(waits) == 6


async def test_a_rate_429_still_halves_the_pace(
    voicehub_simulator_factory: Callable[..., SimulatorThread],
) -> None:
    from voicehub_async.simulator import Fault

    sim = voicehub_simulator_factory(SimulatorConfig())
    sim.inject(Fault.rate_limited(0), endpoint="trigger")
    policy = RetryPolicy(max_retries=2, backoff_base=0.01, backoff_max=0.02)
    async with VoiceHubClient(sim.api_key, base_url=sim.base_url, retry_policy=policy) as client:
        async with client.dispatch(
            [CallRequest(to="+14155550100", agent_id="agent-1")], concurrency=1
        ) as dispatcher:
            results: list[Any] = [result async for result in dispatcher]
        stats = dispatcher.stats
    assert [r.outcome for r in results] == ["queued"]
    assert stats.rate_limited == 1 and stats.rate is not None


def test_classify_accepts_any_voicehub_error() -> None:
    assert classify(VoiceHubError("something")) is FailureKind.FINAL
