"""The errors of waiting for a tracked call, and the one place that turns a
final change into either the call or the error saying why there is none."""

from __future__ import annotations

from ..errors import VoiceHubError
from ..models import Call
from .values import StatusChange

__all__ = [
    "CallLostError",
    "CallTimedOutError",
    "CallTrackingError",
    "WaitTimeoutError",
    "final_result",
]

class CallTrackingError(VoiceHubError):
    """A tracked call did not reach a status of its own.

    Raised by :meth:`StatusPoller.wait` (and ``trigger_and_wait``) for a call
    that ended as ``lost`` or ``timed_out`` (the subclasses), or that was still
    tracked when the poller closed. ``change`` is the final change (None when
    the poller closed first), ``last_call`` the call as last read, if ever.
    """

    def __init__(
        self,
        message: str,
        call_id: str,
        change: StatusChange | None = None,
        last_call: Call | None = None,
    ) -> None:
        super().__init__(message)
        self.call_id = call_id
        self.change = change
        self.last_call = last_call


class CallLostError(CallTrackingError):
    """The status endpoint answered 404 for the call, repeatedly.

    Either the id is wrong (another account's, a typo) or the service
    forgot the call. Nothing was placed by the poller; check the id.
    """


class CallTimedOutError(CallTrackingError):
    """The call's deadline passed before it reached a final status.

    The call may still be going on: it was not cancelled, only no longer
    watched. ``last_call`` tells the last status read.
    """


class WaitTimeoutError(VoiceHubError, TimeoutError):
    """:meth:`StatusPoller.wait`/:meth:`~StatusPoller.wait_all` ran out of time.

    Unlike a deadline, this ends only the wait: the calls stay tracked and can
    be waited for again. Also a :class:`TimeoutError`.
    """


def final_result(change: StatusChange) -> Call:
    """The call of a final change, or the error that says why there is none."""
    if change.is_lost:
        raise CallLostError(
            f"call {change.call_id!r} is lost: the status endpoint kept answering 404 "
            "(a wrong id, or a call of another account?)",
            change.call_id,
            change,
            change.call,
        )
    if change.is_timed_out:
        last = f" (last status read: {change.call.status})" if change.call is not None else ""
        raise CallTimedOutError(
            f"call {change.call_id!r} did not reach a final status before its deadline{last}; "
            "it may still be in progress",
            change.call_id,
            change,
            change.call,
        )
    call = change.call
    assert call is not None, "a terminal change always carries its call"
    return call
