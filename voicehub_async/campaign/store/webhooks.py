"""Webhooks into the PostgreSQL store: an event reaching ANY worker (or a web
backend) updates the contact, wherever its call was placed.

``StoreStatusSink`` is what a :class:`~voicehub_async.webhooks.WebhookReceiver`
feeds its status events to (its ``poller=`` argument)::

    receiver = WebhookReceiver(secret, poller=StoreStatusSink(store))

Each event is written by call id (:meth:`~.postgres.PostgresStore.record_statuses`:
a row already final is left alone, so a late or repeated event never undoes an
end). An event for a call no row knows, whose ``userNumber`` is the number of a
row left ``ambiguous`` (a number is dialed once per campaign) and that came
after that row's sending mark, resolves the row to that call
(:meth:`~.postgres.PostgresStore.reconcile`): ``reconciled``, then followed to
its end like any call. Events are passed on to a local poller too, when given,
so the worker that placed a call stops polling it early.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from voicehub_async.poller import StatusPoller
    from voicehub_async.webhooks import CallStatusChanged

    from .postgres import PostgresStore

__all__ = ["StoreStatusSink"]


class StoreStatusSink:
    """A receiver's status sink writing into ``store`` (see the module doc)."""

    def __init__(self, store: PostgresStore, poller: StatusPoller | None = None) -> None:
        self.store = store
        self.poller = poller
        #: Events written, and ambiguous rows resolved by one.
        self.written = 0
        self.reconciled = 0

    async def ingest(self, event: CallStatusChanged) -> None:
        when = event.timestamp.timestamp() if event.timestamp is not None else time.time()
        status = event.status
        changed = await self.store.record_statuses(
            [(event.call_id, status.name, status.value, when)]
        )
        self.written += changed
        if not changed and event.user_number:
            row = await self.store.reconcile(event.call_id, event.user_number, event.agent_id, when)
            if row is not None:
                self.reconciled += 1
                # Its current status too (reconciled says how, not where it is).
                await self.store.record_statuses([(event.call_id, status.name, status.value, when)])
        poller = self.poller
        if poller is not None and not poller.closed and event.call_id in poller:
            poller.ingest(event)
