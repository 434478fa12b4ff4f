"""The Dispatcher: one result per input, never a number phoned twice, clean stops.

Behaviour that crosses the network runs against the simulator over real
sockets on 127.0.0.1 (served from a background thread, so that the test's own
event loop holds only the dispatcher's tasks). The pacing logic (429 pause,
rate halving) is also tested on its own with an injected clock, so that no
assertion depends on how fast a loaded machine happens to be.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import math
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import phonenumbers
import pytest

from voicehub_async import (
    AmbiguousTriggerError,
    BadRequestError,
    CallRequest,
    Dispatcher,
    DispatchResult,
    DispatchStats,
    InvalidRequestError,
    RateLimitError,
    RetryPolicy,
    VoiceHubClient,
)
from voicehub_async._ratelimit import Pacer
from voicehub_async.dispatch import _as_call_request
from voicehub_async.simulator import Fault, FaultConfig, SimulatorConfig, SimulatorThread
from voicehub_async.stats import LatencyHistogram

AGENT = "agent-1"


def number(i: int) -> str:
    """A distinct valid US number per i < 10,000."""
    return f"+1415555{i:04d}"


def requests(count: int, start: int = 0) -> Iterator[CallRequest]:
    for i in range(start, start + count):
        yield CallRequest(to=number(i), agent_id=AGENT)


def fast_policy(max_retries: int = 5) -> RetryPolicy:
    return RetryPolicy(max_retries=max_retries, backoff_base=0.01, backoff_max=0.1)


def client_for(sim: SimulatorThread, **options: Any) -> VoiceHubClient:
    options.setdefault("retry_policy", fast_policy())
    return VoiceHubClient(sim.api_key, base_url=sim.base_url, **options)


def connections_in_use(client: VoiceHubClient) -> int:
    """Connections checked out of the client's pool (aiohttp has no public count)."""
    session = client._session
    if session is None or session.connector is None:
        return 0
    return len(session.connector._acquired)


async def wait_until(condition: Callable[[], bool], timeout: float = 15.0) -> bool:
    """Poll ``condition``: a generous upper bound, never a timing assertion."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def dispatch_tasks() -> set[asyncio.Task[Any]]:
    """Live tasks of this loop but the test's own (compare: no new ones may remain)."""
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()}


def created_per_number(sim: SimulatorThread) -> collections.Counter[str]:
    return collections.Counter(r.to for r in list(sim.triggers) if r.created and r.to)


@pytest.fixture
def sim_factory(
    voicehub_simulator_factory: Callable[..., SimulatorThread],
) -> Callable[..., SimulatorThread]:
    def make(faults: FaultConfig | None = None, **config: Any) -> SimulatorThread:
        return voicehub_simulator_factory(SimulatorConfig(faults=faults or FaultConfig(), **config))

    return make


def test_test_numbers_are_valid_and_distinct() -> None:
    numbers = [number(i) for i in range(0, 10_000, 97)]
    assert all(phonenumbers.is_valid_number(phonenumbers.parse(n)) for n in numbers)
    assert len(set(number(i) for i in range(5000))) == 5000


def test_exported_from_the_package() -> None:
    import voicehub_async

    for name in ("Dispatcher", "DispatchResult", "DispatchStats"):
        assert name in voicehub_async.__all__
        assert getattr(voicehub_async, name) is not None


# -- the whole story under faults -----------------------------------------------------------


