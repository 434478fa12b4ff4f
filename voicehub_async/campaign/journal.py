"""The campaign journal: one SQLite row per contact and one per dial attempt,
so nothing is lost and nobody is phoned twice.

A trigger is not idempotent, so the only way to resume a campaign safely is
to know, for every row, whether its trigger *may* have gone out. The rule the
runner follows: a row is marked ``sending`` and that mark is committed before
its trigger is written to the socket; the call id is stored when the answer
comes back. On resume a row still ``sending`` is therefore the only kind whose
fate is unknown, and it is reported ``ambiguous`` instead of being dialed.

A contact may be dialed more than once on purpose (a redial policy, see
:mod:`.redial`): ``rows`` holds the contact's current state and its latest
attempt, ``attempts`` one line per dial (call id, status, times).

Writes are typed operations (:class:`MarkSending`, :class:`RecordTriggered`,
...), each knowing its SQL; :meth:`Journal.apply` runs a batch of them as one
transaction. This module is the storage only: synchronous SQLite calls, made
by :class:`~voicehub_async.campaign.groupcommit.GroupCommitter` and read from
the event loop (WAL mode lets readers and the writer work at once).

Versions: a journal records its :data:`SCHEMA_VERSION`. One written by 0.1
(version 1: no ``attempts`` table) is upgraded in place the first time it is
opened, in one transaction (see :func:`_migrate_1_to_2`); one written by a
newer release is refused, never guessed at.
"""

from __future__ import annotations

import abc
import contextlib
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Final, Literal

import attrs

from voicehub_async.models import TERMINAL_STATUSES, CallStage, CallStatus

__all__ = [
    "AMBIGUOUS",
    "DONE_STATES",
    "DUPLICATE",
    "INVALID",
    "LOST",
    "NOT_SENT",
    "PENDING",
    "RECONCILED",
    "REDIAL",
    "SCHEMA",
    "SCHEMA_VERSION",
    "SENDING",
    "SUPPRESSED",
    "SqliteJournal",
    "AttemptRow",
    "Journal",
    "JournalError",
    "JournalMismatchError",
    "JournalOp",
    "JournalRow",
    "JournalStore",
    "MarkSending",
    "RecordAmbiguous",
    "RecordInvalid",
    "RecordReconciled",
    "RecordRecording",
    "RecordRedial",
    "RecordSkipped",
    "RecordStatus",
    "RecordTriggerFailed",
    "RecordTriggered",
    "RecordUnsent",
    "waiting_kind",
]

#: The row has not been dialed (rows not in the table yet are pending too).
PENDING: Final = "pending"
#: Committed right before the trigger goes out: the call may exist.
SENDING: Final = "sending"
#: The row could not become a request (no number, invalid number, past time...).
INVALID: Final = "invalid"
#: The trigger may or may not have placed a call; it is not re-sent.
AMBIGUOUS: Final = "ambiguous"
#: The service refused the trigger, or retries ran out: no call was placed.
NOT_SENT: Final = "not_sent"
#: The status endpoint kept answering 404 for the call.
LOST: Final = "lost"
#: The number is already in the campaign on an earlier row: never dialed.
DUPLICATE: Final = "duplicate"
#: The number is on a do-not-call list: never dialed.
SUPPRESSED: Final = "suppressed"
#: The last call ended busy/unanswered/...: the contact is dialed again at ``redial_at``.
REDIAL: Final = "redial"
#: An ambiguous trigger whose call was found afterwards (a webhook naming the
#: number and agent): the row now follows that call id.
RECONCILED: Final = "reconciled"

#: States after which a row needs nothing more (``ambiguous`` unless the user
#: asks to redial). A terminal call status is its own state.
#: The states of a row that are not a call status.
_ROW_STATES: Final = frozenset(
    {PENDING, SENDING, INVALID, AMBIGUOUS, NOT_SENT, LOST, DUPLICATE, SUPPRESSED, "timed_out"}
)

DONE_STATES: Final = (
    frozenset({INVALID, AMBIGUOUS, LOST, DUPLICATE, SUPPRESSED}) | TERMINAL_STATUSES
)


def waiting_kind(state: str) -> Literal["later", "live"] | None:
    """Whether a row in ``state`` waits for its time (``later``: a scheduled
    call, a redial), is a call under way (``live``), or neither (None: not
    dialed yet, or an outcome). Call statuses go by their
    :class:`~voicehub_async.models.CallStage`, the SDK's one status order
    (a status the API does not document counts as live)."""
    if state == REDIAL:
        return "later"
    if state == RECONCILED:
        return "live"
    if state in _ROW_STATES:
        return None
    stage = CallStatus(state).stage
    if stage is CallStage.SCHEDULED:
        return "later"
    if stage is CallStage.ENDED:
        return None
    return "live"


