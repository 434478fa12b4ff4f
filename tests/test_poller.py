"""StatusPoller: adaptive polling, push + poll, final outcomes, waiting, shutdown.

The first part drives the poller with a scripted in-memory reader (fast,
deterministic); the second runs it against the simulator over real sockets.
Timing assertions are lower bounds only ("not read before ..."): a loaded
machine can make reads late, never early.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any, cast

import attrs
import pytest

from voicehub_async import (
    Call,
    CallLostError,
    CallStatus,
    CallTimedOutError,
    CallTrackingError,
    InvalidRequestError,
    NotFoundError,
    ServerError,
    StatusChange,
    StatusPoller,
    VoiceHubClient,
    VoiceHubError,
    WaitTimeoutError,
)
from voicehub_async.poller import LOST, TIMED_OUT
from voicehub_async.simulator import Fault, LifecycleConfig, SimulatorConfig

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


# -- a scripted reader -----------------------------------------------------------------


class FakeReader:
    """Stands in for VoiceHubClient.get_call: statuses set by the test.

    ``statuses[call_id]`` is the answer (a status name) or an exception to
    raise; ids not in it answer 404. Every read is logged with its time.
    """

    def __init__(self, delay: float = 0.0) -> None:
        self.statuses: dict[str, str | Exception] = {}
        self.reads: list[tuple[str, float]] = []
        self.delay = delay
        self.in_flight = 0
        self.max_in_flight = 0
        self._read_seen = asyncio.Event()

    def count(self, call_id: str) -> int:
        return sum(1 for cid, _ in self.reads if cid == call_id)

    def times(self, call_id: str) -> list[float]:
        return [t for cid, t in self.reads if cid == call_id]

    async def reads_of(self, call_id: str, count: int) -> None:
        """Return once ``call_id`` was read ``count`` times (sent, maybe not answered)."""
        while self.count(call_id) < count:
            self._read_seen.clear()
            await asyncio.wait_for(self._read_seen.wait(), 10)

    async def get_call(self, call_id: str, *, timeout: Any = None, max_retries: Any = None) -> Call:
        self.reads.append((call_id, time.monotonic()))
        self.in_flight += 1
        self._read_seen.set()
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            answer = self.statuses.get(call_id)
            if answer is None:
                raise NotFoundError(404, "call not found", attempts=1)
            if isinstance(answer, Exception):
                raise answer
            return Call(id=call_id, status=CallStatus(answer), type="voip")
        finally:
            self.in_flight -= 1


def poller_for(reader: FakeReader, **options: Any) -> StatusPoller:
    defaults: dict[str, Any] = {"min_interval": 0.02, "max_interval": 0.08, "seed": 1}
    defaults.update(options)
    return StatusPoller(cast(VoiceHubClient, reader), **defaults)


def queued(call_id: str) -> Call:
    return Call(id=call_id, status=CallStatus.QUEUED, type="voip")


@attrs.frozen
class FakeEvent:
    """Shaped like the webhook CallStatusChanged event."""

    call_id: str
    status: str
    timestamp: datetime


# -- adaptive interval, scheduling ----------------------------------------------------------


async def test_interval_grows_while_nothing_changes_and_resets_on_change() -> None:
    reader = FakeReader()
    reader.statuses["a"] = "queued"
    async with poller_for(reader, min_interval=0.02, max_interval=0.16, jitter=0.0) as poller:
        poller.track(queued("a"))
        tracked = time.monotonic()
        # Six reads (five gaps) while nothing changes, counted rather than
        # slept for: on a loaded machine they take longer, never less.
        await reader.reads_of("a", 6)
        elapsed = time.monotonic() - tracked
        unchanged = reader.count("a")
        reader.statuses["a"] = "started"
        await reader.reads_of("a", unchanged + 3)
        times = reader.times("a")
        gaps = [b - a for a, b in itertools.pairwise(times)]
        # Lower bounds: 0.03, 0.045, 0.0675, ... then capped at 0.16.
        expected = 0.02
        for gap in gaps[:5]:
            expected = min(0.16, expected * 1.5)
            assert gap >= expected - 0.005
        # Far fewer reads than one per min_interval.
        assert unchanged < elapsed / 0.02 / 2
        reader.statuses["a"] = "completed"
        assert (await poller.wait("a")).status == CallStatus.COMPLETED


async def test_a_bare_id_is_read_at_once_and_its_first_status_is_a_change() -> None:
    reader = FakeReader()
    reader.statuses["x"] = "in-progress"
    async with poller_for(reader) as poller:
        poller.track("x")
        stream = poller.changes()
        first = await stream.__anext__()
        await stream.aclose()
    assert (first.call_id, first.old, first.new, first.source) == (
        "x",
        None,
        CallStatus.IN_PROGRESS,
        "poll",
    )
    assert first.call is not None and first.call.status == CallStatus.IN_PROGRESS
    assert first.at.tzinfo is not None


async def test_a_scheduled_call_is_not_read_before_its_time() -> None:
    reader = FakeReader()
    reader.statuses["s"] = "scheduled"
    async with poller_for(reader, scheduled_lead=0.05) as poller:
        start = time.monotonic()
        poller.track(
            Call(id="s", status=CallStatus.SCHEDULED),
            scheduled_at=datetime.now(timezone.utc) + timedelta(seconds=0.4),
        )
        # Not "no read after 0.25 s": a loaded machine may wake the test
        # late, after a read that came on time. The first read's time says it.
        await reader.reads_of("s", 1)
        assert reader.times("s")[0] - start >= 0.4 - 0.05 - 0.01
        reader.statuses["s"] = "busy"
        assert (await poller.wait("s")).status == CallStatus.BUSY


async def test_concurrency_bounds_the_reads_in_flight() -> None:
    reader = FakeReader(delay=0.02)
    ids = [f"c{i}" for i in range(60)]
    for call_id in ids:
        reader.statuses[call_id] = "completed"
    async with poller_for(reader, concurrency=7) as poller:
        for call_id in ids:
            poller.track(call_id)
        finals = await poller.wait_all()
    assert reader.max_in_flight == 7
    assert sorted(finals) == sorted(ids)
    assert all(change.new == CallStatus.COMPLETED for change in finals.values())


# -- final outcomes -------------------------------------------------------------------------


async def test_repeated_404_ends_as_lost_after_max_not_found_reads() -> None:
    reader = FakeReader()
    async with poller_for(reader, max_not_found=4) as poller:
        poller.track("ghost")
        changes = [change async for change in poller.changes()]
        with pytest.raises(CallLostError) as caught:
            await poller.wait("ghost")
    assert reader.count("ghost") == 4
    assert [(c.old, c.new, c.source) for c in changes] == [(None, LOST, "poller")]
    assert changes[0].is_lost and changes[0].is_final and not changes[0].new.is_terminal
    assert caught.value.call_id == "ghost" and caught.value.change == changes[0]
    assert isinstance(caught.value, VoiceHubError)
    assert poller.stats.lost == 1 and poller.stats.not_found == 4


async def test_a_404_between_answers_does_not_make_a_call_lost() -> None:
    reader = FakeReader()
    reader.statuses["a"] = "queued"
    async with poller_for(reader, max_not_found=2) as poller:
        poller.track(queued("a"))
        for _ in range(3):  # one 404, then an answer again: the count restarts
            del reader.statuses["a"]
            await reader.reads_of("a", reader.count("a") + 1)
            reader.statuses["a"] = "queued"
            await reader.reads_of("a", reader.count("a") + 1)
        assert "a" in poller
        reader.statuses["a"] = "completed"
        assert (await poller.wait("a")).status == CallStatus.COMPLETED


async def test_read_errors_back_off_and_keep_tracking(caplog: pytest.LogCaptureFixture) -> None:
    reader = FakeReader()
    reader.statuses["a"] = ServerError(500, "boom", attempts=4)
    async with poller_for(reader, min_interval=0.01, max_interval=0.2, jitter=0.0) as poller:
        poller.track(queued("a"))
        await reader.reads_of("a", 4)
        times = reader.times("a")
        # The interval doubles after each failure: 0.02, 0.04, ...
        assert times[2] - times[1] >= 0.04 - 0.005
        assert times[3] - times[2] >= 0.08 - 0.005
        assert "a" in poller
        reader.statuses["a"] = "failed"
        assert (await poller.wait("a")).status == CallStatus.FAILED
    stats = poller.stats
    assert stats.read_errors >= 4 and stats.requests >= 16  # attempts are counted
    assert "reading the status of call a failed" in caplog.text


async def test_deadline_ends_as_timed_out_and_wait_raises() -> None:
    reader = FakeReader()
    reader.statuses["slow"] = "in-progress"
    async with poller_for(reader) as poller:
        poller.track(queued("slow"), deadline=datetime.now(timezone.utc) + timedelta(seconds=0.2))
        with pytest.raises(CallTimedOutError) as caught:
            await poller.wait("slow")
        finals = await poller.wait_all()
    change = caught.value.change
    assert change is not None and change.is_timed_out and change.is_final
    assert change.old == CallStatus.IN_PROGRESS and change.new == TIMED_OUT
    assert caught.value.last_call is not None
    assert caught.value.last_call.status == CallStatus.IN_PROGRESS
    assert "may still be in progress" in str(caught.value)
    assert finals["slow"] == change


async def test_a_deadline_in_the_past_times_out_without_a_read() -> None:
    reader = FakeReader()
    async with poller_for(reader) as poller:
        poller.track("late", deadline=timedelta(seconds=-1))
        finals = await poller.wait_all()
    assert finals["late"].new == TIMED_OUT
    assert reader.count("late") == 0


async def test_tracking_a_final_call_reports_it_at_once() -> None:
    reader = FakeReader()
    async with poller_for(reader) as poller:
        poller.track(Call(id="done", status=CallStatus("Busy")))
        assert "done" not in poller
        changes = [change async for change in poller.changes()]
        assert (await poller.wait("done")).status == CallStatus.BUSY
    assert [(c.old, c.new, c.source) for c in changes] == [(None, CallStatus.BUSY, "poller")]
    assert reader.reads == []


# -- push + poll --------------------------------------------------------------------------


async def test_ingest_reports_changes_once_and_ends_tracking_without_reads() -> None:
    reader = FakeReader()
    reader.statuses["a"] = "queued"
    async with poller_for(reader, push_interval=10.0) as poller:
        poller.track(queued("a"))
        at = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)
        first = poller.ingest(FakeEvent("a", "started", at))
        assert first is not None and first.source == "ingest" and first.at == at
        assert poller.ingest("a", "Started") is None  # the same status is not a change
        assert poller.ingest("a", CallStatus.QUEUED) is None  # late delivery: older
        await asyncio.sleep(0.2)  # next read moved 10 s away
        assert reader.count("a") == 0
        last = poller.ingest("a", "completed")
        assert last is not None and last.is_final
        assert poller.ingest("a", "completed") is None  # no longer tracked
        assert poller.ingest("never-tracked", "completed") is None
        changes = [change async for change in poller.changes()]
        call = await poller.wait("a")
    assert reader.count("a") == 0
    assert [(c.old, c.new) for c in changes] == [
        (CallStatus.QUEUED, CallStatus.STARTED),
        (CallStatus.STARTED, CallStatus.COMPLETED),
    ]
    assert call.status == CallStatus.COMPLETED and call.type == "voip"


async def test_a_read_answered_before_an_ingest_does_not_move_a_call_back() -> None:
    reader = FakeReader(delay=0.1)
    reader.statuses["a"] = "queued"
    async with poller_for(reader) as poller:
        poller.track("a")
        await reader.reads_of("a", 1)
        poller.ingest("a", "in-progress")  # while the read is in flight
        await asyncio.sleep(0.15)  # the read answers "queued": stale
        reader.statuses["a"] = "completed"
        await poller.wait("a")
        changes = [change async for change in poller.changes()]
    assert [c.new.name for c in changes] == ["in-progress", "completed"]


async def test_ingest_arguments_are_checked() -> None:
    async with poller_for(FakeReader()) as poller:
        poller.track(queued("a"))
        with pytest.raises(TypeError):
            poller.ingest("a")
        with pytest.raises(TypeError):
            poller.ingest(FakeEvent("a", "started", datetime.now(timezone.utc)), "started")
        with pytest.raises(InvalidRequestError):
            poller.ingest("a", "started", at=datetime(2030, 1, 1))


async def test_heap_stays_small_under_many_reschedules() -> None:
    async with poller_for(FakeReader(), push_interval=60.0) as poller:
        for i in range(100):
            poller.track(queued(f"c{i}"))
        for _ in range(200):
            for i in range(100):
                poller.ingest(f"c{i}", "queued")  # reschedules, no change
        assert len(poller._heap) <= 2 * 100 + 1024 + 1


# -- the changes stream and backpressure ---------------------------------------------------------


async def test_a_slow_consumer_pauses_reads_and_loses_nothing() -> None:
    reader = FakeReader()
    ids = [f"c{i}" for i in range(30)]
    for call_id in ids:
        reader.statuses[call_id] = "completed"
    async with poller_for(reader, max_buffered_changes=5, concurrency=2) as poller:
        for call_id in ids:
            poller.track(call_id)
        received: list[StatusChange] = []
        async for change in poller.changes():
            received.append(change)
            if len(received) == 1:
                await asyncio.sleep(0.2)  # slow: the buffer fills up meanwhile
                # Polling stopped at the bound (plus the reads in flight).
                assert poller.stats.buffered <= 5 + 2
                assert len(reader.reads) <= 1 + 5 + 2
    assert sorted(c.call_id for c in received) == sorted(ids)
    assert all(c.is_final for c in received)


async def test_without_a_consumer_changes_are_kept_for_a_late_one() -> None:
    reader = FakeReader()
    for i in range(20):
        reader.statuses[f"c{i}"] = "completed"
    async with poller_for(reader, max_buffered_changes=3) as poller:
        for i in range(20):
            poller.track(f"c{i}")
        await poller.wait_all()  # nobody iterates: no backpressure, no deadlock
        received = [change async for change in poller.changes()]
    assert len(received) == 20


async def test_stream_changes_false_buffers_nothing() -> None:
    reader = FakeReader()
    reader.statuses["a"] = "completed"
    async with poller_for(reader, stream_changes=False) as poller:
        poller.track("a")
        await poller.wait("a")
        assert poller.stats.buffered == 0
        with pytest.raises(RuntimeError, match="stream_changes"):
            poller.changes()


async def test_changes_until_closed() -> None:
    reader = FakeReader()
    reader.statuses["a"] = "completed"
    async with poller_for(reader) as poller:

        async def consume() -> list[StatusChange]:
            return [change async for change in poller.changes(until_idle=False)]

        consumer = asyncio.create_task(consume())
        await asyncio.sleep(0.05)  # nothing tracked yet: the stream waits
        poller.track("a")
        await poller.wait("a")
        assert not consumer.done()
    assert [c.new for c in await consumer] == [CallStatus.COMPLETED]


# -- waiting and shutdown -----------------------------------------------------------------------


async def test_wait_timeout_leaves_the_call_tracked() -> None:
    reader = FakeReader()
    reader.statuses["a"] = "queued"
    async with poller_for(reader) as poller:
        poller.track(queued("a"))
        with pytest.raises(WaitTimeoutError) as caught:
            await poller.wait("a", timeout=0.1)
        assert isinstance(caught.value, TimeoutError)
        with pytest.raises(WaitTimeoutError):
            await poller.wait_all(timeout=0.05)
        assert "a" in poller and poller._waiters.get("a", []) == []
        reader.statuses["a"] = "unanswered"
        assert (await poller.wait("a", timeout=10)).status == CallStatus.UNANSWERED
        # A finished call still answers later, until forgotten.
        assert (await poller.wait("a")).status == CallStatus.UNANSWERED
        assert poller.forget("a") is not None
        with pytest.raises(KeyError):
            await poller.wait("a")


async def test_leaving_the_context_leaves_nothing_running() -> None:
    reader = FakeReader(delay=5.0)  # reads hang: they must be cancelled
    before = asyncio.all_tasks()
    poller = poller_for(reader, concurrency=5)
    async with poller:
        for i in range(20):
            poller.track(f"c{i}")
        waiter = asyncio.create_task(poller.wait("c0"))
        for i in range(5):
            await reader.reads_of(f"c{i}", 1)
        assert reader.in_flight == 5
    assert poller.closed
    with pytest.raises(CallTrackingError, match="closed"):
        await waiter
    assert asyncio.all_tasks() == before
    assert reader.in_flight == 0
    with pytest.raises(RuntimeError):
        poller.track("late")


async def test_arguments_are_checked() -> None:
    reader = cast(VoiceHubClient, FakeReader())
    for bad in (
        {"concurrency": 0},
        {"min_interval": 0},
        {"min_interval": 5, "max_interval": 1},
        {"growth": 0.5},
        {"jitter": 1.0},
        {"max_not_found": 0},
        {"max_buffered_changes": 0},
    ):
        with pytest.raises(ValueError):
            StatusPoller(reader, **bad)
    poller = StatusPoller(reader)
    with pytest.raises(InvalidRequestError, match="scheduled_at"):
        poller.track("a", scheduled_at=datetime(2030, 1, 1))
    with pytest.raises(InvalidRequestError, match="deadline"):
        poller.track("a", deadline=datetime(2030, 1, 1))
    with pytest.raises(InvalidRequestError, match="call_id"):
        poller.track("")
    poller.track("a")
    with pytest.raises(RuntimeError, match="start"):
        await poller.wait("a")


# -- against the simulator, over real sockets ------------------------------------------------------


TIME_SCALE = 120.0
FAST_LIFECYCLE = LifecycleConfig(queue_delay=(1, 4), ring_time=(3, 15), talk_time=(5, 60))


class ReadLog:
    """Wraps a client's get_call to log the time of every read, per call id."""

    def __init__(self, client: VoiceHubClient) -> None:
        self.times: dict[str, list[float]] = defaultdict(list)
        #: Reads answered per call id (a read is logged in ``times`` when sent).
        self.answered: Counter[str] = Counter()
        read = client.get_call

        async def logged(call_id: str, **kwargs: Any) -> Call:
            self.times[call_id].append(time.monotonic())
            call = await read(call_id, **kwargs)
            self.answered[call_id] += 1
            return call

        client.get_call = logged  # type: ignore[method-assign]

    def total(self) -> int:
        return sum(len(t) for t in self.times.values())