@pytest.mark.slow
async def test_5000_calls_under_faults_one_result_each_and_nobody_phoned_twice(
    sim_factory: Callable[..., SimulatorThread],
) -> None:
    sim = sim_factory(
        FaultConfig(
            rate_limit=1000,
            rate_limit_burst=50,
            error_503_rate=0.05,
            error_503_retry_after=None,
            reset_after_create_rate=0.01,
        )
    )
    total = 5000
    # A client slowed by a loaded machine never outruns the bucket, so some
    # 429s are scripted as well: queued once the last inputs are being sent
    # (the pace they halve then costs little), and certainly consumed by the
    # 250 or more requests still to come.
    scripted_429s, late = 5, total - 250
    sending: collections.Counter[int] = collections.Counter()

    def on_sending(index: int, prepared: CallRequest) -> None:
        sending[index] += 1
        if index == late and sending[index] == 1:
            sim.inject(Fault.rate_limited(0), endpoint="trigger", times=scripted_429s)

    results: list[DispatchResult] = []
    async with client_for(sim, retry_policy=fast_policy(10)) as client:
        async with client.dispatch(
            requests(total), concurrency=100, on_sending=on_sending
        ) as dispatcher:
            async for result in dispatcher:
                results.append(result)
        stats = dispatcher.stats

    # Exactly one result per input.
    assert sorted(r.index for r in results) == list(range(total))
    outcomes = collections.Counter(r.outcome for r in results)
    assert set(outcomes) <= {"queued", "ambiguous", "failed"}
    assert outcomes["queued"] >= total * 0.95

    # The simulator's log agrees with every result.
    created = created_per_number(sim)
    by_id = {r.call_id: r for r in list(sim.triggers) if r.created}
    for result in results:
        to = number(result.index)
        if result.outcome == "queued":
            assert result.call is not None and result.error is None
            assert created[to] == 1
            assert by_id[result.call.id].to == to
        elif result.outcome == "ambiguous":
            assert isinstance(result.error, AmbiguousTriggerError)
            assert created[to] <= 1
        else:
            assert created[to] == 0
    assert max(sim.placed_counts().values()) == 1  # no number dialed twice

    # Every request went through on_sending first; the stats add up.
    assert sum(sending.values()) == sim.trigger_count == stats.requests
    assert sum(r.attempts for r in results) == stats.requests
    assert stats.retries == stats.requests - total
    assert stats.rate_limited > 0 and stats.retries > 0
    answered_429s = sum(1 for r in list(sim.triggers) if r.answered_status == 429)
    assert stats.rate_limited == answered_429s >= scripted_429s
    assert dict(stats.counts) == {o: outcomes.get(o, 0) for o in stats.counts}
    assert stats.completed == stats.taken == total and stats.in_flight == 0
    assert stats.latency_p50 is not None and stats.latency_p99 is not None
    assert stats.latency_p50 <= (stats.latency_p95 or 0) <= stats.latency_p99
    assert stats.throughput > 0


# -- single rows ------------------------------------------------------------------------------


async def test_invalid_rows_are_refused_before_sending_and_name_the_field(
    sim_factory: Callable[..., SimulatorThread],
) -> None:
    sim = sim_factory(known_agents={AGENT})
    soon = datetime.now(timezone.utc) + timedelta(hours=1)
    rows: list[Any] = [
        {"to": number(1), "agent_id": AGENT},  # fine
        {"to": "not a number", "agent_id": AGENT},
        {"to": number(2), "agent_id": ""},
        {"to": number(3), "agent_id": AGENT, "agentId": AGENT},  # unknown key
        {"agent_id": AGENT},  # missing to
        CallRequest(to=number(4), agent_id="agent-unknown"),  # the service refuses it: 400
        CallRequest(to=number(5), agent_id=AGENT, scheduled_at=soon),
        CallRequest(to=number(6), agent_id=AGENT, scheduled_at=datetime(2030, 1, 1)),  # naive
        "+14155550000",  # not a request at all
    ]
    async with client_for(sim) as client:
        async with client.dispatch(rows, concurrency=4) as dispatcher:
            results = {r.index: r async for r in dispatcher}

    assert len(results) == len(rows)
    expected_invalid = {1: "to", 2: "agent_id", 3: "agentId", 4: "to", 7: "scheduled_at"}
    expected_invalid[8] = "request"
    for index, field in expected_invalid.items():
        result = results[index]
        assert result.outcome == "invalid", result
        assert isinstance(result.error, InvalidRequestError)
        assert result.error.field == field
        assert result.attempts == 0 and result.call is None
        assert result.request is rows[index]
    assert "did you mean 'agent_id'" in str(results[3].error)

    assert results[0].outcome == "queued" and results[0].call is not None
    assert results[6].outcome == "scheduled" and results[6].call is not None
    failed = results[5]
    assert failed.outcome == "failed" and failed.attempts == 1
    assert isinstance(failed.error, BadRequestError) and failed.error.status == 400
    # Only the three rows that passed validation reached the service.
    assert sim.trigger_count == 3
    assert sorted(r.to or "" for r in sim.triggers) == sorted([number(1), number(4), number(5)])


