"""The live counters behind :class:`~.summary.CampaignProgress`.

One mutable :class:`Counters` per run, changed by the runner as rows are
decided, triggers answered and calls end; :meth:`Campaign.progress` copies
it into a frozen snapshot. Each row is in exactly one display bucket at a
time (:func:`bucket`), so the buckets always add up to the rows processed.
"""

from __future__ import annotations

import attrs

from voicehub_async.models import CallStage, CallStatus

from .journal import AMBIGUOUS, DONE_STATES, DUPLICATE, INVALID, NOT_SENT, REDIAL, SUPPRESSED

__all__ = ["Counters", "bucket"]


def bucket(state: str) -> str:
    """Which progress counter a row in ``state`` belongs to.

    A row's own states (``duplicate``, ``invalid``, ``redial``...) first;
    a call's status by its :class:`~voicehub_async.models.CallStage`, the one
    status order of the SDK (a status the API does not document is live).
    """
    if state == "completed":
        return "completed"
    if state in (DUPLICATE, SUPPRESSED):
        return "skipped"
    if state in DONE_STATES or state in (NOT_SENT, "timed_out"):
        return "failed"
    if state == REDIAL:
        return "queued"
    stage = CallStatus(state).stage
    if stage is CallStage.ENDED:
        return "failed"
    if stage is CallStage.SCHEDULED or stage is CallStage.QUEUED:
        return "queued"
    return "in_progress"


@attrs.define
class Counters:
    """Rows per display bucket, plus the few totals the display shows."""

    processed: int = 0
    sent: int = 0
    queued: int = 0
    in_progress: int = 0
    completed: int = 0
    failed: int = 0
    skipped: int = 0
    invalid: int = 0
    ambiguous: int = 0
    redials: int = 0

    def add(self, name: str, n: int = 1) -> None:
        setattr(self, name, getattr(self, name) + n)

    def move(self, old: str, new: str) -> None:
        """A row changed bucket."""
        if old != new:
            self.add(old, -1)
            self.add(new)

    def count_done(self, state: str, has_call: bool) -> None:
        """A row found with a final outcome (recorded now or by an earlier run)."""
        self.processed += 1
        self.add(bucket(state))
        if state == INVALID:
            self.invalid += 1
        elif state == AMBIGUOUS:
            self.ambiguous += 1
        elif has_call:
            self.sent += 1
