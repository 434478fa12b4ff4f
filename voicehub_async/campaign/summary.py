"""What a campaign reports: a live :class:`CampaignProgress` while it runs and
a :class:`CampaignSummary` at the end.

Both are frozen values (snapshots), so a display can read them from another
task without locking, and a backend can store or serialise them as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs

from voicehub_async.models import TERMINAL_STATUSES

from .journal import (
    AMBIGUOUS,
    DUPLICATE,
    INVALID,
    LOST,
    NOT_SENT,
    PENDING,
    REDIAL,
    SENDING,
    SUPPRESSED,
    waiting_kind,
)

if TYPE_CHECKING:
    from voicehub_async.stats import DispatchStats

__all__ = ["EXIT_INCOMPLETE", "EXIT_OK", "CampaignProgress", "CampaignSummary", "placed_rate"]

EXIT_OK: Final = 0
#: Some rows are ambiguous, failed to send, were lost or are not final yet.
EXIT_INCOMPLETE: Final = 1

#: Outcomes that leave a row without a call outcome the user can rely on.
_TROUBLE: Final = frozenset({AMBIGUOUS, NOT_SENT, LOST, SENDING, PENDING, "timed_out"})
#: Rows that are an outcome without a call: reported, and the rest still went.
_SKIPPED: Final = frozenset({INVALID, DUPLICATE, SUPPRESSED})


def placed_rate(stats: DispatchStats) -> float:
    """Calls placed per second of dialing: the one rate figure a campaign
    shows, live and in its summary (triggers that placed nothing do not
    count: a campaign that cannot reach the service places 0 calls/s)."""
    return (stats.queued + stats.scheduled) / stats.elapsed if stats.elapsed > 0 else 0.0


@attrs.frozen
class CampaignProgress:
    """Where a running campaign is.

    ``total`` is an estimate of the rows in the file (None when unknown);
    ``processed`` rows have been dealt with by this run (sent, skipped as
    already done, or found invalid). ``sent`` counts calls placed (this run
    and earlier ones); ``queued`` and ``in_progress`` are calls waiting or
    under way now; ``completed`` ended completed and ``failed`` covers every
    other end (unanswered, busy, failed, cancelled, invalid, ambiguous, not
    sent, lost). ``skipped`` rows are duplicates or suppressed (never
    dialed). ``rate`` is calls placed per second by this run
    (:func:`placed_rate`), ``eta`` the seconds until every row is sent at
    that rate (None when unknown). ``redials`` attempts after a contact's
    first were made by this run; ``redials_waiting`` are due later, the next
    in ``next_redial`` seconds. ``phase``: ``starting``, ``dialing``,
    ``waiting`` (all sent, following calls and redials), ``stopping``,
    ``stopped`` (after :meth:`Campaign.stop`), ``done``. ``waiting`` says
    why nothing can be dialed right now (``cannot reach <host> (...)``),
    None otherwise. ``live`` is the campaign's calls that may be live now
    (placed and not ended, or ambiguous) and ``live_limit`` the live-call cap
    in force (None: none); ``live`` is None when the campaign does not count.
    """

    phase: str
    total: int | None
    processed: int
    sent: int
    queued: int
    in_progress: int
    completed: int
    failed: int
    invalid: int
    ambiguous: int
    retries: int
    rate: float
    eta: float | None
    elapsed: float
    skipped: int = 0
    redials: int = 0
    redials_waiting: int = 0
    next_redial: float | None = None
    waiting: str | None = None
    live: int | None = None
    live_limit: int | None = None


@attrs.frozen
class CampaignSummary:
    """The outcome of a campaign run.

    ``counts`` is rows per state over the whole journal (all runs), e.g.
    ``{"completed": 700, "busy": 98, "invalid": 2}``. Figures of this run:
    ``requests`` (trigger requests sent), ``retries``, ``rate_limited``
    (429 answers), ``throughput`` (triggers answered per second while
    dialing), trigger latency percentiles (seconds, retries included),
    queued-to-started percentiles, and ``wall_time``. ``resumed`` is True
    when the journal already existed; ``interrupted`` when the run was
    stopped before every row was dealt with. ``redials`` counts attempts
    after a contact's first (all runs); ``horizon_reached`` is True when
    following stopped at ``max_wait`` with calls or redials left for a
    later run (:attr:`later`, :attr:`live`); ``attempts`` is the per-attempt
    file, when one was asked for.
    """

    total: int
    counts: Mapping[str, int]
    requests: int
    retries: int
    rate_limited: int
    placed: int
    throughput: float
    latency_p50: float | None
    latency_p95: float | None
    latency_p99: float | None
    start_delay_p50: float | None
    start_delay_p95: float | None
    wall_time: float
    journal: Path | str
    results: Path | None
    resumed: bool
    interrupted: bool
    polled: bool
    journal_commits: int = 0
    redials: int = 0
    horizon_reached: bool = False
    attempts: Path | None = None

    def count(self, *states: str) -> int:
        """Rows in any of ``states``."""
        return sum(self.counts.get(state, 0) for state in states)

    @property
    def ambiguous(self) -> int:
        return self.count(AMBIGUOUS, SENDING)

    @property
    def invalid(self) -> int:
        return self.count(INVALID)

    @property
    def not_sent(self) -> int:
        return self.count(NOT_SENT)

    @property
    def duplicates(self) -> int:
        return self.count(DUPLICATE)

    @property
    def suppressed(self) -> int:
        return self.count(SUPPRESSED)

    @property
    def later(self) -> int:
        """Rows waiting for their time: scheduled calls and redials."""
        if not self.polled:
            return self.count(REDIAL)
        return sum(n for state, n in self.counts.items() if waiting_kind(state) == "later")

    @property
    def live(self) -> int:
        """Calls placed and not final when the run ended (when following them)."""
        if not self.polled:
            return 0
        return sum(n for state, n in self.counts.items() if waiting_kind(state) == "live")

    @property
    def unfinished(self) -> int:
        """Rows without a final outcome: never sent, or calls not final yet
        (when following them)."""
        final = TERMINAL_STATUSES | _SKIPPED | {AMBIGUOUS, NOT_SENT, LOST, "timed_out"}
        if not self.polled:
            final = final | {"queued", "scheduled", "started", "in-progress"}
        return self.total - self.count(*final)

    @property
    def ok(self) -> bool:
        """True when every row has a final outcome and none is ambiguous,
        unsent or lost (invalid, duplicate and suppressed rows are an
        outcome: they are reported, and the rest of the file still went)."""
        return self.unfinished == 0 and self.count(*_TROUBLE) == 0

    @property
    def exit_code(self) -> int:
        """0 when :attr:`ok`, else 1 (the command line's exit status)."""
        return EXIT_OK if self.ok else EXIT_INCOMPLETE

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the command line's ``--json`` output)."""
        return {
            "total": self.total,
            "counts": dict(sorted(self.counts.items())),
            "ok": self.ok,
            "exit_code": self.exit_code,
            "unfinished": self.unfinished,
            "ambiguous": self.ambiguous,
            "invalid": self.invalid,
            "not_sent": self.not_sent,
            "duplicates": self.duplicates,
            "suppressed": self.suppressed,
            "redials": self.redials,
            "later": self.later,
            "live": self.live,
            "horizon_reached": self.horizon_reached,
            "requests": self.requests,
            "retries": self.retries,
            "rate_limited": self.rate_limited,
            "placed": self.placed,
            "throughput": round(self.throughput, 3),
            "trigger_latency": {
                "p50": self.latency_p50,
                "p95": self.latency_p95,
                "p99": self.latency_p99,
            },
            "queued_to_started": {"p50": self.start_delay_p50, "p95": self.start_delay_p95},
            "wall_time": round(self.wall_time, 3),
            "journal": str(self.journal),
            "results": None if self.results is None else str(self.results),
            "attempts": None if self.attempts is None else str(self.attempts),
            "resumed": self.resumed,
            "interrupted": self.interrupted,
        }
