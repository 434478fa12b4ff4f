"""The one-call case: trigger, then follow that call to its end.

``client.trigger_and_wait()`` is the front door; this is what it runs, with
a poller of concurrency 1 that buffers nothing.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from ..models import Call, CallRequest, format_scheduled_at
from ..protocols import TriggerAndWaitClient
from .core import StatusPoller

__all__ = ["trigger_and_wait"]

async def trigger_and_wait(
    client: TriggerAndWaitClient,
    request: CallRequest,
    *,
    timeout: float | None = None,
    **poller_options: Any,
) -> Call:
    """Trigger one call and follow it to its final status (``client.trigger_and_wait``).

    ``timeout`` (seconds) is the tracking deadline, counted after the trigger:
    when it passes, :class:`CallTimedOutError` is raised; the call was placed
    and may still be going on (its id is in the error). A trigger failure is
    raised as it is (an ambiguous one as
    :class:`~voicehub_async.AmbiguousTriggerError`, never re-sent).
    ``poller_options`` are :class:`StatusPoller` options (``min_interval``, ...).
    """
    poller_options.setdefault("concurrency", 1)
    poller_options["stream_changes"] = False
    prepared = client.prepare(request)
    call = await client.trigger(prepared)
    scheduled_at: datetime | None = None
    if prepared.scheduled_at is not None:
        # The API was told the minute only, and may start the call at its start.
        scheduled_at = datetime.strptime(
            format_scheduled_at(prepared.scheduled_at), "%Y-%m-%dT%H:%M"
        ).replace(tzinfo=timezone.utc)
    async with StatusPoller(client, **poller_options) as poller:
        poller.track(
            call,
            scheduled_at=scheduled_at,
            deadline=None if timeout is None else timedelta(seconds=timeout),
        )
        return await poller.wait(call.id)
