"""Campaigns: dial every contact of a CSV or JSONL file, with a journal that
makes the run resumable without ever phoning a person twice.

::

    from voicehub_async import Campaign, VoiceHubClient

    async with VoiceHubClient(max_connections=100) as client:
        summary = await Campaign(client, "contacts.csv", agent_id="agent-1").run()

Modules: :mod:`.contacts` (streaming reader), :mod:`.journal` (SQLite, typed
writes, migrations) and :mod:`.groupcommit` (batched commits), :mod:`.planning`
(what each row needs, pure code), :mod:`.hours` (calling hours and days),
:mod:`.redial` (redial policies), :mod:`.suppression` (do-not-call lists),
:mod:`.runner` (:class:`Campaign`), :mod:`.counters` (live counters),
:mod:`.results` (results and attempts files), :mod:`.summary` (progress and
summary values), :mod:`.progress` (display), :mod:`.demo` (the built-in demo).
"""

from __future__ import annotations

from .contacts import ContactRow, ContactsError, read_contacts
from .hours import CallingHours
from .journal import Journal, JournalError, JournalMismatchError
from .redial import RedialPolicy
from .runner import Campaign, default_paths
from .summary import CampaignProgress, CampaignSummary
from .suppression import SuppressionError, SuppressionList

__all__ = [
    "CallingHours",
    "Campaign",
    "CampaignProgress",
    "CampaignSummary",
    "ContactRow",
    "ContactsError",
    "Journal",
    "JournalError",
    "JournalMismatchError",
    "RedialPolicy",
    "SuppressionError",
    "SuppressionList",
    "default_paths",
    "read_contacts",
]