#: The version this release writes. 1: 0.1 (``rows`` only); 2: ``attempts``,
#: and the ``rows`` columns ``dials``, ``duplicate_of``, ``redial_at``, ``note``.
SCHEMA_VERSION: Final = 2

#: The journal's tables. ``rows.state`` is ``pending``, ``sending``, the call's
#: status in lower case once it has an id (``queued``, ``scheduled``,
#: ``started``, ``in-progress``, ``completed``, ``busy``, ...), ``invalid``,
#: ``ambiguous``, ``not_sent``, ``lost``, ``duplicate``, ``suppressed``,
#: ``redial`` or ``reconciled``. Times are Unix seconds.
SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rows (
    row INTEGER PRIMARY KEY,        -- contact number in the file, from 1
    input_hash TEXT NOT NULL,       -- hash of the row's content as read
    number TEXT,                    -- E.164 once valid; as written when invalid
    state TEXT NOT NULL,
    call_id TEXT,                   -- the latest attempt's call
    status TEXT,                    -- its status as the service spelled it
    attempts INTEGER NOT NULL DEFAULT 0,  -- trigger requests for this row, all runs
    error TEXT,
    recording_url TEXT,
    scheduled_at TEXT,              -- UTC yyyy-mm-ddThh:mm when sent scheduled
    sent_at REAL,                   -- when the last sending mark was made
    queued_at REAL,                 -- when the trigger's answer came back
    started_at REAL,                -- when the call was first seen started
    finished_at REAL,               -- when the row reached its final state
    updated_at REAL NOT NULL,
    dials INTEGER NOT NULL DEFAULT 0,  -- dial attempts (the latest attempt's number)
    duplicate_of INTEGER,           -- state duplicate: the row that has the number
    redial_at REAL,                 -- state redial: when the next attempt is due
    note TEXT                       -- e.g. why scheduled_at was moved
);
CREATE TABLE IF NOT EXISTS attempts (
    row INTEGER NOT NULL,
    attempt INTEGER NOT NULL,       -- 1 for a contact's first dial
    state TEXT NOT NULL,            -- as rows.state, for this attempt
    call_id TEXT,
    status TEXT,
    requests INTEGER NOT NULL DEFAULT 0,  -- trigger requests (retries included)
    error TEXT,
    scheduled_at TEXT,
    sent_at REAL,
    queued_at REAL,
    started_at REAL,
    finished_at REAL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (row, attempt)
) WITHOUT ROWID;
"""

# -- typed writes ------------------------------------------------------------------------


class JournalOp:
    """One write to the journal: a typed value that knows its SQL.

    :meth:`statements` gives the (SQL, parameters) pairs; every op of a
    class uses the same SQL strings, so that a batch of them runs as one
    ``executemany`` per string (several times cheaper than one ``execute``
    each). ``phase`` orders the kinds inside one commit (see :data:`_PHASES`).
    """

    __slots__ = ()
    phase: ClassVar[int] = 100

    def statements(self) -> Iterable[tuple[str, Sequence[Any]]]:  # pragma: no cover
        raise NotImplementedError


#: Kept for the name: what a group commit carries.
Op = JournalOp

# Within one commit kinds are applied in ``phase`` order. A row's mark is
# committed before its trigger is sent, so the mark and the result of one
# attempt never share a commit; but the last status of attempt k (and the
# redial it asks for) may share one with the mark of attempt k+1: marks go
# last. Updates name their attempt (and the row's updates its call id), so a
# late write about an earlier attempt never touches a later one.
_PHASE_AMBIGUOUS: Final = 0
_PHASE_RECORD: Final = 1
_PHASE_RESULT: Final = 2
_PHASE_STATUS: Final = 3
_PHASE_REDIAL: Final = 4
_PHASE_RECORDING: Final = 5
_PHASE_UNSENT: Final = 6
_PHASE_MARK: Final = 7

SQL_MARK_SENDING: Final = (
    "INSERT INTO rows (row, input_hash, number, state, dials, note, sent_at, updated_at) "
    "VALUES (?, ?, ?, 'sending', ?, ?, ?, ?) "
    "ON CONFLICT(row) DO UPDATE SET state = 'sending', number = excluded.number, "
    "error = NULL, call_id = NULL, status = NULL, scheduled_at = NULL, queued_at = NULL, "
    "started_at = NULL, finished_at = NULL, redial_at = NULL, dials = excluded.dials, "
    "note = COALESCE(excluded.note, note), sent_at = excluded.sent_at, "
    "updated_at = excluded.updated_at"
)
SQL_ATTEMPT_SENDING: Final = (
    "INSERT INTO attempts (row, attempt, state, sent_at, updated_at) "
    "VALUES (?, ?, 'sending', ?, ?) "
    "ON CONFLICT(row, attempt) DO UPDATE SET state = 'sending', call_id = NULL, "
    "status = NULL, error = NULL, sent_at = excluded.sent_at, updated_at = excluded.updated_at"
)


@attrs.frozen(slots=True)
class MarkSending(JournalOp):
    """Attempt ``attempt`` of ``row`` is about to be sent (committed first)."""

    phase: ClassVar[int] = _PHASE_MARK
    row: int
    digest: str
    number: str | None
    attempt: int
    at: float
    note: str | None = None

    def statements(self) -> Iterable[tuple[str, Sequence[Any]]]:
        return (
            (
                SQL_MARK_SENDING,
                (self.row, self.digest, self.number, self.attempt, self.note, self.at, self.at),
            ),
            (SQL_ATTEMPT_SENDING, (self.row, self.attempt, self.at, self.at)),
        )


SQL_INVALID: Final = (
    "INSERT INTO rows (row, input_hash, number, state, error, finished_at, updated_at) "
    "VALUES (?, ?, ?, 'invalid', ?, ?, ?) "
    "ON CONFLICT(row) DO UPDATE SET state = 'invalid', number = excluded.number, "
    "error = excluded.error, finished_at = excluded.finished_at, updated_at = excluded.updated_at"
)


@attrs.frozen(slots=True)
class RecordInvalid(JournalOp):
    """The row cannot become a request: ``error`` names the field."""

    phase: ClassVar[int] = _PHASE_RECORD
    row: int
    digest: str
    number: str | None
    error: str | None
    at: float

    def statements(self) -> Iterable[tuple[str, Sequence[Any]]]:
        return ((SQL_INVALID, (self.row, self.digest, self.number, self.error, self.at, self.at)),)


SQL_SKIPPED: Final = (
    "INSERT INTO rows (row, input_hash, number, state, duplicate_of, note, finished_at, "
    "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT(row) DO UPDATE SET state = excluded.state, number = excluded.number, "
    "duplicate_of = excluded.duplicate_of, note = excluded.note, redial_at = NULL, "
    "finished_at = excluded.finished_at, updated_at = excluded.updated_at"
)


@attrs.frozen(slots=True)
class RecordSkipped(JournalOp):
    """The row is never dialed: ``duplicate`` (of row ``duplicate_of``) or ``suppressed``."""

    phase: ClassVar[int] = _PHASE_RECORD
    row: int
    digest: str
    number: str
    state: str
    at: float
    duplicate_of: int | None = None
    note: str | None = None

    def statements(self) -> Iterable[tuple[str, Sequence[Any]]]:
        return (
            (
                SQL_SKIPPED,
                (
                    self.row,
                    self.digest,
                    self.number,
                    self.state,
                    self.duplicate_of,
                    self.note,
                    self.at,
                    self.at,
                ),
            ),
        )


SQL_TRIGGERED: Final = (
    "UPDATE rows SET state = ?, call_id = ?, status = ?, attempts = attempts + ?, error = NULL, "
    "scheduled_at = ?, queued_at = ?, finished_at = ?, updated_at = ? WHERE row = ? AND dials = ?"
)
SQL_ATTEMPT_TRIGGERED: Final = (
    "UPDATE attempts SET state = ?, call_id = ?, status = ?, requests = requests + ?, "
    "error = NULL, scheduled_at = ?, queued_at = ?, finished_at = ?, updated_at = ? "
    "WHERE row = ? AND attempt = ?"
)


@attrs.frozen(slots=True)
class RecordTriggered(JournalOp):
    """The trigger was answered: a call exists (``state`` is its status, lower case)."""

    phase: ClassVar[int] = _PHASE_RESULT
    row: int
    attempt: int
    state: str
    call_id: str
    status: str
    requests: int
    scheduled_at: str | None
    at: float
    final: bool

    def statements(self) -> Iterable[tuple[str, Sequence[Any]]]:
        params = (
            self.state,
            self.call_id,
            self.status,
            self.requests,
            self.scheduled_at,
            self.at,
            self.at if self.final else None,
            self.at,
            self.row,
            self.attempt,
        )
        return ((SQL_TRIGGERED, params), (SQL_ATTEMPT_TRIGGERED, params))


SQL_TRIGGER_FAILED: Final = (
    "UPDATE rows SET state = ?, attempts = attempts + ?, error = ?, finished_at = ?, "
    "updated_at = ? WHERE row = ? AND dials = ?"
)
SQL_ATTEMPT_FAILED: Final = (
    "UPDATE attempts SET state = ?, requests = requests + ?, error = ?, finished_at = ?, "
    "updated_at = ? WHERE row = ? AND attempt = ?"
)


@attrs.frozen(slots=True)
class RecordTriggerFailed(JournalOp):
    """No call id came back: ``not_sent`` (provably nothing placed) or ``ambiguous``."""

    phase: ClassVar[int] = _PHASE_RESULT
    row: int
    attempt: int
    state: str
    requests: int
    error: str | None
    at: float

    def statements(self) -> Iterable[tuple[str, Sequence[Any]]]:
        params = (self.state, self.requests, self.error, self.at, self.at, self.row, self.attempt)
        return ((SQL_TRIGGER_FAILED, params), (SQL_ATTEMPT_FAILED, params))


SQL_UNSENT: Final = (
    "UPDATE rows SET state = 'pending', attempts = attempts + ?, error = ?, dials = ?, "
    "updated_at = ? WHERE row = ? AND dials = ?"
)
SQL_ATTEMPT_UNSENT: Final = "DELETE FROM attempts WHERE row = ? AND attempt = ?"


@attrs.frozen(slots=True)
class RecordUnsent(JournalOp):
    """Marked, then stopped before its first request left: the attempt never was."""

    phase: ClassVar[int] = _PHASE_UNSENT
    row: int
    attempt: int
    requests: int
    error: str | None
    at: float

    def statements(self) -> Iterable[tuple[str, Sequence[Any]]]:
        return (
            (
                SQL_UNSENT,
                (self.requests, self.error, self.attempt - 1, self.at, self.row, self.attempt),
            ),
            (SQL_ATTEMPT_UNSENT, (self.row, self.attempt)),
        )


SQL_STATUS: Final = (
    "UPDATE rows SET state = ?, status = ?, started_at = COALESCE(started_at, ?), "
    "finished_at = ?, updated_at = ? WHERE row = ? AND call_id = ?"
)
SQL_ATTEMPT_STATUS: Final = (
    "UPDATE attempts SET state = ?, status = ?, started_at = COALESCE(started_at, ?), "
    "finished_at = ?, updated_at = ? WHERE row = ? AND call_id = ?"
)


@attrs.frozen(slots=True)
class RecordStatus(JournalOp):
    """A new status of call ``call_id`` (of row ``row``); ``final`` when it is the last."""

    phase: ClassVar[int] = _PHASE_STATUS
    row: int
    call_id: str
    state: str
    status: str
    at: float
    final: bool
    started_at: float | None = None

    def statements(self) -> Iterable[tuple[str, Sequence[Any]]]:
        params = (
            self.state,
            self.status,
            self.started_at,
            self.at if self.final else None,
            self.at,
            self.row,
            self.call_id,
        )
        return ((SQL_STATUS, params), (SQL_ATTEMPT_STATUS, params))


SQL_REDIAL: Final = (
    "UPDATE rows SET state = 'redial', redial_at = ?, finished_at = NULL, updated_at = ? "
    "WHERE row = ? AND dials = ?"
)


@attrs.frozen(slots=True)
class RecordRedial(JournalOp):
    """Attempt ``attempt`` ended in a redial status: dial again at ``due`` (Unix time)."""

    phase: ClassVar[int] = _PHASE_REDIAL
    row: int
    attempt: int
    due: float
    at: float

    def statements(self) -> Iterable[tuple[str, Sequence[Any]]]:
        return ((SQL_REDIAL, (self.due, self.at, self.row, self.attempt)),)


SQL_RECORDING: Final = "UPDATE rows SET recording_url = ?, updated_at = ? WHERE row = ?"


@attrs.frozen(slots=True)
class RecordRecording(JournalOp):
    """The recording URL of the row's completed call."""

    phase: ClassVar[int] = _PHASE_RECORDING
    row: int
    url: str
    at: float

    def statements(self) -> Iterable[tuple[str, Sequence[Any]]]:
        return ((SQL_RECORDING, (self.url, self.at, self.row)),)


SQL_AMBIGUOUS: Final = (
    "UPDATE rows SET state = 'ambiguous', error = ?, finished_at = ?, updated_at = ? "
    "WHERE row = ? AND state = 'sending'"
)
SQL_ATTEMPT_AMBIGUOUS: Final = (
    "UPDATE attempts SET state = 'ambiguous', error = ?, finished_at = ?, updated_at = ? "
    "WHERE row = ? AND attempt = ? AND state = 'sending'"
)


@attrs.frozen(slots=True)
class RecordAmbiguous(JournalOp):
    """A row found ``sending`` (a run died mid-trigger): its call may exist."""

    phase: ClassVar[int] = _PHASE_AMBIGUOUS
    row: int
    attempt: int
    error: str
    at: float

    def statements(self) -> Iterable[tuple[str, Sequence[Any]]]:
        return (
            (SQL_AMBIGUOUS, (self.error, self.at, self.at, self.row)),
            (SQL_ATTEMPT_AMBIGUOUS, (self.error, self.at, self.at, self.row, self.attempt)),
        )


SQL_RECONCILED: Final = (
    "UPDATE rows SET state = 'reconciled', call_id = ?, status = ?, error = NULL, "
    "finished_at = NULL, updated_at = ?, "
    "note = CASE WHEN ? IS NULL THEN note WHEN note IS NULL OR note = '' THEN ? "
    "ELSE note || '; ' || ? END "
    "WHERE row = ? AND dials = ? AND state = 'ambiguous'"
)
SQL_ATTEMPT_RECONCILED: Final = (
    "UPDATE attempts SET state = 'reconciled', call_id = ?, status = ?, error = NULL, "
    "finished_at = NULL, updated_at = ? WHERE row = ? AND attempt = ? AND state = 'ambiguous'"
)


@attrs.frozen(slots=True)
class RecordReconciled(JournalOp):
    """An ambiguous attempt matched to the call it placed (``call_id``); the
    row is then followed like any call (its statuses are :class:`RecordStatus`)."""

    phase: ClassVar[int] = _PHASE_RESULT
    row: int
    attempt: int
    call_id: str
    status: str
    at: float
    #: Kept in the row's ``note`` (the results say the row was reconciled).
    note: str | None = None

    def statements(self) -> Iterable[tuple[str, Sequence[Any]]]:
        params = (self.call_id, self.status, self.at, self.row, self.attempt)
        note = (self.note, self.note, self.note)
        row_params = (self.call_id, self.status, self.at, *note, self.row, self.attempt)
        return ((SQL_RECONCILED, row_params), (SQL_ATTEMPT_RECONCILED, params))


Durability = Literal["full", "normal"]


class JournalError(Exception):
    """The journal cannot be used (corrupt, locked by another run, unwritable, newer)."""


class JournalMismatchError(JournalError):
    """The journal belongs to another contacts file or another agent."""


@attrs.frozen(slots=True)
class JournalRow:
    """What the journal knows about one contact (see :data:`SCHEMA`)."""

    row: int
    input_hash: str
    number: str | None
    state: str
    call_id: str | None
    status: str | None
    attempts: int
    error: str | None
    recording_url: str | None
    scheduled_at: str | None
    dials: int = 0
    duplicate_of: int | None = None
    redial_at: float | None = None
    note: str | None = None


_COLUMNS: Final = (
    "row, input_hash, number, state, call_id, status, attempts, error, recording_url, "
    "scheduled_at, dials, duplicate_of, redial_at, note"
)


@attrs.frozen(slots=True)
class AttemptRow:
    """One dial of one contact (see :data:`SCHEMA`, table ``attempts``)."""

    row: int
    attempt: int
    number: str | None
    state: str
    call_id: str | None
    status: str | None
    requests: int
    error: str | None
    scheduled_at: str | None
    sent_at: float | None
    queued_at: float | None
    started_at: float | None
    finished_at: float | None


_ATTEMPT_COLUMNS: Final = (
    "a.row, a.attempt, r.number, a.state, a.call_id, a.status, a.requests, a.error, "
    "a.scheduled_at, a.sent_at, a.queued_at, a.started_at, a.finished_at"
)


def _connect(path: Path) -> sqlite3.Connection:
    # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE ... COMMIT),
    # so a group of writes is exactly one commit.
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
    db.execute("PRAGMA journal_mode=WAL")
    # NORMAL: a commit writes the WAL without fsync, which survives a crash of
    # the process. Durability "full" adds the fsync itself (Journal.sync),
    # off the event loop; see voicehub_async.campaign.groupcommit.
    db.execute("PRAGMA synchronous=NORMAL")
    return db


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _statements(script: str) -> list[str]:
    """The statements of ``script`` (comments dropped: they may hold a ``;``)."""
    text = "\n".join(line.split("--", 1)[0] for line in script.splitlines())
    return [s for s in (part.strip() for part in text.split(";")) if s]


def _stored_version(db: sqlite3.Connection) -> str | None:
    """The file's ``schema_version`` (None for a new, empty journal)."""
    if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone():
        found = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if found is not None:
            return str(found[0])
    if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'rows'").fetchone():
        return "?"
    return None


def _create(db: sqlite3.Connection) -> None:
    with _transaction(db):
        for statement in _statements(SCHEMA):
            db.execute(statement)
        db.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
        )


