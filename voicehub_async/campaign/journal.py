"""The campaign journal: one SQLite row per contact, so nothing is lost and
nobody is phoned twice.

A trigger is not idempotent, so the only way to resume a campaign safely is
to know, for every row, whether its trigger *may* have gone out. The rule the
runner follows: a row is marked ``sending`` and that mark is committed before
its trigger is written to the socket; the call id is stored when the answer
comes back. On resume a row still ``sending`` is therefore the only kind whose
fate is unknown, and it is reported ``ambiguous`` instead of being dialed.

This module is the storage only: synchronous SQLite calls, made from one
writer thread by :class:`~voicehub_async.campaign.groupcommit.GroupCommitter`
and from the event loop for reads (WAL mode lets readers and the writer work
at once). See :data:`SCHEMA` for the table.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final, Literal

import attrs

from voicehub_async.models import TERMINAL_STATUSES

__all__ = [
    "AMBIGUOUS",
    "DONE_STATES",
    "INVALID",
    "LOST",
    "NOT_SENT",
    "PENDING",
    "SCHEMA",
    "SENDING",
    "Journal",
    "JournalError",
    "JournalMismatchError",
    "JournalRow",
    "Op",
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

#: States after which a row needs nothing more (``ambiguous`` unless the user
#: asks to redial). A terminal call status is its own state.
DONE_STATES: Final = frozenset({INVALID, AMBIGUOUS, LOST}) | TERMINAL_STATUSES

SCHEMA_VERSION: Final = 1

#: The journal's tables. ``rows.state`` is ``pending``, ``sending``, the call's
#: status in lower case once it has an id (``queued``, ``scheduled``,
#: ``started``, ``in-progress``, ``completed``, ``busy``, ...), ``invalid``,
#: ``ambiguous``, ``not_sent`` or ``lost``. Times are Unix seconds.
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
    call_id TEXT,
    status TEXT,                    -- the call's status as the service spelled it
    attempts INTEGER NOT NULL DEFAULT 0,  -- trigger requests for this row, all runs
    error TEXT,
    recording_url TEXT,
    scheduled_at TEXT,              -- UTC yyyy-mm-ddThh:mm when sent scheduled
    sent_at REAL,                   -- when the last sending mark was made
    queued_at REAL,                 -- when the trigger's answer came back
    started_at REAL,                -- when the call was first seen started
    finished_at REAL,               -- when the row reached its final state
    updated_at REAL NOT NULL
);
"""

#: One write: an SQL statement and its parameters (see the ``SQL_*`` constants).
Op = tuple[str, Sequence[Any]]

SQL_MARK_SENDING: Final = (
    "INSERT INTO rows (row, input_hash, number, state, sent_at, updated_at) "
    "VALUES (?, ?, ?, 'sending', ?, ?) "
    "ON CONFLICT(row) DO UPDATE SET state = 'sending', number = excluded.number, "
    "error = NULL, sent_at = excluded.sent_at, updated_at = excluded.updated_at"
)
SQL_INVALID: Final = (
    "INSERT INTO rows (row, input_hash, number, state, error, finished_at, updated_at) "
    "VALUES (?, ?, ?, 'invalid', ?, ?, ?) "
    "ON CONFLICT(row) DO UPDATE SET state = 'invalid', number = excluded.number, "
    "error = excluded.error, finished_at = excluded.finished_at, updated_at = excluded.updated_at"
)
SQL_TRIGGERED: Final = (
    "UPDATE rows SET state = ?, call_id = ?, status = ?, attempts = attempts + ?, error = NULL, "
    "scheduled_at = ?, queued_at = ?, finished_at = ?, updated_at = ? WHERE row = ?"
)
SQL_TRIGGER_FAILED: Final = (
    "UPDATE rows SET state = ?, attempts = attempts + ?, error = ?, finished_at = ?, "
    "updated_at = ? WHERE row = ?"
)
SQL_STATUS: Final = (
    "UPDATE rows SET state = ?, status = ?, started_at = COALESCE(started_at, ?), "
    "finished_at = ?, updated_at = ? WHERE row = ?"
)
SQL_RECORDING: Final = "UPDATE rows SET recording_url = ?, updated_at = ? WHERE row = ?"
SQL_AMBIGUOUS: Final = (
    "UPDATE rows SET state = 'ambiguous', error = ?, finished_at = ?, updated_at = ? WHERE row = ?"
)

