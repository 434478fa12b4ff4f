"""Campaigns: dial every contact of a CSV or JSONL file, with a journal that
makes the run resumable without ever phoning a person twice.

::

    from voicehub_async import Campaign, VoiceHubClient

    async with VoiceHubClient(max_connections=100) as client:
        summary = await Campaign(client, "contacts.csv", agent_id="agent-1").run()

Modules: :mod:`.contacts` (streaming reader), :mod:`.journal` (SQLite) and
:mod:`.groupcommit` (batched commits), :mod:`.hours` (calling hours),
:mod:`.runner` (:class:`Campaign`), :mod:`.results` (results file),
:mod:`.summary` (progress and summary values), :mod:`.progress` (display),
:mod:`.demo` (the built-in demo).
"""

from __future__ import annotations

from .contacts import ContactRow, ContactsError, read_contacts
from .hours import CallingHours
from .journal import Journal, JournalError, JournalMismatchError
from .runner import Campaign, default_paths
from .summary import CampaignProgress, CampaignSummary

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
    "default_paths",
    "read_contacts",
]