def test_mapping_rows_are_converted_or_refused_with_the_field() -> None:
    request = _as_call_request({"to": "+14155550123", "agent_id": "a", "context": {"k": 1}})
    assert request == CallRequest("+14155550123", "a", context={"k": 1})
    with pytest.raises(InvalidRequestError) as info:
        _as_call_request({"to": "+14155550123", "agent_id": "a", "from": "+14155550124"})
    assert info.value.field == "from" and "from_number" in str(info.value)
    with pytest.raises(InvalidRequestError) as info:
        _as_call_request({"to": "+14155550123"})
    assert info.value.field == "agent_id"


async def test_retries_go_through_on_sending_first_and_never_resend_an_ambiguous_trigger(
    sim_factory: Callable[..., SimulatorThread],
) -> None:
    sim = sim_factory()
    sim.inject(Fault.status(503), endpoint="trigger", times=2)  # refused: retried
    sim.inject(Fault.reset(create=True), endpoint="trigger")  # placed, then cut: not retried
    seen_by_hook: list[tuple[int, str, int]] = []

    async def on_sending(index: int, prepared: CallRequest) -> None:
        await asyncio.sleep(0)
        # The hook runs before the request is on the wire: the simulator has
        # not received it yet.
        seen_by_hook.append((index, prepared.to, sim.trigger_count))

    rows = [{"to": "(415) 555-0100", "agent_id": AGENT}, {"to": number(101), "agent_id": AGENT}]
    async with client_for(sim, default_region="US") as client:
        async with client.dispatch(rows, concurrency=1, on_sending=on_sending) as dispatcher:
            results = [r async for r in dispatcher]

    first, second = sorted(results, key=lambda r: r.index)
    assert first.outcome == "ambiguous" and first.attempts == 3
    assert isinstance(first.error, AmbiguousTriggerError)
    assert second.outcome == "queued" and second.attempts == 1
    # One hook call per request, each before the simulator saw that request,
    # with the prepared (E.164) request.
    assert seen_by_hook == [(0, number(100), 0), (0, number(100), 1), (0, number(100), 2),
                            (1, number(101), 3)]  # fmt: skip
    assert sim.trigger_count == 4
    assert sim.calls_placed_to(number(100)) == 1


async def test_dict_rows_from_an_async_iterable_and_on_result(
    sim_factory: Callable[..., SimulatorThread],
) -> None:
    sim = sim_factory()

    async def rows() -> AsyncIterator[dict[str, Any]]:
        for i in range(30):
            await asyncio.sleep(0)
            yield {"to": number(i), "agent_id": AGENT, "context": {"row": i}}

    reported: list[DispatchResult] = []

    async def on_result(result: DispatchResult) -> None:
        reported.append(result)

    async with client_for(sim) as client:
        dispatcher = Dispatcher(client, rows(), concurrency=8, on_result=on_result)
        results = [r async for r in dispatcher]
    assert sorted(r.index for r in results) == list(range(30))
    assert all(r.outcome == "queued" for r in results)
    assert sorted(reported, key=lambda r: r.index) == sorted(results, key=lambda r: r.index)
    assert sorted(r.context["row"] for r in sim.triggers) == list(range(30))


# -- stopping -----------------------------------------------------------------------------------


def check_one_result_per_taken_input(
    results: list[DispatchResult], taken: int, sim: SimulatorThread, start: int = 0
) -> collections.Counter[str]:
    """Every input taken has exactly one result, consistent with the simulator's log."""
    assert sorted(r.index for r in results) == list(range(taken))
    created = created_per_number(sim)
    for result in results:
        to = number(start + result.index)
        if result.outcome == "queued":
            assert result.call is not None and created[to] == 1
        elif result.outcome == "ambiguous":
            assert created[to] <= 1
        else:
            assert result.outcome == "not_sent", result
            assert created[to] == 0
    assert max(sim.placed_counts().values(), default=0) <= 1
    return collections.Counter(r.outcome for r in results)


