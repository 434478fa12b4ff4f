"""What the layers above the client use of it, as small Protocols.

The dispatcher and the status poller depend on these rather than on
:class:`~voicehub_async.VoiceHubClient`, so that nothing below the client's
front doors (``client.dispatch()``, ``client.trigger_and_wait()``) imports
the client: no import circle, and a test can hand in a fake. Only
:mod:`voicehub_async.models`, :mod:`voicehub_async.config`, :mod:`voicehub_async.retry` and
:mod:`voicehub_async.telemetry` are named here, all lower still.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .config import TimeoutTypes
    from .models import Call, CallRequest, PreparedRequest
    from .retry import RetryPolicy
    from .telemetry import Operation, Telemetry

__all__ = ["StatusReader", "TriggerAndWaitClient", "TriggerClient"]


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

    def prepare(self, request: CallRequest) -> PreparedRequest:
        """``request`` validated and normalised; raises InvalidRequestError."""
        ...

    async def trigger(self, request: CallRequest) -> Call:
        """Place the call ``request`` describes (a PreparedRequest is not checked again)."""
        ...


class TriggerClient(Protocol):
    """What a :class:`~voicehub_async.Dispatcher` needs: validate, and send one attempt.

    The dispatcher runs the retries itself (one :class:`~voicehub_async.retry.Attempts`
    per input, from ``retry_policy``), so that a 429 can pause all its workers;
    it sends each attempt with ``trigger(prepared, attempt=n)``.
    """

    @property
    def retry_policy(self) -> RetryPolicy:
        """How failures are classified and retried."""
        ...

    @property
    def closed(self) -> bool:
        """True once the client is closed (nothing can be sent)."""
        ...

    @property
    def telemetry(self) -> Telemetry:
        """Where a dispatch's operations and gauges are recorded (a no-op when off)."""
        ...

    def prepare(self, request: CallRequest) -> PreparedRequest:
        """``request`` validated and normalised; raises InvalidRequestError."""
        ...

    async def trigger(
        self,
        request: CallRequest,
        *,
        timeout: TimeoutTypes | None = None,
        attempt: int | None = None,
        operation: Operation | None = None,
    ) -> Call:
        """With ``attempt=n``: one attempt, never retried, failures raised as they are;
        ``operation``: recorded under the caller's operation (all of one input's attempts)."""
        ...
