"""``PostgresJournal``: the campaign journal interface, kept in PostgreSQL.

The one-process campaign (:class:`~voicehub_async.campaign.Campaign`, ``voicehub
campaign CONTACTS --journal postgresql://...``) talks to its journal through
the synchronous interface of :class:`~voicehub_async.campaign.journal.JournalStore`
(``apply`` from the group-commit writer, reads from the event loop), the one
:class:`~voicehub_async.campaign.journal.SqliteJournal` implements. This class
implements it over :class:`~.postgres.PostgresStore`: a campaign of the store
(by name) is one journal, in the same tables the multi-worker commands use,
so a campaign started by one process can be inspected with ``voicehub campaign
status`` and its results written by ``voicehub campaign results``.

Writes are the journal's typed operations, unchanged: each knows its SQL
(written for SQLite); :func:`~.postgres.translate` turns each statement into
PostgreSQL's once (cached), scoping it to the campaign, so the two stores run
the same writes and cannot drift (one parametrised test suite runs against
both). asyncpg is asynchronous and the interface is not: the store runs on an
event loop of its own in a helper thread, and each call waits for its result
(a read from the campaign's event loop blocks it as an SQLite read does, for a
round trip to the database).

Durability: every PostgreSQL commit is durable when it returns (the server's
``synchronous_commit``), so :meth:`PostgresJournal.sync` has nothing to do
whatever ``durability`` says.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from ..journal import AttemptRow, Durability, JournalOp, JournalRow, JournalStore
from .postgres import PostgresStore, describe_url

__all__ = ["PostgresJournal"]

T = TypeVar("T")


class _LoopThread:
    """An event loop running in a daemon thread, for a synchronous facade."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="voicehub-postgres-journal", daemon=True
        )
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class PostgresJournal(JournalStore):
    """Campaign ``campaign`` of the PostgreSQL store at ``url``, as a journal.
    Use :meth:`open`."""

    def __init__(
        self,
        runner: _LoopThread,
        store: PostgresStore,
        campaign: int,
        name: str,
        durability: Durability,
    ) -> None:
        self._runner = runner
        self._store = store
        self._campaign = campaign
        self.name = name
        self.durability: Durability = durability
        self.path = f"{describe_url(store.url)} (campaign {name})"
        self._closed = False

    @classmethod
    def open(cls, url: str, *, campaign: str, durability: Durability = "normal") -> PostgresJournal:
        """Connect, migrate the schema, and open (creating if needed) the campaign."""
        runner = _LoopThread()
        try:
            store = runner.run(PostgresStore.open(url, max_size=2))
            try:
                cid = runner.run(store.ensure_campaign(campaign))
            except BaseException:
                runner.run(store.close())
                raise
        except BaseException:
            runner.close()
            raise
        return cls(runner, store, cid, campaign, durability)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._runner.run(self._store.close())
        finally:
            self._runner.close()

    # -- metadata ----------------------------------------------------------------------

    def meta(self) -> dict[str, str]:
        return self._runner.run(self._store.meta(self._campaign))

    def set_meta(self, values: dict[str, str]) -> None:
        self._runner.run(self._store.set_meta(self._campaign, values))

    # -- writes --------------------------------------------------------------------------

    def apply(self, ops: Sequence[JournalOp]) -> None:
        self._runner.run(self._store.apply_ops(self._campaign, ops))

    def sync(self) -> None:
        """Nothing to do: a PostgreSQL commit is durable when it returns."""

    # -- reads ----------------------------------------------------------------------------

    def rows_after(self, row: int, limit: int = 1000) -> list[JournalRow]:
        return self._runner.run(self._store.rows_after(self._campaign, row, limit))

    def attempts_after(self, after: tuple[int, int], limit: int = 2000) -> list[AttemptRow]:
        return self._runner.run(self._store.attempts_after(self._campaign, after, limit))

    def counts(self) -> dict[str, int]:
        return self._runner.run(self._store.counts(self._campaign))

    def total_attempts(self) -> tuple[int, int]:
        return self._runner.run(self._store.total_attempts(self._campaign))

    def redials(self) -> int:
        return self._runner.run(self._store.redials(self._campaign))