async def test_cancelling_the_consumer_halfway(
    sim_factory: Callable[..., SimulatorThread],
) -> None:
    sim = sim_factory(FaultConfig(latency=(0.005, 0.02)))
    before = dispatch_tasks()
    reported: list[DispatchResult] = []
    source = requests(2000)
    consumed = 0

    async with client_for(sim) as client:
        dispatcher = client.dispatch(source, concurrency=50, on_result=reported.append)

        async def consume() -> None:
            nonlocal consumed
            async for _ in dispatcher:
                consumed += 1

        consumer = asyncio.create_task(consume())
        assert await wait_until(lambda: consumed >= 300)
        consumer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await consumer

        # Cancelling waited for the triggers in flight, then stopped.
        assert dispatch_tasks() <= before
        assert connections_in_use(client) == 0
        stats = dispatcher.stats
        assert 300 <= stats.taken < 2000
        check_one_result_per_taken_input(reported, stats.taken, sim)
        # (How many taken inputs were still unsent when the cancel landed depends
        # on scheduling; the check above already proves each is triggered or not_sent.)
        assert stats.in_flight == 0 and stats.completed == stats.taken
        # Inputs never taken are still in the caller's generator.
        assert next(source).to == number(stats.taken)
        # What the consumer did not read can still be read.
        rest = [r async for r in dispatcher]
        assert consumed + len(rest) == stats.taken
    assert client._session is None  # and the client's session is closed with it


async def test_aclose_with_a_drain_timeout_reports_cut_triggers_as_ambiguous(
    sim_factory: Callable[..., SimulatorThread],
) -> None:
    sim = sim_factory()
    sim.inject(Fault.delay(30, create=True), endpoint="trigger", times=3)  # will hang
    before = dispatch_tasks()
    results: list[DispatchResult] = []
    async with client_for(sim) as client:
        async with client.dispatch(requests(400), concurrency=10) as dispatcher:
            async for result in dispatcher:
                results.append(result)
                if len(results) == 100:
                    await dispatcher.aclose(drain_timeout=0.5)
        assert dispatch_tasks() <= before
        assert connections_in_use(client) == 0
    outcomes = check_one_result_per_taken_input(results, dispatcher.stats.taken, sim)
    cut = [r for r in results if r.outcome == "ambiguous"]
    assert len(cut) >= 3  # the three held back (more only on a very slow machine)
    for result in cut:
        assert result.attempts == 1  # never retried
        assert isinstance(result.error, AmbiguousTriggerError)
        assert "cancelled while in flight" in str(result.error)
        assert sim.calls_placed_to(number(result.index)) <= 1
    assert outcomes["queued"] >= 100 - 3


async def test_stop_inside_the_loop_yields_the_rest_then_ends(
    sim_factory: Callable[..., SimulatorThread],
) -> None:
    sim = sim_factory()
    results: list[DispatchResult] = []
    async with client_for(sim) as client:
        async with client.dispatch(requests(1000), concurrency=20) as dispatcher:
            async for result in dispatcher:
                results.append(result)
                if len(results) == 50:
                    dispatcher.stop()
    taken = dispatcher.stats.taken
    assert 50 <= taken < 1000
    check_one_result_per_taken_input(results, taken, sim)


@pytest.mark.parametrize("with_block", [True, False])
async def test_an_exception_in_the_loop_body_leaves_no_task_or_connection(
    sim_factory: Callable[..., SimulatorThread], with_block: bool
) -> None:
    sim = sim_factory(FaultConfig(latency=(0.001, 0.01)))
    before = dispatch_tasks()
    reported: list[DispatchResult] = []
    async with client_for(sim) as client:
        dispatcher = client.dispatch(requests(3000), concurrency=30, on_result=reported.append)
        with pytest.raises(ZeroDivisionError):
            if with_block:
                async with dispatcher:
                    async for _ in dispatcher:
                        if len(reported) > 100:
                            raise ZeroDivisionError
            else:
                async for _ in dispatcher:
                    if len(reported) > 100:
                        raise ZeroDivisionError
        # Without ``async with`` the loop's async-generator finalizer closes
        # the dispatch in a task of its own: give it the time it needs.
        assert await wait_until(lambda: dispatch_tasks() <= before)
        assert connections_in_use(client) == 0
        assert dispatcher.stopping
    check_one_result_per_taken_input(reported, dispatcher.stats.taken, sim)


