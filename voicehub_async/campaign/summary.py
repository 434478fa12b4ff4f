"""What a campaign reports: a live :class:`CampaignProgress` while it runs and
a :class:`CampaignSummary` at the end.

Both are frozen values (snapshots), so a display can read them from another
task without locking, and a backend can store or serialise them as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import attrs

from voicehub_async.models import TERMINAL_STATUSES

from .journal import AMBIGUOUS, INVALID, LOST, NOT_SENT, PENDING, SENDING

__all__ = ["EXIT_INCOMPLETE", "EXIT_OK", "CampaignProgress", "CampaignSummary"]

EXIT_OK: Final = 0
#: Some rows are ambiguous, failed to send, were lost or are not final yet.
EXIT_INCOMPLETE: Final = 1

#: Outcomes that leave a row without a call outcome the user can rely on.
_TROUBLE: Final = frozenset({AMBIGUOUS, NOT_SENT, LOST, SENDING, PENDING, "timed_out"})


@attrs.frozen
class CampaignProgress:
    """Where a running campaign is.

    ``total`` is an estimate of the rows in the file (None when unknown);
    ``processed`` rows have been dealt with by this run (sent, skipped as
    already done, or found invalid). ``sent`` counts calls placed (this run
    and earlier ones); ``queued`` and ``in_progress`` are calls waiting or
    under way now; ``completed`` ended completed and ``failed`` covers every
    other end (unanswered, busy, failed, cancelled, invalid, ambiguous, not
    sent, lost). ``rate`` is rows per second sent by this run, ``eta`` the
    seconds until every row is sent at that rate (None when unknown).
    ``phase``: ``starting``, ``dialing``, ``waiting`` (all sent, following
    calls), ``stopping``, ``done``. ``waiting`` says what dialing waits for
    right now (``cannot reach <host> (...)``, ``live-call cap: 5 of 5 calls
    live``), None when nothing holds it up.
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
    waiting: str | None = None


@attrs.frozen
class CampaignSummary:
    """The outcome of a campaign run.

    ``counts`` is rows per state over the whole journal (all runs), e.g.
    ``{"completed": 700, "busy": 98, "invalid": 2}``. Figures of this run:
    ``requests`` (trigger requests sent), ``retries``, ``rate_limited``
    (429 answers), ``throughput`` (calls placed per second while dialing:
    the rate the live display shows, :func:`~.progress.dial_rate`), trigger
    latency percentiles (seconds, retries included),
    queued-to-started percentiles, and ``wall_time``. ``resumed`` is True
    when the journal already existed; ``interrupted`` when the run was
    stopped before every row was dealt with.
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
    journal: Path
    results: Path | None
    resumed: bool
    interrupted: bool
    polled: bool
    journal_commits: int = 0

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
    def unfinished(self) -> int:
        """Rows without a final outcome: never sent, or calls not final yet
        (when following them)."""
        final = TERMINAL_STATUSES | {INVALID, AMBIGUOUS, NOT_SENT, LOST, "timed_out"}
        if not self.polled:
            final = final | {"queued", "scheduled", "started", "in-progress"}
        return self.total - self.count(*final)

    @property
    def ok(self) -> bool:
        """True when every row has a final outcome and none is ambiguous,
        unsent or lost (invalid rows are an outcome: they are reported, and
        the rest of the file still went)."""
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
            "resumed": self.resumed,
            "interrupted": self.interrupted,
        }
