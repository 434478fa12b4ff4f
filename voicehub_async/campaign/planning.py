"""What to do with each contact: the campaign's decisions, as pure code.

For every row of the contacts file, read beside what the journal already
knows about it (``previous``, None for a row never reached), :func:`plan_row`
answers one of:

* :class:`Dial`: send this (validated) request, as attempt ``attempt``;
* :class:`Redial`: dial it again at ``due`` (a redial sequence under way);
* :class:`Follow`: a call placed by an earlier run, not final yet: follow it;
* :class:`Done`: nothing more to do (a final outcome, recorded earlier);
* :class:`LeftSending`: an earlier run died while its trigger was being
  sent: the call may exist, the row becomes ``ambiguous`` and is not dialed;
* :class:`Invalid`: the row cannot become a request (the error names the field);
* :class:`Skip`: never dialed: its number is ``suppressed`` (do-not-call),
  or a ``duplicate`` of an earlier row's.

No I/O happens here; the runner carries the decisions out (journal writes,
the dispatcher, the poller). The only state is ``claims``, the numbers the
campaign has met so far (:class:`SeenNumbers`), passed in so that tests can
give a dict.

One dial per person: numbers are compared in E.164, after validation with
the campaign's region; the first row holding a number is the one dialed, in
this run and in every resume (rows are planned in file order, and rows
dialed by earlier runs claim their number again as they are read).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Container
from datetime import datetime, timezone
from typing import Final, Protocol

import attrs

from voicehub_async.errors import InvalidRequestError
from voicehub_async.models import (
    PreparedRequest,
    format_scheduled_at,
    prepare_request,
)

from .contacts import ContactRow, row_request
from .hours import CallingHours
from .journal import (
    AMBIGUOUS,
    DONE_STATES,
    DUPLICATE,
    INVALID,
    NOT_SENT,
    PENDING,
    REDIAL,
    SENDING,
    SUPPRESSED,
    JournalRow,
)
from .redial import RedialPolicy

__all__ = [
    "Decision",
    "Dial",
    "Done",
    "Follow",
    "Invalid",
    "LeftSending",
    "NumberClaims",
    "PlanOptions",
    "Redial",
    "SeenNumbers",
    "Skip",
    "plan_row",
    "schedule_within_hours",
]

#: What a row whose journal state names no call id yet needs again.
_SEND_AGAIN: Final = frozenset({NOT_SENT, PENDING})


@attrs.frozen
class PlanOptions:
    """The campaign options that decide what becomes of a row."""

    agent_id: str | None = None
    region: str | None = None
    calling_hours: CallingHours | None = None
    redial: RedialPolicy | None = None
    redial_ambiguous: bool = False
    allow_duplicates: bool = False
    suppressed: Container[str] = frozenset()
    #: How requests are validated (``client.prepare``: its region and its
    #: cache of numbers); default: :func:`prepare_request` with ``region``.
    prepare: Callable[..., PreparedRequest] | None = None


@attrs.frozen
class Dial:
    request: PreparedRequest
    attempt: int
    note: str | None = None


@attrs.frozen
class Redial:
    request: PreparedRequest
    attempt: int
    due: float


@attrs.frozen
class Follow:
    call_id: str
    state: str
    attempt: int
    #: Kept when a redial policy may need to dial the contact again.
    request: PreparedRequest | None = None
    #: When the call was sent scheduled (UTC): it is not read before then.
    scheduled_at: datetime | None = None


@attrs.frozen
class Done:
    state: str
    call_id: str | None
    #: A completed call whose recording URL is not stored yet.
    wants_recording: bool = False


@attrs.frozen
class LeftSending:
    attempt: int


@attrs.frozen
class Invalid:
    number: str | None
    error: InvalidRequestError


@attrs.frozen
class Skip:
    state: str
    number: str
    duplicate_of: int | None = None
    note: str | None = None


Decision = Dial | Redial | Follow | Done | LeftSending | Invalid | Skip


class NumberClaims(Protocol):
    def claim(self, number: str, row: int) -> int | None:
        """Record that ``row`` holds ``number``; the earlier row holding it, if any."""


class SeenNumbers:
    """The first row of every number in the campaign, for :func:`plan_row`.

    Held in a private temporary SQLite database (a file SQLite deletes on
    close, with a page cache of a few MB): a million contacts do not grow
    the process by a hundred MB as a dict would. A claim costs a few
    microseconds.
    """

    def __init__(self) -> None:
        self._db = sqlite3.connect("", isolation_level=None)
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute("CREATE TABLE seen (number TEXT PRIMARY KEY, row INTEGER) WITHOUT ROWID")
        self._db.execute("BEGIN")  # never committed: nothing here outlives the run

    def claim(self, number: str, row: int) -> int | None:
        db = self._db
        if db.execute("INSERT OR IGNORE INTO seen VALUES (?, ?)", (number, row)).rowcount:
            return None
        (first,) = db.execute("SELECT row FROM seen WHERE number = ?", (number,)).fetchone()
        return None if first == row else int(first)

    def close(self) -> None:
        self._db.close()


def plan_row(
    contact: ContactRow,
    previous: JournalRow | None,
    options: PlanOptions,
    now: datetime,
    claims: NumberClaims,
) -> Decision:
    """What to do with ``contact`` (see the module documentation)."""
    if previous is None:
        return _fresh(contact, 1, options, now, claims)
    state = previous.state
    if previous.number is not None and state not in (INVALID, DUPLICATE, SUPPRESSED):
        claims.claim(previous.number, contact.row)
    if state in (SENDING, AMBIGUOUS) and options.redial_ambiguous:
        return _fresh(contact, previous.dials + 1, options, now, claims)
    if state == SENDING:
        return LeftSending(max(1, previous.dials))
    if state == DUPLICATE and options.allow_duplicates:
        return _fresh(contact, previous.dials + 1, options, now, claims)
    if state in DONE_STATES:
        wants = state == "completed" and bool(previous.call_id) and not previous.recording_url
        return Done(state, previous.call_id, wants)
    if state == REDIAL:
        decision = _fresh(contact, previous.dials + 1, options, now, _Nobody())
        if not isinstance(decision, Dial):
            return decision  # suppressed since, or no longer valid
        policy = options.redial
        if policy is None or previous.dials >= policy.max_attempts:
            # A run without the policy (or with fewer attempts) does not
            # redial: the row keeps waiting for a run that does.
            return Done(REDIAL, previous.call_id)
        due = previous.redial_at or 0.0
        return Redial(_without_schedule(decision.request), decision.attempt, due)
    if previous.call_id is not None and state not in _SEND_AGAIN:
        request = None
        if options.redial is not None:
            decision = _fresh(contact, previous.dials, options, now, _Nobody())
            if isinstance(decision, Dial):
                request = _without_schedule(decision.request)
        when = None
        if previous.scheduled_at:
            when = datetime.strptime(previous.scheduled_at, "%Y-%m-%dT%H:%M")
            when = when.replace(tzinfo=timezone.utc)
        return Follow(previous.call_id, state, max(1, previous.dials), request, when)
    # Never sent, or refused (nothing placed): the same attempt again.
    attempt = max(1, previous.dials) if state == NOT_SENT else previous.dials + 1
    return _fresh(contact, attempt, options, now, claims)


def _fresh(
    contact: ContactRow, attempt: int, options: PlanOptions, now: datetime, claims: NumberClaims
) -> Decision:
    """A row to dial: validated, checked against the lists, moved into the hours."""
    try:
        raw_request = row_request(contact, options.agent_id)
        if options.prepare is not None:
            request = options.prepare(raw_request, now=now)
        else:
            request = prepare_request(raw_request, default_region=options.region, now=now)
    except InvalidRequestError as error:
        raw = contact.fields.get("to")
        return Invalid(None if raw is None else str(raw), error)
    number = request.to
    assert isinstance(number, str)
    if number in options.suppressed:
        return Skip(SUPPRESSED, number, note="on the do-not-call list")
    if not options.allow_duplicates:
        first = claims.claim(number, contact.row)
        if first is not None:
            return Skip(
                DUPLICATE, number, first, f"same number as row {first}: dialed once per campaign"
            )
    note = None
    if options.calling_hours is not None:
        try:
            request, note = schedule_within_hours(request, options.calling_hours, now)
        except InvalidRequestError as error:
            return Invalid(number, error)
    return Dial(request, attempt, note)


def schedule_within_hours(
    request: PreparedRequest, hours: CallingHours, now: datetime
) -> tuple[PreparedRequest, str | None]:
    """``request`` (validated) with ``scheduled_at`` moved into the calling
    hours and days, and a note when an explicit ``scheduled_at`` was moved."""
    assert isinstance(request.to, str)
    wanted = request.scheduled_at
    when = hours.next_allowed(request.to, now, wanted)
    if when == wanted:
        return request, None
    note = None
    if wanted is not None and when is not None:
        note = (
            f"scheduled_at {format_scheduled_at(wanted)} moved to {format_scheduled_at(when)}: "
            f"outside the {hours.what_excludes(request.to, wanted)}"
        )
    return attrs.evolve(request, scheduled_at=when), note


def _without_schedule(request: PreparedRequest) -> PreparedRequest:
    """A redial goes when it is due: the row's own time has passed."""
    if request.scheduled_at is None:
        return request
    return attrs.evolve(request, scheduled_at=None)


class _Nobody:
    """Claims for a row already dialed: it keeps its number whatever else."""

    def claim(self, number: str, row: int) -> int | None:
        return None