async def test_a_slow_consumer_holds_the_workers_back(
    sim_factory: Callable[..., SimulatorThread],
) -> None:
    sim = sim_factory()
    endless = (CallRequest(to=number(i % 10_000), agent_id=AGENT) for i in itertools.count())
    async with client_for(sim) as client:
        async with client.dispatch(endless, concurrency=4, buffer=4) as dispatcher:
            iterator = aiter(dispatcher)
            await anext(iterator)
            taken = -1
            while taken != dispatcher.stats.taken:  # until the workers are stuck
                taken = dispatcher.stats.taken
                await asyncio.sleep(0.2)
            # read ahead: results buffered + one per worker + one validation batch
            assert taken <= 1 + 4 + 4 + 32
            await iterator.aclose()


async def test_failing_input_or_hook_stops_the_dispatch_and_is_raised(
    sim_factory: Callable[..., SimulatorThread],
) -> None:
    sim = sim_factory()

    def broken_rows() -> Iterator[CallRequest]:
        yield from requests(40)
        raise OSError("the CSV file went away")

    async with client_for(sim) as client:
        results: list[DispatchResult] = []
        with pytest.raises(OSError, match="went away"):
            async for result in client.dispatch(broken_rows(), concurrency=5):
                results.append(result)
        assert sorted(r.index for r in results) == list(range(40))
        assert all(r.outcome in ("queued", "not_sent") for r in results)

        def journal(index: int, prepared: CallRequest) -> None:
            if index == 7:
                raise RuntimeError("journal disk full")

        results = []
        with pytest.raises(RuntimeError, match="disk full"):
            async for result in client.dispatch(requests(100, 200), concurrency=1,
                                                on_sending=journal):  # fmt: skip
                results.append(result)
        by_index = {r.index: r for r in results}
        assert by_index[7].outcome == "not_sent"
        assert isinstance(by_index[7].error, RuntimeError)
        assert sim.calls_placed_to(number(207)) == 0
        assert all(by_index[i].outcome == "queued" for i in range(7))


async def test_a_closed_client_or_bad_options_are_refused(
    sim_factory: Callable[..., SimulatorThread],
) -> None:
    sim = sim_factory()
    client = client_for(sim)
    with pytest.raises(ValueError):
        client.dispatch([], concurrency=0)
    with pytest.raises(ValueError):
        client.dispatch([], rate_limit=0)
    with pytest.raises(TypeError):
        client.dispatch(CallRequest(number(1), AGENT))  # type: ignore[arg-type]
    async with client:
        assert [r async for r in client.dispatch([])] == []
    with pytest.raises(RuntimeError, match="closed"):
        async for _ in client.dispatch(requests(1)):
            pass


# -- pacing: the 429 pause and the rate ------------------------------------------------------------


