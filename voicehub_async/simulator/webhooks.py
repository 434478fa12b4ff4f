"""WebhookSender: the simulator's side of VoiceHub's webhooks.

Real VoiceHub deliveries repeat (retries, at-least-once delivery) and nothing
promises they arrive in order. A receiver is only tested properly against a
sender that does both, reproducibly: this one POSTs a call's status timeline
as ``CallStatusChanged`` events (plus ``RecordingsAvailable`` once a call
completed) with the shared secret, repeats a share of them (``repeat_rate``,
same ``eventId``) and swaps a share of neighbours (``reorder_rate``), all
drawn from one seeded generator. Like VoiceHub, it retries a delivery a few
times when the receiver does not answer 2xx.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

import aiohttp
import attrs

if TYPE_CHECKING:
    from .calls import SimulatedCall
    from .config import SimulatorConfig

__all__ = ["SECRET_HEADER", "SimulatorWebhooks", "WebhookDelivery", "WebhookSender"]

#: The header VoiceHub sends the shared secret in.
SECRET_HEADER: Final = "x-webhook-secret"

def _iso(when: datetime) -> str:
    """``when`` in UTC, ISO 8601 with milliseconds and ``Z``, as web APIs usually write it."""
    utc = when.astimezone(timezone.utc) if when.tzinfo else when.replace(tzinfo=timezone.utc)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


@attrs.frozen
class WebhookDelivery:
    """One POST the sender made (each retry is its own record).

    ``answered`` is the HTTP status (None when the connection failed);
    ``repeat`` marks a deliberate duplicate, ``reordered`` an event sent after
    one that happened later.
    """

    event_id: str
    event_type: str
    call_id: str
    status: str | None
    answered: int | None
    attempt: int
    repeat: bool = False
    reordered: bool = False

    @property
    def ok(self) -> bool:
        return self.answered is not None and 200 <= self.answered < 300


@attrs.frozen
class _Slot:
    event: Mapping[str, Any]
    at: float
    repeat: bool = False
    reordered: bool = False


class WebhookSender:
    """POSTs simulated VoiceHub webhook events to ``url`` with ``secret``.

    ``repeat_rate`` is the probability that an event is delivered a second
    time, later, with the same ``eventId``; ``reorder_rate`` the probability
    that an event swaps places with the next one; ``seed`` makes both, and the
    event ids, reproducible. A delivery answered other than 2xx, or failing to
    connect, is retried up to ``retries`` times ``retry_delay`` seconds apart.
    ``deliveries`` keeps a record of every POST (``record=False`` keeps only
    the counters ``sent`` and ``failed``).

    Use as ``async with WebhookSender(url, secret) as sender:``; a ``session``
    passed in is used and not closed.
    """

    def __init__(
        self,
        url: str,
        secret: str,
        *,
        repeat_rate: float = 0.0,
        reorder_rate: float = 0.0,
        seed: int | str | None = 0,
        retries: int = 2,
        retry_delay: float = 0.05,
        timeout: float = 10.0,
        session: aiohttp.ClientSession | None = None,
        record: bool = True,
    ) -> None:
        for name, rate in (("repeat_rate", repeat_rate), ("reorder_rate", reorder_rate)):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {rate!r}")
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self.url = url
        self._secret = secret
        self.repeat_rate = repeat_rate
        self.reorder_rate = reorder_rate
        self.retries = retries
        self.retry_delay = retry_delay
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._rng = random.Random(seed)
        self._session = session
        self._owns_session = session is None
        self.record = record
        self.deliveries: list[WebhookDelivery] = []
        self.sent = 0
        self.failed = 0

    def __repr__(self) -> str:
        return f"<WebhookSender url={self.url!r} secret=<redacted>>"

    async def __aenter__(self) -> WebhookSender:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the session the sender made (one passed in is left open)."""
        if self._owns_session and self._session is not None:
            session, self._session = self._session, None
            await session.close()

    # -- building events -------------------------------------------------------

    def new_event_id(self) -> str:
        """A fresh, seeded event id."""
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def call_events(
        self,
        call_id: str,
        timeline: Iterable[tuple[datetime, str]],
        *,
        agent_id: str | None = None,
        user_number: str | None = None,
        agent_number: str | None = None,
        recordings: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """The bodies VoiceHub would POST for a call, in the order they happen.

        ``timeline`` is ``(when, status)`` pairs; statuses are sent in lower
        case, as the webhook page spells them. A call that completed also gets
        a ``RecordingsAvailable`` event, listing ``recordings`` (default: the
        simulator's own ``/recordings/<call id>.wav``).
        """
        events: list[dict[str, Any]] = []
        for when, status in timeline:
            event: dict[str, Any] = {
                "eventType": "CallStatusChanged",
                "eventId": self.new_event_id(),
                "timestamp": _iso(when),
                "callId": call_id,
                "status": status.lower(),
            }
            for key, value in (
                ("agentId", agent_id), ("userNumber", user_number), ("agentNumber", agent_number)
            ):
                if value is not None:
                    event[key] = value
            events.append(event)
            if status.lower() == "completed":
                events.append(
                    {
                        "eventType": "RecordingsAvailable",
                        "eventId": self.new_event_id(),
                        "timestamp": _iso(when),
                        "callId": call_id,
                        "recordings": list(
                            recordings
                            if recordings is not None
                            else [f"/recordings/{call_id}.wav"]
                        ),
                    }
                )
        return events

    # -- sending -----------------------------------------------------------------

    def plan(
        self, events: Sequence[Mapping[str, Any]], at: Sequence[float] | None = None
    ) -> list[tuple[Mapping[str, Any], float, bool, bool]]:
        """The order events will go in: ``(event, at, repeat, reordered)``.

        Slot times stay where they were (``at`` are real seconds from the
        start, default all 0); a reordered event takes its successor's slot
        and the successor takes its own, so the later one arrives first.
        A repeat goes out at a later slot, chosen at random.
        """
        times = list(at) if at is not None else [0.0] * len(events)
        if len(times) != len(events):
            raise ValueError("at must give one time per event")
        rng = self._rng
        slots = [_Slot(event, t) for event, t in zip(events, times, strict=True)]
        i = 0
        while i < len(slots) - 1:
            if self.reorder_rate and rng.random() < self.reorder_rate:
                first, second = slots[i], slots[i + 1]
                slots[i] = _Slot(second.event, first.at)
                slots[i + 1] = _Slot(first.event, second.at, reordered=True)
                i += 2
            else:
                i += 1
        planned = list(slots)
        if self.repeat_rate:
            for slot in slots:
                if rng.random() < self.repeat_rate:
                    later = [s for s in planned if s.at >= slot.at and not s.repeat]
                    after = rng.choice(later)
                    index = planned.index(after) + 1
                    planned.insert(index, _Slot(slot.event, after.at, repeat=True))
        return [(s.event, s.at, s.repeat, s.reordered) for s in planned]

    async def send_events(
        self, events: Sequence[Mapping[str, Any]], *, at: Sequence[float] | None = None
    ) -> list[WebhookDelivery]:
        """Deliver ``events`` (as from :meth:`call_events`) following :meth:`plan`.

        With ``at`` (real seconds from now, one per event, ascending) each
        slot waits for its time, so a timeline plays out as it would live.
        Returns the final delivery of each POST.
        """
        loop = asyncio.get_running_loop()
        start = loop.time()
        results: list[WebhookDelivery] = []
        for event, when, repeat, reordered in self.plan(events, at):
            wait = start + when - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            results.append(await self.post(event, repeat=repeat, reordered=reordered))
        return results

    async def send_call(
        self,
        call_id: str,
        timeline: Iterable[tuple[datetime, str]],
        *,
        agent_id: str | None = None,
        user_number: str | None = None,
        agent_number: str | None = None,
        recordings: Sequence[str] | None = None,
        at: Sequence[float] | None = None,
    ) -> list[WebhookDelivery]:
        """:meth:`call_events` then :meth:`send_events`: a call's whole story.

        ``at`` (optional) gives the real second, from now, of each *status*;
        a recordings event goes with its completion.
        """
        timeline = list(timeline)
        events = self.call_events(
            call_id, timeline, agent_id=agent_id, user_number=user_number,
            agent_number=agent_number, recordings=recordings,
        )
        times: list[float] | None = None
        if at is not None:
            if len(at) != len(timeline):
                raise ValueError("at must give one time per status of the timeline")
            times = []
            for (_, status), t in zip(timeline, at, strict=True):
                times.append(t)
                if status.lower() == "completed":
                    times.append(t)
        return await self.send_events(events, at=times)

    async def post(
        self, event: Mapping[str, Any], *, repeat: bool = False, reordered: bool = False
    ) -> WebhookDelivery:
        """POST one event, retrying like VoiceHub until 2xx or out of retries."""
        session = self._session
        if session is None:
            session = self._session = aiohttp.ClientSession(timeout=self._timeout)
        headers = {SECRET_HEADER: self._secret}
        delivery: WebhookDelivery | None = None
        for attempt in range(1, self.retries + 2):
            answered: int | None
            try:
                async with session.post(self.url, json=dict(event), headers=headers) as response:
                    await response.read()
                    answered = response.status
            except (aiohttp.ClientError, asyncio.TimeoutError):
                answered = None
            delivery = WebhookDelivery(
                event_id=str(event.get("eventId")),
                event_type=str(event.get("eventType")),
                call_id=str(event.get("callId")),
                status=event.get("status"),
                answered=answered,
                attempt=attempt,
                repeat=repeat,
                reordered=reordered,
            )
            self.sent += 1
            if self.record:
                self.deliveries.append(delivery)
            if delivery.ok:
                return delivery
            if attempt <= self.retries:
                await asyncio.sleep(self.retry_delay)
        self.failed += 1
        assert delivery is not None
        return delivery


class SimulatorWebhooks:
    """Plays each simulated call's timeline to a webhook URL, live.

    The :class:`~voicehub_async.simulator.server.Simulator` makes one when its
    config has a ``webhook_url`` and tells it about every call it creates;
    each call then gets a task that sends its statuses as they happen, in real
    time (simulated offsets divided by ``time_scale``), with the configured
    repeats and reordering, stamped with the simulator's wall clock. The
    statuses sent follow the call's drawn timeline; a status pinned later with
    ``Simulator.set_status`` is not pushed. With a ManualClock the pushes
    still follow real time. Tasks exist only when webhooks are on, and are
    cancelled by :meth:`aclose` (the simulator's ``stop``).
    """

    def __init__(self, sender: WebhookSender, time_scale: float) -> None:
        self.sender = sender
        self.time_scale = time_scale
        self._tasks: set[asyncio.Task[Any]] = set()

    @classmethod
    def from_config(cls, config: SimulatorConfig) -> SimulatorWebhooks | None:
        """One for a :class:`~voicehub_async.simulator.config.SimulatorConfig`,
        or None when it has no ``webhook_url``."""
        if not config.webhook_url:
            return None
        sender = WebhookSender(
            config.webhook_url,
            config.webhook_secret or "",
            repeat_rate=config.webhook_repeat_rate,
            reorder_rate=config.webhook_reorder_rate,
            # Its own stream, like the simulator's ids, lifecycles and faults.
            seed=None if config.seed is None else f"{config.seed}:webhooks",
            record=config.record_triggers,
        )
        return cls(sender, config.time_scale)

    def call_created(self, call: SimulatedCall, wall_now: float) -> None:
        """Start pushing ``call``'s timeline (a SimulatedCall); ``wall_now`` is
        its creation time, Unix seconds."""
        offsets: list[float] = []
        timeline: list[tuple[datetime, str]] = []
        for offset, status in call.timeline():
            real = offset / self.time_scale
            offsets.append(real)
            timeline.append((datetime.fromtimestamp(wall_now + real, timezone.utc), status))
        task = asyncio.get_running_loop().create_task(
            self.sender.send_call(
                call.id,
                timeline,
                agent_id=call.agent_id,
                user_number=call.to,
                agent_number=call.from_number,
                at=offsets,
            )
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def pending(self) -> int:
        """Calls whose timeline is still being pushed."""
        return len(self._tasks)

    async def aclose(self) -> None:
        """Stop every push in progress and close the sender's session."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.sender.aclose()