def _migrate_1_to_2(db: sqlite3.Connection) -> None:
    """0.1's journal to this one, in one transaction (all or nothing).

    ``rows`` gains its new columns; every row whose trigger was tried (a call
    id, or left ``sending``/``ambiguous``/``not_sent``) gets ``dials = 1`` and
    its one attempt copied into ``attempts``, so that a resume treats it
    exactly as 0.1 would have (follow, report ambiguous, retry a refusal).
    """
    with _transaction(db):
        for column in (
            "dials INTEGER NOT NULL DEFAULT 0",
            "duplicate_of INTEGER",
            "redial_at REAL",
            "note TEXT",
        ):
            db.execute(f"ALTER TABLE rows ADD COLUMN {column}")
        for statement in _statements(SCHEMA):
            if "attempts (" in statement:
                db.execute(statement)
        db.execute(
            "UPDATE rows SET dials = 1 WHERE call_id IS NOT NULL "
            "OR state IN ('sending', 'ambiguous', 'not_sent')"
        )
        db.execute(
            "INSERT INTO attempts (row, attempt, state, call_id, status, requests, error, "
            "scheduled_at, sent_at, queued_at, started_at, finished_at, updated_at) "
            "SELECT row, 1, state, call_id, status, attempts, error, scheduled_at, sent_at, "
            "queued_at, started_at, finished_at, updated_at FROM rows WHERE dials = 1"
        )
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))