class FakeTime:
    """A clock that only moves when somebody sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


async def test_pacer_pauses_everybody_and_halves_once_per_episode() -> None:
    time = FakeTime()
    pacer = Pacer(None, clock=time, sleep=time.sleep)
    assert not pacer.gated and pacer.rate is None
    for _ in range(200):  # 200 requests/s measured over the last second
        pacer.note_sent(time.now)
        time.now += 0.005
    sent_at = time.now - 0.01
    # Ten requests in flight come back 429: one pause, one halving.
    for _ in range(10):
        pacer.note_rate_limited(sent_at, 2.0)
    assert pacer.rate_limited == 10 and pacer.backoffs == 1
    assert pacer.rate is not None and 90 <= pacer.rate <= 110
    assert pacer.paused_until == pytest.approx(time.now + 2.0)
    # Every worker waits out the pause, not only the one that got the 429.
    paused_from = time.now
    await asyncio.gather(*(pacer.wait_turn() for _ in range(5)))
    assert time.now >= paused_from + 2.0
    # A 429 for a request sent after the pause halves again.
    pacer.note_sent(time.now)
    rate = pacer.rate
    pacer.note_rate_limited(time.now, 1.0)
    assert pacer.backoffs == 2 and pacer.rate <= rate / 2 + 1e-9


async def test_pacer_grows_back_slowly_to_the_ceiling() -> None:
    time = FakeTime()
    pacer = Pacer(100.0, clock=time, sleep=time.sleep, recovery_time=10.0)
    pacer.note_sent(time.now)
    # One request sent, and a 429: too little seen to trust a measured rate,
    # so the pace itself halves.
    pacer.note_rate_limited(time.now, 1.0)
    assert pacer.rate == pytest.approx(50.0)
    rates: list[float] = []
    for _ in range(12):
        time.now += 1.0
        await pacer.wait_turn()
        assert pacer.rate is not None
        rates.append(pacer.rate)
    # About 10% a second (doubling in ~7 s), never above the ceiling.
    assert rates == sorted(rates)
    assert 60.0 < rates[2] < 75.0
    assert rates[-1] == 100.0


async def test_pacer_without_a_ceiling_stops_pacing_well_past_the_trouble() -> None:
    time = FakeTime()
    pacer = Pacer(None, clock=time, sleep=time.sleep)
    pacer.note_sent(time.now)  # a 429 for the very first request
    pacer.note_rate_limited(time.now, 1.0)
    assert pacer.gated and pacer.rate is not None and pacer.rate >= 5.0
    for _ in range(30):
        time.now += 1.0
        await pacer.wait_turn()
    assert pacer.rate is None and not pacer.gated


async def test_pacer_spaces_requests_at_the_rate() -> None:
    loop = asyncio.get_running_loop()
    pacer = Pacer(200.0, clock=loop.time, sleep=asyncio.sleep)
    started = loop.time()
    for _ in range(100):
        await pacer.wait_turn()
    # 100 requests at 200/s, after a burst of at most 0.1 s worth (20):
    # a lower bound only, which a slow machine cannot break.
    assert loop.time() - started >= (100 - 20 - 1) / 200.0


async def test_a_429_pauses_all_workers_against_the_simulator(
    sim_factory: Callable[..., SimulatorThread],
) -> None:
    sim = sim_factory()
    concurrency = 8
    async with client_for(sim) as client:
        async with client.dispatch(requests(120), concurrency=concurrency) as dispatcher:
            seen = 0
            async for _ in dispatcher:
                seen += 1
                if seen == 10:  # the next trigger is answered 429, Retry-After: 1
                    sim.inject(Fault.rate_limited(1), endpoint="trigger")
        stats = dispatcher.stats
    assert stats.queued == 120 and stats.rate_limited == 1
    log = list(sim.triggers)
    (limited,) = [r for r in log if r.answered_status == 429]
    # Requests already on their way when the 429 came back may still arrive;
    # no worker sends anything else until the pause is over.
    soon_after = [r for r in log if limited.received_at < r.received_at < limited.received_at + 0.9]
    assert len(soon_after) <= concurrency - 1
    assert stats.rate is not None  # and a pace applies from then on


async def test_the_dispatcher_meets_far_fewer_429s_than_naive_retries(
    sim_factory: Callable[..., SimulatorThread],
) -> None:
    faults = FaultConfig(rate_limit=200, rate_limit_burst=20)
    count, concurrency = 300, 60
    # Short pauses (Retry-After capped at 0.2 s) keep the test quick; the
    # comparison holds for any pause length.
    policy = RetryPolicy(max_retries=50, backoff_base=0.01, backoff_max=0.1, retry_after_max=0.2)

    naive_sim = sim_factory(faults)
    async with client_for(naive_sim, retry_policy=policy) as client:
        semaphore = asyncio.Semaphore(concurrency)

        async def one(request: CallRequest) -> None:
            async with semaphore:
                await client.trigger(request)  # each request honours Retry-After alone

        await asyncio.gather(*(one(r) for r in requests(count)))
    naive_429s = sum(1 for r in naive_sim.triggers if r.answered_status == 429)

    sim = sim_factory(faults)
    async with client_for(sim, retry_policy=policy) as client:
        async with client.dispatch(requests(count), concurrency=concurrency) as dispatcher:
            outcomes = collections.Counter([r.outcome async for r in dispatcher])
    dispatch_429s = sum(1 for r in sim.triggers if r.answered_status == 429)

    assert outcomes == {"queued": count}
    assert naive_sim.created_count == sim.created_count == count
    assert dispatch_429s == dispatcher.stats.rate_limited
    # The whole pool backs off together: a fraction of the naive 429 storm.
    assert dispatch_429s * 2 < naive_429s, (dispatch_429s, naive_429s)


async def test_a_429_after_the_last_retry_is_failed(
    sim_factory: Callable[..., SimulatorThread],
) -> None:
    sim = sim_factory()
    sim.inject(Fault.rate_limited(0), endpoint="trigger", times=3)
    async with client_for(sim, retry_policy=fast_policy(2)) as client:
        results = [r async for r in client.dispatch(requests(1), concurrency=1)]
    (result,) = results
    assert result.outcome == "failed" and result.attempts == 3
    assert isinstance(result.error, RateLimitError) and result.error.attempts == 3
    assert sim.created_count == 0


# -- statistics in constant memory ---------------------------------------------------------------


def test_latency_histogram_quantiles_are_close_and_memory_is_fixed() -> None:
    histogram = LatencyHistogram()
    size = len(histogram._buckets)
    values = [0.001 * (1.0 + i / 100.0) for i in range(10_000)]  # 1 ms .. 101 ms
    for value in values:
        histogram.add(value)
    assert len(histogram._buckets) == size and histogram.count == len(values)
    ordered = sorted(values)
    for q in (0.5, 0.95, 0.99):
        exact = ordered[math.ceil(q * len(values)) - 1]
        estimate = histogram.quantile(q)
        assert estimate is not None and abs(estimate - exact) / exact < 0.03
    assert LatencyHistogram().quantile(0.5) is None
    histogram.add(1e9)
    histogram.add(0.0)
    assert histogram.quantile(1.0) == 1e9 and histogram.quantile(0.0) == 0.0


def test_stats_snapshot_is_a_frozen_value() -> None:
    stats = DispatchStats(
        taken=3, completed=2, queued=1, scheduled=0, invalid=1, failed=0, ambiguous=0,
        not_sent=0, in_flight=1, requests=2, retries=1, rate_limited=0, rate=None,
        elapsed=2.0, latency_p50=0.1, latency_p95=0.2, latency_p99=0.3,
    )  # fmt: skip
    assert stats.throughput == 1.0
    assert stats.counts["queued"] == 1 and stats.counts["invalid"] == 1
    with pytest.raises(AttributeError):
        stats.queued = 5  # type: ignore[misc]


async def test_a_worker_cut_off_in_on_result_leaves_no_taken_input_without_a_result(
    sim_factory: Callable[..., SimulatorThread],
) -> None:
    # One worker reads a batch of inputs at once; cancelling it (drain timeout)
    # while its async on_result hook runs must not drop the inputs it had read.
    sim = sim_factory()
    hold = asyncio.Event()

    async def on_result(result: DispatchResult) -> None:
        if result.index == 0:
            await hold.wait()  # never set: the drain timeout cuts it off

    async with client_for(sim) as client:
        dispatcher = client.dispatch(list(requests(10)), concurrency=1, on_result=on_result)
        iterator = aiter(dispatcher)
        first = asyncio.ensure_future(anext(iterator))
        assert await wait_until(lambda: dispatcher.stats.completed >= 1)
        await dispatcher.aclose(drain_timeout=0.05)
        results = [await first] + [r async for r in iterator]
    assert dispatcher.stats.taken == 10
    assert sorted(r.index for r in results) == list(range(10))
    outcomes = [r.outcome for r in sorted(results, key=lambda r: r.index)]
    assert outcomes == ["queued"] + ["not_sent"] * 9
    assert sim.trigger_count == 1


async def test_opt_in_resend_after_an_ambiguous_attempt_reports_that_attempt(
    sim_factory: Callable[..., SimulatorThread],
) -> None:
    # Attempt 1 creates the call and drops the connection (ambiguous); the user
    # opted in to re-sending, and attempt 2 is refused with a 503. The row may
    # still have been placed by attempt 1: ambiguous, reported with that error.
    sim = sim_factory()
    sim.inject(Fault.reset(create=True), endpoint="trigger")
    sim.inject(Fault.status(503, headers={"Retry-After": "0"}), endpoint="trigger")
    policy = RetryPolicy(
        max_retries=1, backoff_base=0.01, backoff_max=0.1, retry_ambiguous_triggers=True
    )
    async with client_for(sim, retry_policy=policy) as client:
        results = [r async for r in client.dispatch(requests(1), concurrency=1)]
    [result] = results
    assert result.outcome == "ambiguous"
    assert isinstance(result.error, AmbiguousTriggerError)
    assert result.error.attempts == result.attempts == 2
    assert sim.calls_placed_to(number(0)) == 1
