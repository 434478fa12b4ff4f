"""The values a :class:`~voicehub_async.StatusPoller` hands out: changes,
counters, and the shape of what it ingests.

``lost`` and ``timed_out`` are the two final "statuses" the poller itself
reports (the service never says them); they live here, beside the change that
carries them, so that every module asks ``change.is_final`` the same way.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, Protocol

import attrs

from ..models import Call, CallStatus

__all__ = ["LOST", "TIMED_OUT", "PollerStats", "StatusChange", "StatusEvent"]

#: Reported when the status endpoint keeps answering 404 for a call.
LOST: Final = CallStatus("lost")
#: Reported when a call's ``deadline`` passes before it reached a final status.
TIMED_OUT: Final = CallStatus("timed_out")

@attrs.frozen
class StatusChange:
    """One call moved from ``old`` to ``new`` status.

    ``old`` is None the first time the poller learns a call's status. ``at``
    (UTC) is when the change was observed: the answer of the read, or the
    event's ``timestamp`` for an ingested one. ``call`` is the call as last
    read (or as ingested); for ``lost`` it is the last successful read, if
    any. ``source`` says where the change came from: ``"poll"``, ``"ingest"``
    or ``"poller"`` (``lost``, ``timed_out``, or a call already final when
    tracked).
    """

    call_id: str
    old: CallStatus | None
    new: CallStatus
    at: datetime
    call: Call | None = attrs.field(default=None, repr=False)
    source: str = "poll"

    @property
    def is_lost(self) -> bool:
        """The status endpoint kept answering 404: the service does not know the call."""
        return self.new == LOST

    @property
    def is_timed_out(self) -> bool:
        """The call's deadline passed first; it may still be going on."""
        return self.new == TIMED_OUT

    @property
    def is_final(self) -> bool:
        """The last change the poller reports for this call: a terminal status,
        ``lost`` or ``timed_out``."""
        return self.new.is_terminal or self.is_lost or self.is_timed_out


@attrs.frozen
class PollerStats:
    """Counters of a :class:`StatusPoller`, as a snapshot.

    ``reads`` are status look-ups (``client.get_call``); ``requests`` the HTTP
    requests they took, retries included. ``read_errors`` counts reads that
    failed after the client's retries, 404s excepted (``not_found``).
    """

    tracked: int
    active: int
    reads: int
    requests: int
    read_errors: int
    not_found: int
    changes: int
    ingested: int
    finished: int
    lost: int
    timed_out: int
    buffered: int


class StatusEvent(Protocol):
    """What :meth:`StatusPoller.ingest` needs from a webhook event."""

    @property
    def call_id(self) -> str: ...

    @property
    def status(self) -> CallStatus | str: ...