#: The order in which a row goes through the writes: within one commit, kinds
#: are applied in this order (a row's mark is committed before its trigger is
#: sent, so its result is always in a later commit than its mark; a status
#: follows its trigger's result, a recording its final status).
_PHASES: Final = {
    sql: phase
    for phase, sql in enumerate(
        (
            SQL_AMBIGUOUS,
            SQL_INVALID,
            SQL_MARK_SENDING,
            SQL_TRIGGER_FAILED,
            SQL_TRIGGERED,
            SQL_STATUS,
            SQL_RECORDING,
        )
    )
}

Durability = Literal["full", "normal"]


class JournalError(Exception):
    """The journal cannot be used (corrupt, locked by another run, unwritable)."""


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


_COLUMNS: Final = (
    "row, input_hash, number, state, call_id, status, attempts, error, recording_url, scheduled_at"
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


class Journal:
    """An open journal file: a write connection, a read connection, a lock.

    Opening takes an exclusive lock on ``<journal>.lock`` (released by the
    operating system if the process dies), so two runs can never share a
    journal and dial the same rows. Use :meth:`open`.
    """

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
    def open(cls, path: str | Path, *, durability: Durability = "normal") -> Journal:
        """Open (creating if needed) the journal at ``path``."""
        path = Path(path)
        lock = _take_lock(path)
        try:
            writer = _connect(path)
            try:
                writer.executescript(SCHEMA)
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
        journal = cls(path, writer, reader, lock, durability)
        version = journal.meta().get("schema_version")
        if version is None:
            journal.set_meta({"schema_version": str(SCHEMA_VERSION)})
        elif version != str(SCHEMA_VERSION):
            journal.close()
            raise JournalError(
                f"the journal {path} has schema version {version}; this version of "
                f"voicehub-async reads version {SCHEMA_VERSION}"
            )
        return journal

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
        self._writer.execute("BEGIN IMMEDIATE")
        try:
            self._writer.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                list(values.items()),
            )
        except BaseException:
            self._writer.execute("ROLLBACK")
            raise
        self._writer.execute("COMMIT")

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

    # -- writes (from the writer thread) ----------------------------------------------

    def apply(self, ops: Sequence[Op]) -> None:
        """Run ``ops`` as one transaction: one commit for all of them.

        Writes of the same kind go in one ``executemany`` (several times
        cheaper than one ``execute`` each), kinds in the order a row lives
        through them (:data:`_PHASES`), so that for any one row the writes
        still land in the order they were made; other statements run last,
        in order.
        """
        groups: dict[str, list[Sequence[Any]]] = {}
        for sql, params in ops:
            group = groups.get(sql)
            if group is None:
                groups[sql] = [params]
            else:
                group.append(params)
        db = self._writer
        db.execute("BEGIN IMMEDIATE")
        try:
            for sql in sorted(groups, key=lambda s: _PHASES.get(s, len(_PHASES))):
                batch = groups[sql]
                if len(batch) == 1:
                    db.execute(sql, batch[0])
                else:
                    db.executemany(sql, batch)
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

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

    def iter_rows(self, chunk: int = 2000) -> Iterator[JournalRow]:
        """Every row in order, read in chunks (flat memory)."""
        last = 0
        while True:
            rows = self.rows_after(last, chunk)
            if not rows:
                return
            yield from rows
            last = rows[-1].row

    def counts(self) -> dict[str, int]:
        """Rows per state."""
        return dict(self._reader.execute("SELECT state, COUNT(*) FROM rows GROUP BY state"))

    def total_attempts(self) -> tuple[int, int]:
        """(trigger requests, retries) over every row and run."""
        requests, retries = self._reader.execute(
            "SELECT COALESCE(SUM(attempts), 0), "
            "COALESCE(SUM(CASE WHEN attempts > 1 THEN attempts - 1 ELSE 0 END), 0) FROM rows"
        ).fetchone()
        return int(requests), int(retries)


def _mismatch_message(
    path: Path, key: str, meta: dict[str, str], value: str, name: str | None
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
