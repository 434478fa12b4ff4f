"""Campaign stores: where a campaign's rows, claims and shared limits live.

:mod:`.postgres` is the PostgreSQL store (many workers on one campaign),
:mod:`.pgjournal` the journal interface over it (the one-process campaign),
:mod:`.limits` the shared rate and live-call leases, :mod:`.worker` the
worker loop of ``voicehub campaign work``, :mod:`.webhooks` webhook statuses
into the store. The SQLite journal (:mod:`voicehub_async.campaign.journal`)
stays the embedded default for one process. The driver (``pip install
'voicehub-async[postgres]'``) is imported only when a PostgreSQL URL is used.
"""

from __future__ import annotations

from pathlib import Path

from ..journal import Durability, JournalStore, SqliteJournal

__all__ = ["is_postgres_url", "open_journal"]


def is_postgres_url(value: object) -> bool:
    """True for a ``postgresql://`` (or ``postgres://``) URL: the PostgreSQL store."""
    return isinstance(value, str) and value.startswith(("postgresql://", "postgres://"))


def open_journal(
    target: str | Path, *, campaign: str, durability: Durability = "normal"
) -> JournalStore:
    """The journal at ``target``: a PostgreSQL URL (campaign ``campaign`` of
    that store) or an SQLite file path. Blocking: call it in a thread."""
    if is_postgres_url(target):
        from .pgjournal import PostgresJournal

        return PostgresJournal.open(str(target), campaign=campaign, durability=durability)
    return SqliteJournal.open(target, durability=durability)