async def collect(poller: StatusPoller, timeout: float = 30.0) -> list[StatusChange]:
    """Every change until the poller is idle (bounded, so a bug fails instead of hanging)."""

    async def run() -> list[StatusChange]:
        return [change async for change in poller.changes()]

    return await asyncio.wait_for(run(), timeout)


def _offset_to_second(second: float) -> float:
    """A wall-clock offset making the simulator's clock read ``second`` past a minute now."""
    return (second - time.time() % 60) % 60


@pytest.fixture
def sim_wall() -> Iterator[Callable[[], float]]:
    offset = _offset_to_second(10.0)
    yield lambda: time.time() + offset


async def test_hundreds_of_calls_to_their_final_status(
    voicehub_simulator_factory: Any, sim_wall: Callable[[], float]
) -> None:
    sim = voicehub_simulator_factory(
        SimulatorConfig(time_scale=TIME_SCALE, lifecycle=FAST_LIFECYCLE, seed=7),
        wall_clock=sim_wall,
    )
    # The simulator's next minute, ~50 simulated seconds (~0.4 real s) away.
    minute = (sim_wall() // 60 + 1) * 60
    scheduled_for = datetime.fromtimestamp(minute, timezone.utc)
    lead = 0.02
    async with VoiceHubClient(sim.api_key, base_url=sim.base_url) as client:
        log = ReadLog(client)
        sem = asyncio.Semaphore(50)

        async def trigger(i: int) -> Call:
            async with sem:
                return await client.trigger_call(
                    f"+1415555{i:04d}",
                    "agent-1",
                    scheduled_at=scheduled_for if i % 5 == 0 else None,
                )

        calls = await asyncio.gather(*(trigger(i) for i in range(250)))
        scheduled = {c.id for i, c in enumerate(calls) if i % 5 == 0}
        assert all(c.status == CallStatus.SCHEDULED for c in calls if c.id in scheduled)
        pinned = {c.id for c in calls[1:50:5]}  # never finish: they hit their deadline
        for call_id in pinned:
            sim.set_status(call_id, "In-Progress")
        ghosts = {str(uuid.uuid4()) for _ in range(30)}

        async with StatusPoller(
            client,
            concurrency=30,
            min_interval=0.05,
            max_interval=0.3,
            scheduled_lead=lead,
            max_not_found=3,
        ) as poller:
            starts: dict[str, float] = {}
            for call in calls:
                if call.id in scheduled:
                    # The simulator compresses the wait until scheduledAt like
                    # everything else; tell the poller the real start time.
                    simulated = sim.calls[call.id]
                    start = simulated.created_at + simulated.start_delay / TIME_SCALE
                    starts[call.id] = start
                    at = datetime.fromtimestamp(
                        time.time() + start - time.monotonic(), timezone.utc
                    )
                    poller.track(call, scheduled_at=at)
                elif call.id in pinned:
                    poller.track(call, deadline=timedelta(seconds=1.0))
                else:
                    poller.track(call)
            for ghost in ghosts:
                poller.track(ghost)
            changes = await collect(poller)
            stats = poller.stats

    by_call: dict[str, list[StatusChange]] = defaultdict(list)
    for change in changes:
        by_call[change.call_id].append(change)
    assert len(by_call) == 280
    for history in by_call.values():
        # Exactly one final change, last; each change starts where the last ended.
        assert [c.is_final for c in history].count(True) == 1 and history[-1].is_final
        for before, after in itertools.pairwise(history):
            assert after.old == before.new and after.new != after.old
    finals = {call_id: history[-1] for call_id, history in by_call.items()}
    assert {cid for cid, c in finals.items() if c.is_lost} == ghosts
    assert {cid for cid, c in finals.items() if c.is_timed_out} == pinned
    for call in calls:
        if call.id not in pinned:
            final = finals[call.id]
            assert final.new.is_terminal
            assert final.new == CallStatus(sim.status_of(call.id))
    # A ghost costs exactly max_not_found reads.
    assert all(len(log.times[g]) == 3 for g in ghosts)
    # Scheduled calls were never read before shortly ahead of their start.
    assert scheduled
    for call_id in scheduled:
        # (Slack: each side turns a monotonic time into a wall-clock one and
        # back, two clock readings apart; a thread switch between them shifts it.)
        assert log.times[call_id] and min(log.times[call_id]) >= starts[call_id] - lead - 0.03
    # Every read reached the simulator once (no faults, so no retries).
    assert sim.request_count["status"] == log.total() == stats.reads == stats.requests
    assert stats.lost == 30 and stats.timed_out == len(pinned) and stats.active == 0


async def test_ingest_skips_polls_on_the_simulator(voicehub_simulator_factory: Any) -> None:
    sim = voicehub_simulator_factory(SimulatorConfig(time_scale=TIME_SCALE, seed=3))
    async with VoiceHubClient(sim.api_key, base_url=sim.base_url) as client:
        log = ReadLog(client)
        calls = [await client.trigger_call(f"+1415555{i:04d}", "agent-1") for i in range(40)]
        for call in calls:
            sim.set_status(call.id, "In-Progress")  # hold them until the test says
        pushed, polled = calls[:20], calls[20:]
        async with StatusPoller(
            client, min_interval=0.05, max_interval=0.2, push_interval=30.0
        ) as poller:
            for call in calls:
                poller.track(call)
            for call in pushed:  # a webhook said so before the first read
                poller.ingest(call.id, "in-progress")
            await asyncio.sleep(0.5)
            # A loaded machine may have polled less in that time: wait for two
            # reads of each polled call (counted, bounded), then end the calls.
            # Answered reads: one sent but not yet answered could see the end.
            for _ in range(1000):
                if all(log.answered[c.id] >= 2 for c in polled):
                    break
                await asyncio.sleep(0.01)
            for call in calls:
                sim.set_status(call.id, "Completed")
            for call in pushed:
                poller.ingest(call.id, "completed")
            finals = await poller.wait_all(timeout=30)
            changes = await collect(poller)
    assert all(finals[c.id].new == CallStatus.COMPLETED for c in calls)
    assert all(finals[c.id].source == "ingest" for c in pushed)
    assert all(finals[c.id].source == "poll" for c in polled)
    assert sum(len(log.times[c.id]) for c in pushed) == 0
    assert all(len(log.times[c.id]) >= 3 for c in polled)
    assert sim.request_count["status"] == log.total()
    # Each call: queued -> in-progress -> completed, whichever way it was learned.
    assert Counter(c.call_id for c in changes) == {c.id: 2 for c in calls}


async def test_wait_and_wait_all_on_the_simulator(voicehub_simulator: Any) -> None:
    sim = voicehub_simulator  # time_scale 60 by default
    async with VoiceHubClient(sim.api_key, base_url=sim.base_url) as client:
        calls = [await client.trigger_call(f"+1415555{i:04d}", "agent-1") for i in range(5)]
        for call in calls:
            sim.set_outcome(call.id, "busy")  # ends right after the queue (1-4 s simulated)
        async with StatusPoller(
            client, min_interval=0.02, max_interval=0.1, stream_changes=False
        ) as poller:
            for call in calls:
                poller.track(call)
            first = await poller.wait(calls[0].id, timeout=10)
            finals = await poller.wait_all(timeout=10)
    assert first.status == CallStatus.BUSY
    assert {cid: c.new for cid, c in finals.items()} == {c.id: CallStatus.BUSY for c in calls}


async def test_trigger_and_wait(voicehub_simulator_factory: Any) -> None:
    sim = voicehub_simulator_factory(
        SimulatorConfig(time_scale=TIME_SCALE, lifecycle=FAST_LIFECYCLE, seed=5)
    )
    async with VoiceHubClient(sim.api_key, base_url=sim.base_url) as client:
        call = await client.trigger_and_wait(
            "+14155550100", "agent-1", min_interval=0.05, max_interval=0.2, timeout=30
        )
        assert call.is_terminal
        assert call.status == CallStatus(sim.status_of(call.id))
        assert sim.trigger_count == 1

    slow = voicehub_simulator_factory(
        SimulatorConfig(lifecycle=LifecycleConfig(talk_time=(10_000, 10_000)), seed=5)
    )
    async with VoiceHubClient(slow.api_key, base_url=slow.base_url) as client:
        with pytest.raises(CallTimedOutError) as caught:
            await client.trigger_and_wait(
                "+14155550100", "agent-1", min_interval=0.05, max_interval=0.2, timeout=0.5
            )
    assert caught.value.call_id in slow.calls  # the call exists: say which one
    assert slow.trigger_count == 1
    assert caught.value.call_id in str(caught.value)


async def test_trigger_and_wait_refuses_bad_input_before_sending(
    voicehub_simulator: Any,
) -> None:
    async with VoiceHubClient(
        voicehub_simulator.api_key, base_url=voicehub_simulator.base_url
    ) as client:
        with pytest.raises(InvalidRequestError):
            await client.trigger_and_wait("not a number", "agent-1")
    assert voicehub_simulator.trigger_count == 0


async def test_server_errors_back_off_and_tracking_goes_on(voicehub_simulator_factory: Any) -> None:
    sim = voicehub_simulator_factory(
        SimulatorConfig(time_scale=TIME_SCALE, lifecycle=FAST_LIFECYCLE, seed=9)
    )
    async with VoiceHubClient(sim.api_key, base_url=sim.base_url, max_retries=0) as client:
        call = await client.trigger_call("+14155550100", "agent-1")
        sim.inject(Fault.status(500), endpoint="status", times=2)
        async with StatusPoller(client, min_interval=0.02, max_interval=0.2) as poller:
            poller.track(call)
            final = await poller.wait(call.id, timeout=30)
            stats = poller.stats
    assert final.is_terminal
    assert stats.read_errors == 2 and stats.lost == 0


async def test_leaving_the_context_cancels_reads_over_sockets(
    voicehub_simulator_factory: Any,
) -> None:
    sim = voicehub_simulator_factory(SimulatorConfig(time_scale=TIME_SCALE, seed=11))
    async with VoiceHubClient(sim.api_key, base_url=sim.base_url) as client:
        calls = [await client.trigger_call(f"+1415555{i:04d}", "agent-1") for i in range(3)]
        # Held far longer than the bound below (stopping the simulator cuts it short).
        sim.inject(Fault.delay(120.0, create=False), endpoint="status", times=None)
        before = asyncio.all_tasks()
        started = time.monotonic()
        async with StatusPoller(client, min_interval=0.01) as poller:
            for call in calls:
                poller.track(call.id)
            for _ in range(1000):  # until the server holds the three reads (10 s at most)
                if sim.request_count["status"] >= 3:
                    break
                await asyncio.sleep(0.01)
            assert poller.stats.reads == 3
        assert asyncio.all_tasks() == before
        assert time.monotonic() - started < 60.0  # not waiting for the answers
        sim.clear_faults()
        # The client is still usable: the cancelled reads did not break it.
        assert (await client.get_call(calls[0].id)).id == calls[0].id


async def test_ingest_takes_a_webhook_event() -> None:
    from voicehub_async.webhooks import CallStatusChanged

    reader = FakeReader()
    async with poller_for(reader) as poller:
        poller.track(queued("a"))
        when = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)
        change = poller.ingest(
            CallStatusChanged(call_id="a", status=CallStatus("Completed"), timestamp=when)
        )
        assert change is not None and change.at == when and change.is_final
        assert (await poller.wait("a")).status == CallStatus.COMPLETED
    assert reader.reads == []
