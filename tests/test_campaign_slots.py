"""The live-call slot pool, the stop-early breaker and the reconciler, alone."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import pytest

from voicehub_async.campaign.breaker import Breaker
from voicehub_async.campaign.reconcile import Reconciler
from voicehub_async.campaign.slots import SlotPool
from voicehub_async.errors import (
    AmbiguousTriggerError,
    APIConnectionError,
    APIStatusError,
    AuthenticationError,
)
from voicehub_async.models import CallStatus
from voicehub_async.webhooks.events import CallStatusChanged

# -- the slot pool -------------------------------------------------------------------


async def _started(coro: object) -> asyncio.Task[None]:
    task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
    for _ in range(5):
        await asyncio.sleep(0)
    return task


async def test_acquire_waits_while_full_and_a_call_end_frees_a_slot() -> None:
    pool = SlotPool(2, hold_timeout=60)
    await pool.acquire(0)
    await pool.acquire(1)
    pool.bind(0, "call-a")
    pool.bind(1, "call-b")
    third = await _started(pool.acquire(2))
    assert not third.done() and pool.waiting == 1 and pool.full
    assert pool.call_ended("call-a")
    await asyncio.wait_for(third, 5)
    assert pool.in_use == 2 and pool.live == 1 and pool.peak == 2


async def test_a_trigger_that_placed_nothing_gives_its_slot_back() -> None:
    pool = SlotPool(1, hold_timeout=60)
    await pool.acquire(0)
    waiter = await _started(pool.acquire(1))
    pool.release(0)
    await asyncio.wait_for(waiter, 5)
    pool.release(0)  # twice is harmless
    assert pool.in_use == 1


async def test_an_ambiguous_trigger_holds_its_slot_until_the_timeout() -> None:
    pool = SlotPool(1, hold_timeout=0.05)
    await pool.acquire(0)
    pool.hold(0)
    assert pool.live == 1 and pool.full
    # Not freed by an unrelated call ending, nor by a release of another key.
    assert not pool.call_ended("unknown")
    pool.release(5)
    assert pool.full
    await asyncio.wait_for(pool.acquire(1), 5)  # freed once hold_timeout passed
    assert pool.expired == 1


async def test_a_reconciled_trigger_keeps_its_slot_for_the_call() -> None:
    pool = SlotPool(1, hold_timeout=60)
    await pool.acquire(0)
    pool.hold(0)
    pool.bind(0, "call-x")
    assert pool.full and pool.live == 1
    assert pool.call_ended("call-x")
    assert not pool.full


async def test_first_come_first_served_and_a_cancelled_waiter_takes_nothing() -> None:
    pool = SlotPool(1, hold_timeout=60)
    await pool.acquire("a")
    order: list[str] = []

    async def take(key: str) -> None:
        await pool.acquire(key)
        order.append(key)

    first = await _started(take("b"))
    cancelled = await _started(take("c"))
    last = await _started(take("d"))
    cancelled.cancel()
    pool.release("a")
    await asyncio.wait_for(first, 5)
    pool.release("b")
    await asyncio.wait_for(last, 5)
    assert order == ["b", "d"]
    assert pool.in_use == 1


async def test_a_newcomer_cannot_take_a_slot_handed_to_a_waiter() -> None:
    pool = SlotPool(1, hold_timeout=60)
    await pool.acquire("a")
    waiter = asyncio.ensure_future(pool.acquire("b"))
    await asyncio.sleep(0)
    pool.release("a")  # handed to "b", which has not run yet
    newcomer = asyncio.ensure_future(pool.acquire("c"))
    await asyncio.sleep(0)
    await asyncio.wait_for(waiter, 5)
    assert not newcomer.done() and pool.in_use == 1
    newcomer.cancel()


async def test_concurrent_call_429s_that_keep_coming_lower_the_limit() -> None:
    now = [0.0]
    pool = SlotPool(None, hold_timeout=60, lower_after=2, probe_after=30, clock=lambda: now[0])
    for key in range(4):
        await pool.acquire(key)
    pool.bind(0, "c0")
    pool.bind(1, "c1")
    # One 429: the trigger waits (here: the short delay) and goes again; no lowering.
    await asyncio.wait_for(pool.refused(2, 0.01), 5)
    assert pool.limit is None and pool.in_use == 4
    # It keeps happening: the service is at its cap with our 2 live calls.
    again = await _started(pool.refused(3, 0.01))
    assert pool.limit == 2 and pool.lowered == 1
    await asyncio.sleep(0.05)
    assert not again.done()  # the limit is reached: it waits for a call to end
    # Trigger 2 was out already and succeeds: the service had room for 3.
    pool.bind(2, "c2")
    assert pool.limit == 3
    pool.call_ended("c0")
    await asyncio.wait_for(again, 5)
    assert pool.in_use == 3
    # Quiet for probe_after seconds: the next acquire grows the limit by one...
    now[0] = 31.0
    await asyncio.wait_for(pool.acquire(4), 5)
    assert pool.limit == 4
    # ...and a 429 right after the probe lowers it at once, to the calls live.
    now[0] = 32.0
    probe = await _started(pool.refused(4, 0.01))
    assert pool.limit == 2 and pool.lowered == 2
    probe.cancel()


async def test_the_limit_never_grows_above_the_cap() -> None:
    now = [0.0]
    pool = SlotPool(2, hold_timeout=60, lower_after=1, probe_after=1, clock=lambda: now[0])
    await pool.acquire(0)
    await pool.acquire(1)
    pool.bind(0, "c0")
    refused = await _started(pool.refused(1, 0.01))
    assert pool.limit == 1
    pool.call_ended("c0")
    await asyncio.wait_for(refused, 5)
    pool.release(1)
    for step in range(1, 5):
        now[0] = 10.0 * step
        await pool.acquire(("k", step))
        pool.release(("k", step))
    assert pool.limit == 2


async def test_never_above_the_cap_under_a_random_workload() -> None:
    import random

    rng = random.Random(7)
    pool = SlotPool(3, hold_timeout=0.02)
    worst = 0

    async def trigger(key: int) -> None:
        nonlocal worst
        await pool.acquire(key)
        worst = max(worst, pool.in_use)
        await asyncio.sleep(rng.random() / 200)
        fate = rng.random()
        if fate < 0.3:
            pool.release(key)
        elif fate < 0.5:
            pool.hold(key)
        else:
            pool.bind(key, f"call-{key}")
            await asyncio.sleep(rng.random() / 100)
            pool.call_ended(f"call-{key}")

    await asyncio.wait_for(asyncio.gather(*(trigger(k) for k in range(60))), 30)
    assert worst <= 3 and pool.peak <= 3


async def test_wait_freed_ends_when_a_call_ends_or_at_the_timeout() -> None:
    pool = SlotPool(None, hold_timeout=60)
    await pool.acquire(0)
    await pool.acquire(1)
    pool.bind(0, "c0")
    waiting = await _started(pool.wait_freed(60))
    pool.release(1)  # a trigger that placed nothing frees no room at the service
    await asyncio.sleep(0)
    assert not waiting.done()
    pool.call_ended("c0")
    await asyncio.wait_for(waiting, 5)
    await asyncio.wait_for(pool.wait_freed(0.01), 5)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="cap"):
        SlotPool(0, hold_timeout=1)
    with pytest.raises(ValueError, match="hold_timeout"):
        SlotPool(1, hold_timeout=0)


# -- the breaker ------------------------------------------------------------------------


def _no_connection() -> APIConnectionError:
    return APIConnectionError("Cannot connect to host voicehub.invalid:443", sent=False)


def test_breaker_trips_after_consecutive_connection_failures() -> None:
    breaker = Breaker("voicehub.invalid", max_failures=3, max_silence=1000, clock=lambda: 0.0)
    assert breaker.attempt(_no_connection()) is None
    assert breaker.trouble is not None and "cannot reach voicehub.invalid" in breaker.trouble
    assert breaker.attempt(_no_connection()) is None
    cause = breaker.attempt(_no_connection())
    assert cause is not None and cause.kind == "unreachable"
    assert "\n" not in cause.message and "voicehub.invalid" in cause.message
    assert breaker.attempt(_no_connection()) is None  # the cause is given once


def test_any_answer_from_the_service_starts_the_count_again() -> None:
    breaker = Breaker("h", max_failures=2, max_silence=1000, clock=lambda: 0.0)
    breaker.attempt(_no_connection())
    breaker.attempt(APIStatusError(429, "rate limit exceeded"))
    assert breaker.attempt(_no_connection()) is None
    breaker.attempt(AmbiguousTriggerError(APIConnectionError("reset", sent=True), attempts=1))
    assert breaker.failures == 0 and breaker.trouble is None
    breaker.attempt(None)
    assert not breaker.tripped


def test_breaker_trips_after_a_stretch_without_success() -> None:
    now = [0.0]
    breaker = Breaker("h", max_failures=1000, max_silence=30, clock=lambda: now[0])
    assert breaker.attempt(_no_connection()) is None
    now[0] = 29.0
    assert breaker.attempt(_no_connection()) is None
    now[0] = 30.5
    cause = breaker.attempt(_no_connection())
    assert cause is not None and "over 30s" in cause.message


@pytest.mark.parametrize("status", [401, 403])
def test_breaker_trips_at_once_when_the_key_is_refused(status: int) -> None:
    breaker = Breaker("h")
    error = (
        AuthenticationError(401, "invalid API key")
        if status == 401
        else APIStatusError(403, "forbidden")
    )
    cause = breaker.attempt(error)
    assert cause is not None and cause.kind == "refused" and str(status) in cause.message


# -- the reconciler -----------------------------------------------------------------------

_T0 = 1_700_000_000.0


def _event(
    call_id: str,
    number: str = "+14155550123",
    agent: str = "agent-1",
    at: float = _T0 + 1,
) -> CallStatusChanged:
    return CallStatusChanged(
        call_id=call_id,
        status=CallStatus("queued"),
        agent_id=agent,
        user_number=number,
        timestamp=datetime.fromtimestamp(at, timezone.utc),
        event_id=f"ev-{call_id}-{at}",
    )


def _nobody(_: str) -> bool:
    return False


def test_an_event_after_the_mark_resolves_the_ambiguous_row() -> None:
    rec = Reconciler(clock=lambda: _T0 + 2)
    assert rec.ambiguous(7, "+14155550123", "agent-1", _T0, _nobody) is None
    assert rec.event(_event("other", number="+14155550999"), _nobody) is None
    assert rec.event(_event("other", agent="agent-2"), _nobody) is None
    assert rec.event(_event("old", at=_T0 - 5), _nobody) is None  # before the mark
    found = rec.event(_event("call-1", number="+1 (415) 555-0123"), _nobody)
    assert found is not None and found.row == 7 and found.call_id == "call-1"
    assert rec.waiting == 0
    assert rec.event(_event("call-2"), _nobody) is None  # one match per row


def test_an_event_that_came_before_the_failure_was_known_still_matches() -> None:
    rec = Reconciler(clock=lambda: _T0 + 2)
    assert rec.event(_event("call-1"), _nobody) is None
    found = rec.ambiguous(3, "+14155550123", "agent-1", _T0, _nobody)
    assert found is not None and found.call_id == "call-1"


def test_known_and_ended_calls_and_shared_numbers_are_never_matched() -> None:
    rec = Reconciler(clock=lambda: _T0 + 2)
    rec.ambiguous(1, "+14155550123", "agent-1", _T0, _nobody)
    assert rec.event(_event("followed"), lambda call_id: call_id == "followed") is None
    rec.ended("finished")
    assert rec.event(_event("finished"), _nobody) is None
    # A second ambiguous row to the same number and agent: neither is matched.
    rec.ambiguous(2, "+14155550123", "agent-1", _T0, _nobody)
    assert rec.event(_event("call-1"), _nobody) is None
    rec.forget(1)
    assert rec.event(_event("call-1"), _nobody) is not None


def test_events_without_a_number_agent_or_timestamp_are_ignored() -> None:
    rec = Reconciler(clock=lambda: _T0 + 2)
    rec.ambiguous(1, "+14155550123", "agent-1", _T0, _nobody)
    bare = CallStatusChanged(call_id="c", status=CallStatus("queued"))
    assert rec.event(bare, _nobody) is None
    assert rec.waiting == 1


def test_unmatched_events_are_kept_a_bounded_while() -> None:
    now = [_T0]
    rec = Reconciler(keep=10, max_events=5, clock=lambda: now[0])
    for n in range(20):
        rec.event(_event(f"c{n}", number=f"+1415555{n:04d}"), _nobody)
    assert rec._n_seen <= 5
    now[0] += 11
    rec.event(_event("late", number="+14155559999", at=now[0]), _nobody)
    assert rec._n_seen == 1