def _prepare_schema(db: sqlite3.Connection, path: Path) -> None:
    """Create, upgrade or refuse the file's schema (see the module documentation)."""
    version = _stored_version(db)
    if version is None:
        _create(db)
    elif version == "1":
        _migrate_1_to_2(db)
    elif version != str(SCHEMA_VERSION):
        newer = version.isdigit() and int(version) > SCHEMA_VERSION
        raise JournalError(
            f"the journal {path} has schema version {version}; this version of "
            f"voicehub-async reads versions 1 to {SCHEMA_VERSION}. "
            + (
                "It was written by a newer voicehub-async: upgrade to resume it "
                "(pip install -U voicehub-async), or use a new --journal"
                if newer
                else "It is not a journal this SDK wrote: use a new --journal"
            )
        )


class JournalStore(abc.ABC):
    """What a campaign needs of its journal, whatever stores it.

    Implemented by :class:`SqliteJournal` (a file: the default, one process)
    and :class:`~voicehub_async.campaign.store.pgjournal.PostgresJournal` (a
    campaign in a PostgreSQL database, shared by many workers). Writes are
    the typed :class:`JournalOp` values, applied in batches, each batch one
    transaction (``apply``, called from one writer at a time); reads come
    from the event loop. The rules that are not about storage live here,
    once: :meth:`bind` and :meth:`iter_rows`.
    """

    #: Where the journal is, for messages.
    path: str | Path
    #: ``full``: :meth:`sync` makes commits survive a power cut.
    durability: Durability

    @abc.abstractmethod
    def close(self) -> None:
        """Release the journal (idempotent)."""

    @abc.abstractmethod
    def meta(self) -> dict[str, str]:
        """The journal's metadata as a dict."""

    @abc.abstractmethod
    def set_meta(self, values: dict[str, str]) -> None:
        """Set (insert or replace) metadata values."""

    @abc.abstractmethod
    def apply(self, ops: Sequence[JournalOp]) -> None:
        """Run ``ops`` as one transaction, in ``phase`` order."""

    @abc.abstractmethod
    def sync(self) -> None:
        """Make every commit so far survive a power cut (durability ``full``)."""

    @abc.abstractmethod
    def rows_after(self, row: int, limit: int = 1000) -> list[JournalRow]:
        """Up to ``limit`` rows with a number greater than ``row``, in order."""

    @abc.abstractmethod
    def attempts_after(self, after: tuple[int, int], limit: int = 2000) -> list[AttemptRow]:
        """Up to ``limit`` attempts after ``(row, attempt)``, in that order."""

    @abc.abstractmethod
    def counts(self) -> dict[str, int]:
        """Rows per state."""

    @abc.abstractmethod
    def total_attempts(self) -> tuple[int, int]:
        """(trigger requests, retries) over every row and run."""

    @abc.abstractmethod
    def redials(self) -> int:
        """Dial attempts after a contact's first, over every run."""

    def iter_rows(self, chunk: int = 2000) -> Iterator[JournalRow]:
        """Every row in order, read in chunks (flat memory)."""
        last = 0
        while True:
            rows = self.rows_after(last, chunk)
            if not rows:
                return
            yield from rows
            last = rows[-1].row

    def iter_attempts(self, chunk: int = 2000) -> Iterator[AttemptRow]:
        """Every dial attempt, in (row, attempt) order, read in chunks."""
        last = (0, 0)
        while True:
            found = self.attempts_after(last, chunk)
            if not found:
                return
            yield from found
            last = (found[-1].row, found[-1].attempt)

    def bind(self, identity: dict[str, str], *, describe: dict[str, str]) -> bool:
        """Tie the journal to a campaign's ``identity`` (source hash, agent...).

        A new journal records it and returns True; one made for the same
        identity returns False (a resume); any difference raises
        :class:`JournalMismatchError` naming it, since mixing two contact files
        in one journal would attach one file's calls to the other's rows.
        ``describe`` holds human-readable values stored alongside.
        """
        meta = self.meta()
        if not any(key in meta for key in identity):
            self.set_meta({**identity, **describe, "created_at": f"{time.time():.3f}"})
            return True
        for key, value in identity.items():
            if meta.get(key) != value:
                raise JournalMismatchError(
                    _mismatch_message(self.path, key, meta, value, describe.get("source_name"))
                )
        return False


