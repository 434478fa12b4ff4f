"""The exception hierarchy.

Every error the SDK raises is a :class:`VoiceHubError`. The split that matters
most to a caller is between errors where *no call was placed* (invalid input,
a refusal by the service, a failure to connect) and :class:`AmbiguousTriggerError`,
where a call *may* have been placed: a trigger is not idempotent, so that case
is never retried silently and is reported as such.

No exception text ever contains the API key: messages are built from the
method, the path, the status and the (truncated) body the service answered.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AmbiguousTriggerError",
    "AuthenticationError",
    "BadRequestError",
    "InvalidRequestError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "RedirectError",
    "ServerError",
    "UnexpectedResponseError",
    "VoiceHubError",
    "status_error_class",
]

#: How much of an error body an exception keeps, in characters.
BODY_LIMIT = 2000


class VoiceHubError(Exception):
    """Base class of every error raised by ``voicehub_async``.

    ``attempts`` is how many requests were made for the operation that failed
    (0 when nothing was sent).
    """

    attempts: int = 0

    def __init__(self, message: str, *, attempts: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.attempts = attempts


class InvalidRequestError(VoiceHubError, ValueError):
    """A request was refused by the SDK before anything was sent.

    ``field`` names the offending field (``to``, ``agent_id``, ...) and
    ``value`` is the value given, so a caller processing many rows can report
    exactly what was wrong.
    """

    def __init__(self, field: str, value: Any, reason: str) -> None:
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(f"invalid {field} {shown}: {reason}")
        self.field = field
        self.value = value
        self.reason = reason


class APIConnectionError(VoiceHubError):
    """The service could not be reached, or the connection broke.

    ``sent`` tells whether the request may have reached the service: ``False``
    when the connection could not even be opened (safe to retry anything),
    ``True`` when it broke after the request was written.
    """

    def __init__(self, message: str, *, sent: bool, attempts: int = 0) -> None:
        super().__init__(message, attempts=attempts)
        self.sent = sent


class APITimeoutError(APIConnectionError):
    """No answer came in time. ``sent`` as for :class:`APIConnectionError`."""


class APIStatusError(VoiceHubError):
    """The service answered with an error status.

    ``message`` is taken from a JSON body when there is one, ``body`` keeps the
    body itself (truncated), ``headers`` the response headers and
    ``retry_after`` the wait in seconds the service asked for, if any.
    """

    def __init__(
        self,
        status: int,
        message: str,
        body: str = "",
        headers: Mapping[str, str] | None = None,
        *,
        retry_after: float | None = None,
        attempts: int = 0,
    ) -> None:
        super().__init__(f"{status}: {message}", attempts=attempts)
        self.status = status
        self.message = message
        self.body = body[:BODY_LIMIT]
        self.headers: Mapping[str, str] = dict(headers or {})
        self.retry_after = retry_after


class RedirectError(APIStatusError):
    """The service answered with a redirect, which is never followed.

    Following it could send the API key to another host; a redirect from the
    API almost always means a wrong ``base_url``.
    """


class BadRequestError(APIStatusError):
    """400 or 422: the service refused the request as invalid."""


class AuthenticationError(APIStatusError):
    """401: the API key is missing or wrong."""


class PermissionDeniedError(APIStatusError):
    """403: the key may not do this (for example an agent of another account)."""


class NotFoundError(APIStatusError):
    """404: no such call (or recording)."""


class RateLimitError(APIStatusError):
    """429: too many requests. ``retry_after`` is the wait the service asked for."""


class ServerError(APIStatusError):
    """5xx: the service failed. Whether a trigger was processed is unknown,
    except for 503, which the SDK takes as answered before processing."""


class UnexpectedResponseError(VoiceHubError):
    """The service answered success, but not with what the API documents.

    For a trigger this is ambiguous: the call was probably placed, but its id
    is unknown.
    """

    def __init__(self, status: int, message: str, body: str = "", *, attempts: int = 0) -> None:
        super().__init__(f"{status}: {message}", attempts=attempts)
        self.status = status
        self.body = body[:BODY_LIMIT]


class AmbiguousTriggerError(VoiceHubError):
    """A trigger may or may not have placed a call.

    Raised when the outcome of a trigger cannot be known: a read timeout, a
    connection broken after the request was sent, or a 500/502/504. The call
    may exist; re-sending could phone the person twice, so the SDK does not,
    unless the client was made with ``retry_ambiguous_triggers=True``. Look the
    call up in VoiceHub's dashboard (or your webhook events) before retrying.
    ``cause`` is the underlying error.
    """

    def __init__(self, cause: VoiceHubError, *, attempts: int) -> None:
        super().__init__(
            f"the trigger may or may not have placed a call ({cause}); "
            "it was not re-sent, to avoid phoning the person twice",
            attempts=attempts,
        )
        self.cause = cause


_STATUS_CLASSES: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    422: BadRequestError,
    429: RateLimitError,
}


def status_error_class(status: int) -> type[APIStatusError]:
    """The exception class for an HTTP error status."""
    if status >= 500:
        return ServerError
    if 300 <= status < 400:
        return RedirectError
    return _STATUS_CLASSES.get(status, APIStatusError)
