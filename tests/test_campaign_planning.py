"""The campaign's decisions, row by row, as pure code: no simulator, no journal."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from voicehub_async.campaign.contacts import ContactRow
from voicehub_async.campaign.hours import CallingHours
from voicehub_async.campaign.journal import JournalRow
from voicehub_async.campaign.planning import (
    Dial,
    Done,
    Follow,
    Invalid,
    LeftSending,
    PlanOptions,
    Redial,
    SeenNumbers,
    Skip,
    plan_row,
)
from voicehub_async.campaign.redial import RedialPolicy

NOW = datetime(2030, 6, 3, 12, 0, tzinfo=timezone.utc)  # a Monday
OPTIONS = PlanOptions(agent_id="agent-1", region="US")


class Claims:
    def __init__(self) -> None:
        self.first: dict[str, int] = {}

    def claim(self, number: str, row: int) -> int | None:
        first = self.first.setdefault(number, row)
        return None if first == row else first


def contact(row: int, to: str = "+14155550100", **fields: Any) -> ContactRow:
    return ContactRow(row, f"h{row}", {"to": to, **fields})


def journal_row(row: int, state: str, **values: Any) -> JournalRow:
    base: dict[str, Any] = {
        "row": row,
        "input_hash": f"h{row}",
        "number": "+14155550100",
        "state": state,
        "call_id": None,
        "status": None,
        "attempts": 1,
        "error": None,
        "recording_url": None,
        "scheduled_at": None,
        "dials": 1,
    }
    base.update(values)
    return JournalRow(**base)


def test_a_new_row_is_dialed_validated_in_e164() -> None:
    decision = plan_row(contact(1, "(415) 555-0100"), None, OPTIONS, NOW, Claims())
    assert isinstance(decision, Dial) and decision.attempt == 1
    assert decision.request.to == "+14155550100"


def test_a_later_row_with_the_same_number_is_a_duplicate_of_the_first() -> None:
    claims = Claims()
    plan_row(contact(1, "(415) 555-0100"), None, OPTIONS, NOW, claims)
    decision = plan_row(contact(7, "+1 415-555-0100"), None, OPTIONS, NOW, claims)
    assert decision == Skip(
        "duplicate", "+14155550100", 1, "same number as row 1: dialed once per campaign"
    )
    allowed = PlanOptions(agent_id="agent-1", region="US", allow_duplicates=True)
    assert isinstance(plan_row(contact(8), None, allowed, NOW, claims), Dial)


def test_rows_done_by_an_earlier_run_still_claim_their_number() -> None:
    claims = Claims()
    done = plan_row(contact(1), journal_row(1, "completed", call_id="c1"), OPTIONS, NOW, claims)
    assert done == Done("completed", "c1", wants_recording=True)
    later = plan_row(contact(2), None, OPTIONS, NOW, claims)
    assert isinstance(later, Skip) and later.duplicate_of == 1


def test_a_suppressed_number_is_skipped_before_it_can_claim() -> None:
    claims = Claims()
    options = PlanOptions(agent_id="agent-1", suppressed=frozenset({"+14155550100"}))
    assert plan_row(contact(1), None, options, NOW, claims) == Skip(
        "suppressed", "+14155550100", note="on the do-not-call list"
    )
    assert claims.first == {}


def test_invalid_rows_name_the_field() -> None:
    decision = plan_row(contact(3, "12"), None, OPTIONS, NOW, Claims())
    assert isinstance(decision, Invalid) and decision.error.field == "to"
    assert decision.number == "12"


def test_a_row_left_sending_is_ambiguous_unless_asked() -> None:
    previous = journal_row(4, "sending", dials=2)
    assert plan_row(contact(4), previous, OPTIONS, NOW, Claims()) == LeftSending(2)
    redial = PlanOptions(agent_id="agent-1", redial_ambiguous=True)
    decision = plan_row(contact(4), previous, redial, NOW, Claims())
    assert isinstance(decision, Dial) and decision.attempt == 3


def test_a_placed_call_is_followed_and_a_refused_one_sent_again_as_the_same_attempt() -> None:
    live = journal_row(5, "queued", call_id="c5", scheduled_at="2030-06-04T09:00")
    decision = plan_row(contact(5), live, OPTIONS, NOW, Claims())
    assert isinstance(decision, Follow) and decision.call_id == "c5"
    assert decision.scheduled_at == datetime(2030, 6, 4, 9, 0, tzinfo=timezone.utc)
    refused = journal_row(6, "not_sent", dials=2)
    again = plan_row(contact(6), refused, OPTIONS, NOW, Claims())
    assert isinstance(again, Dial) and again.attempt == 2
    never = journal_row(7, "pending", dials=0)
    first = plan_row(contact(7), never, OPTIONS, NOW, Claims())
    assert isinstance(first, Dial) and first.attempt == 1


def test_a_redial_under_way_keeps_its_due_time_and_attempt() -> None:
    due = (NOW + timedelta(minutes=30)).timestamp()
    previous = journal_row(8, "redial", dials=2, redial_at=due, status="Busy")
    options = PlanOptions(agent_id="agent-1", redial=RedialPolicy())
    decision = plan_row(
        contact(8, scheduled_at="2030-06-03T12:30Z"), previous, options, NOW, Claims()
    )
    assert isinstance(decision, Redial)
    assert decision.due == due and decision.attempt == 3
    assert decision.request.scheduled_at is None  # a redial goes when it is due
    # Put on the do-not-call list since: never dialed again.
    listed = PlanOptions(agent_id="agent-1", suppressed=frozenset({"+14155550100"}))
    assert isinstance(plan_row(contact(8), previous, listed, NOW, Claims()), Skip)


def test_an_explicit_time_moved_by_the_calling_days_is_noted() -> None:
    options = PlanOptions(
        agent_id="agent-1", calling_hours=CallingHours.parse("09:00-17:00", days="mon-fri")
    )
    saturday = "2030-06-08T18:00Z"  # 11:00 in San Francisco, a Saturday
    decision = plan_row(contact(9, scheduled_at=saturday), None, options, NOW, Claims())
    assert isinstance(decision, Dial)
    assert decision.request.scheduled_at == datetime(2030, 6, 10, 16, 0, tzinfo=timezone.utc)
    assert decision.note == (
        "scheduled_at 2030-06-08T18:00 moved to 2030-06-10T16:00: outside the calling days"
    )


def test_seen_numbers_give_the_first_row() -> None:
    seen = SeenNumbers()
    try:
        assert seen.claim("+14155550100", 3) is None
        assert seen.claim("+14155550100", 3) is None  # the same row again (a resume)
        assert seen.claim("+14155550100", 9) == 3
        assert seen.claim("+14155550101", 9) is None
    finally:
        seen.close()


def test_a_redial_waits_for_a_run_with_the_policy() -> None:
    previous = journal_row(8, "redial", dials=2, redial_at=NOW.timestamp(), call_id="c8")
    assert plan_row(contact(8), previous, OPTIONS, NOW, Claims()) == Done("redial", "c8")
    fewer = PlanOptions(agent_id="agent-1", redial=RedialPolicy(max_attempts=2))
    assert plan_row(contact(8), previous, fewer, NOW, Claims()) == Done("redial", "c8")