class SqliteJournal(JournalStore):
    """An open journal file: a write connection, a read connection, a lock.

    Opening takes an exclusive lock on ``<journal>.lock`` (released by the
    operating system if the process dies), so two runs can never share a
    journal and dial the same rows. Use :meth:`open`.
    """

    path: Path

    def __init__(
        self,
        path: Path,
        writer: sqlite3.Connection,
        reader: sqlite3.Connection,
        lock: Any,
        durability: Durability = "normal",
    ) -> None:
        self.path = path
        #: ``full``: :meth:`sync` makes commits survive a power cut; ``normal``:
        #: commits survive a crash of the process only, and :meth:`sync` does nothing.
        self.durability: Durability = durability
        self._writer = writer
        self._reader = reader
        self._lock = lock
        self._wal_fd: int | None = None
        self._closed = False

    @classmethod
    def open(cls, path: str | Path, *, durability: Durability = "normal") -> SqliteJournal:
        """Open (creating, or upgrading from an older version, if needed) the
        journal at ``path``; :class:`JournalError` if it cannot be used."""
        path = Path(path)
        lock = _take_lock(path)
        try:
            writer = _connect(path)
            try:
                _prepare_schema(writer, path)
                reader = sqlite3.connect(
                    path, isolation_level=None, check_same_thread=False, timeout=10.0
                )
            except BaseException:
                writer.close()
                raise
        except sqlite3.DatabaseError as exc:
            _release_lock(lock)
            raise JournalError(f"cannot use the journal {path}: {exc}") from None
        except BaseException:
            _release_lock(lock)
            raise
        return cls(path, writer, reader, lock, durability)

    def close(self) -> None:
        """Close both connections and release the lock (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._wal_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._wal_fd)
            self._wal_fd = None
        with contextlib.suppress(sqlite3.Error):
            self._reader.close()
        with contextlib.suppress(sqlite3.Error):
            self._writer.close()
        _release_lock(self._lock)

    # -- metadata -----------------------------------------------------------------

    def meta(self) -> dict[str, str]:
        """The ``meta`` table as a dict."""
        return dict(self._reader.execute("SELECT key, value FROM meta").fetchall())

    def set_meta(self, values: dict[str, str]) -> None:
        with _transaction(self._writer):
            self._writer.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                list(values.items()),
            )

    # -- writes (from the writer) ----------------------------------------------------

    def apply(self, ops: Sequence[JournalOp]) -> None:
        """Run ``ops`` as one transaction: one commit for all of them.

        Statements with the same SQL go in one ``executemany``, kinds in
        ``phase`` order (see :class:`JournalOp`), so that for any one row the
        writes still land in the order it lives through them.
        """
        groups: dict[str, tuple[int, list[Sequence[Any]]]] = {}
        for op in ops:
            phase = op.phase
            for sql, params in op.statements():
                group = groups.get(sql)
                if group is None:
                    groups[sql] = (phase, [params])
                else:
                    group[1].append(params)
        db = self._writer
        with _transaction(db):
            for sql, (_, batch) in sorted(groups.items(), key=lambda item: item[1][0]):
                if len(batch) == 1:
                    db.execute(sql, batch[0])
                else:
                    db.executemany(sql, batch)

    def sync(self) -> None:
        """Make every commit so far survive a power cut (durability ``full``).

        Commits are made with ``synchronous=NORMAL`` (the WAL is written, not
        flushed); this flushes the WAL file to the disk, which is what
        ``synchronous=FULL`` would do at each commit. Split off so that the
        slow part, the fsync, can run in another thread without holding the
        GIL while the event loop makes the next commit. The directory is
        flushed once too, so the WAL file itself survives.
        """
        if self.durability != "full":
            return
        fd = self._wal_fd
        if fd is None:
            fd = self._wal_fd = os.open(self.path.with_name(self.path.name + "-wal"), os.O_RDONLY)
            _fsync_directory(self.path.parent)
        # fdatasync where there is one, as SQLite itself does: the file's
        # times need not reach the disk, only its content (and size).
        _datasync(fd)

    # -- reads (from the event loop) ------------------------------------------------------

    def rows_after(self, row: int, limit: int = 1000) -> list[JournalRow]:
        """Up to ``limit`` rows with a number greater than ``row``, in order."""
        cursor = self._reader.execute(
            f"SELECT {_COLUMNS} FROM rows WHERE row > ? ORDER BY row LIMIT ?", (row, limit)
        )
        return [JournalRow(*values) for values in cursor.fetchall()]

    def attempts_after(self, after: tuple[int, int], limit: int = 2000) -> list[AttemptRow]:
        cursor = self._reader.execute(
            f"SELECT {_ATTEMPT_COLUMNS} FROM attempts AS a JOIN rows AS r ON r.row = a.row "
            "WHERE (a.row, a.attempt) > (?, ?) ORDER BY a.row, a.attempt LIMIT ?",
            (*after, limit),
        )
        return [AttemptRow(*values) for values in cursor.fetchall()]

    def counts(self) -> dict[str, int]:
        """Rows per state."""
        return dict(self._reader.execute("SELECT state, COUNT(*) FROM rows GROUP BY state"))

    def total_attempts(self) -> tuple[int, int]:
        """(trigger requests, retries) over every row and run."""
        requests, retries = self._reader.execute(
            "SELECT COALESCE(SUM(requests), 0), "
            "COALESCE(SUM(CASE WHEN requests > 1 THEN requests - 1 ELSE 0 END), 0) FROM attempts"
        ).fetchone()
        return int(requests), int(retries)

    def redials(self) -> int:
        """Dial attempts after a contact's first, over every run."""
        query = "SELECT COUNT(*) FROM attempts WHERE attempt > 1"
        (count,) = self._reader.execute(query).fetchone()
        return int(count)


