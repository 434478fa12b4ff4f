"""What the layers above the client use of it, as small Protocols.

The status poller depends on these rather than on
:class:`~voicehub_async.VoiceHubClient`, so that nothing below the client's
front doors (``client.trigger_and_wait()``) imports the client: no import
circle, and a test can hand in a fake. Only :mod:`voicehub_async.models` and
:mod:`voicehub_async.config` are named here, both lower still.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .config import TimeoutTypes
    from .models import Call, CallRequest

__all__ = ["StatusReader", "TriggerAndWaitClient"]


class StatusReader(Protocol):
    """What a :class:`~voicehub_async.StatusPoller` needs: read one call's status.

    The read is retried by the client as it sees fit (``max_retries``); the
    poller only decides when to read again.
    """

    async def get_call(
        self,
        call_id: str,
        *,
        timeout: TimeoutTypes | None = None,
        max_retries: int | None = None,
    ) -> Call:
        """The call's current status; NotFoundError for an id the service does not know."""
        ...


class TriggerAndWaitClient(StatusReader, Protocol):
    """What :func:`~voicehub_async.poller.trigger_and_wait` needs: validate,
    trigger once (never re-sending an ambiguous trigger), then read."""

    def prepare(self, request: CallRequest) -> CallRequest:
        """``request`` validated and normalised; raises InvalidRequestError."""
        ...

    async def trigger(self, request: CallRequest, *, prepared: bool = ...) -> Call:
        """Place the call ``request`` describes (``prepared``: it came out of
        :meth:`prepare`, do not check it again)."""
        ...
