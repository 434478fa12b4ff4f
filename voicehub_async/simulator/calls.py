"""The simulator's call model: a created call and the timeline it was drawn.

Kept apart from the server (which creates calls and answers reads) and from
the webhook sender (which plays a call's timeline to a URL), so that both
depend on this module and not on each other.
"""

from __future__ import annotations

import attrs

__all__ = ["ENDS_AFTER_QUEUE", "STATUSES", "SimulatedCall", "canonical_status"]

#: The statuses the simulator answers, capitalised like the trigger's answer.
STATUSES: tuple[str, ...] = (
    "Scheduled",
    "Queued",
    "Started",
    "In-Progress",
    "Completed",
    "Failed",
    "Unanswered",
    "Busy",
    "Cancelled",
)
_CANONICAL = {s.lower(): s for s in STATUSES}
#: Outcomes that end the call right after the queue, without ringing.
ENDS_AFTER_QUEUE = frozenset({"Busy", "Failed", "Cancelled"})


def canonical_status(status: str) -> str:
    """The capitalised spelling of a known status; an unknown one unchanged.

    Keeping unknown statuses as given lets a test feed a client a status the
    documentation does not list, which the client must tolerate.
    """
    return _CANONICAL.get(status.lower(), status)


@attrs.define(eq=False)
class SimulatedCall:
    """One created call: its identity and its pre-drawn timeline.

    Durations are simulated seconds. ``created_at`` is a reading of the
    simulator's monotonic clock. ``forced_status``, when set (by
    :meth:`Simulator.set_status`), overrides the timeline.
    """

    id: str
    to: str
    agent_id: str
    from_number: str | None
    created_at: float
    start_delay: float
    queue_delay: float
    ring_time: float
    talk_time: float
    outcome: str
    forced_status: str | None = None

    def status_at(self, elapsed: float) -> str:
        """The status ``elapsed`` simulated seconds after creation (ignoring
        ``forced_status``)."""
        t = elapsed - self.start_delay
        if t < 0:
            return "Scheduled"
        t -= self.queue_delay
        if t < 0:
            return "Queued"
        outcome = self.outcome
        if outcome in ENDS_AFTER_QUEUE:
            return outcome
        t -= self.ring_time
        if t < 0:
            return "Started"
        if outcome == "Unanswered":
            return outcome
        return "In-Progress" if t < self.talk_time else "Completed"

    def timeline(self) -> list[tuple[float, str]]:
        """``(offset, status)`` pairs, in simulated seconds after creation, at
        which each status begins (what the webhook sender plays)."""
        points: list[tuple[float, str]] = []
        t = 0.0
        if self.start_delay > 0:
            points.append((0.0, "Scheduled"))
            t = self.start_delay
        points.append((t, "Queued"))
        t += self.queue_delay
        if self.outcome in ENDS_AFTER_QUEUE:
            points.append((t, self.outcome))
            return points
        points.append((t, "Started"))
        t += self.ring_time
        if self.outcome == "Unanswered":
            points.append((t, self.outcome))
            return points
        points.append((t, "In-Progress"))
        points.append((t + self.talk_time, "Completed"))
        return points

    @property
    def ends_after(self) -> float:
        """Simulated seconds after creation at which the drawn timeline reaches
        its final status (``forced_status`` aside): the last offset of
        :meth:`timeline`, without building it."""
        end = self.start_delay + self.queue_delay
        if self.outcome in ENDS_AFTER_QUEUE:
            return end
        end += self.ring_time
        return end if self.outcome == "Unanswered" else end + self.talk_time