#: The SQLite journal's name before there were two stores (kept: it is public).
Journal = SqliteJournal


def _mismatch_message(
    path: str | Path, key: str, meta: dict[str, str], value: str, name: str | None
) -> str:
    if key == "source_sha256":
        made_for = meta.get("source_name", "another file")
        rows = meta.get("source_rows")
        about = f", about {rows} rows" if rows else ""
        if made_for == name:
            what = f"{made_for} as it was then{about}; the file has changed since"
        else:
            what = f"{made_for}{about}"
        return (
            f"the journal {path} belongs to another contacts file ({what}). Resuming it "
            "with a different file could phone people twice or skip them: give this file "
            "its own --journal, or run the original file again to resume"
        )
    return (
        f"the journal {path} was made with {key} {meta.get(key)!r}, not {value!r}; "
        "run the same command again to resume it, or use a new --journal"
    )


_datasync: Final = getattr(os, "fdatasync", os.fsync)


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - Windows cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse it
        pass
    finally:
        os.close(fd)


def _take_lock(path: Path) -> Any:
    """An exclusive, non-blocking lock on ``<path>.lock`` (None where the
    platform has no ``fcntl``)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return None
    lock_path = path.with_name(path.name + ".lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise JournalError(f"cannot create the journal lock {lock_path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise JournalError(
            f"the journal {path} is in use by another campaign (lock {lock_path}); "
            "wait for it to finish, or use another --journal"
        ) from None
    return fd


def _release_lock(lock: Any) -> None:
    if lock is not None:
        with contextlib.suppress(OSError):
            os.close(lock)
