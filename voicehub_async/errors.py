"""The exception hierarchy.

Every error the SDK raises is a :class:`VoiceHubError`. The split that matters
most to a caller is between errors where *no call was placed* (invalid input,
a refusal by the service, a failure to connect) and :class:`AmbiguousTriggerError`,
where a call *may* have been placed: a trigger is not idempotent, so that case
is never retried silently and is reported as such.

No exception ever holds the API key: messages are built from the method,
the path, the status and the (truncated) body the service answered, and an
error that keeps the answer (:class:`APIStatusError`,
:class:`UnexpectedResponseError`) is given the key (``secret=``) and removes
it from everything it keeps, its message, body and headers (names and
values) alike, in its constructor: some services echo a refused key in the
body or in a ``WWW-Authenticate`` header, and headers are what people log.
It is the one place that redacts an answer, so no caller can forget a part.

:func:`error_message` is the one reading of what an error body says (JSON,
HTML or plain text, whatever the service answered).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final

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
    "error_message",
    "redact",
    "status_error_class",
]

#: How much of an error body an exception keeps, in characters.
BODY_LIMIT = 2000
#: How much of a message found in an error body an exception keeps.
MESSAGE_LIMIT: Final = 500
#: What stands where the key was.
REDACTED: Final = "<redacted>"

_MESSAGE_KEYS: Final = ("message", "error", "detail", "msg", "error_description", "title")
_TITLE_RE: Final = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)


def redact(text: str, secret: str | None) -> str:
    """``text`` with every occurrence of ``secret`` replaced by ``<redacted>``."""
    if not secret or secret not in text:
        return text
    return text.replace(secret, REDACTED)


def _redact_headers(headers: Mapping[str, str] | None, secret: str | None) -> dict[str, str]:
    if not headers:
        return {}
    if not secret:
        return dict(headers)
    return {redact(str(k), secret): redact(str(v), secret) for k, v in headers.items()}


def error_message(body: bytes, reason: str | None) -> str:
    """The service's message from an error body: JSON, HTML or plain text.

    Never raises, whatever the body (deep nesting, huge numbers, bytes that
    are not UTF-8): an error must be reportable even when its body is
    garbage. Falls back to ``reason`` (the HTTP reason phrase), then
    ``"error"``; at most :data:`MESSAGE_LIMIT` characters.
    """
    text = body.strip()
    found: str | None = None
    if text.startswith((b"{", b"[")):
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            data = None
        if isinstance(data, Mapping):
            found = _message_of(data)
    elif text.startswith(b"<"):
        match = _TITLE_RE.search(text)
        if match:
            found = match.group(1).decode("utf-8", "replace").strip() or None
    elif text and len(text) <= 200:
        found = text.decode("utf-8", "replace")
    message = found or reason or "error"
    return message if len(message) <= MESSAGE_LIMIT else message[: MESSAGE_LIMIT - 3] + "..."


def _message_of(data: Mapping[str, Any]) -> str | None:
    for key in _MESSAGE_KEYS:
        value = data.get(key)
        if isinstance(value, str) and value:
            return value
        if isinstance(value, Mapping) and isinstance(value.get("message"), str):
            return str(value["message"]) or None
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            # e.g. {"message": ["to must be a phone number", ...]}
            return "; ".join(value)
    return None


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
        try:
            shown = repr(value)
        except Exception:  # RecursionError for a deeply nested value, a broken __repr__
            shown = f"<{type(value).__name__}>"
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
    ``secret`` (the API key) is removed from all of them before they are kept.
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
        secret: str | None = None,
    ) -> None:
        message = redact(message, secret)
        super().__init__(f"{status}: {message}", attempts=attempts)
        self.status = status
        self.message = message
        # Redacted before it is cut: a key across the cut would leave its start.
        self.body = redact(body, secret)[:BODY_LIMIT]
        self.headers: Mapping[str, str] = _redact_headers(headers, secret)
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

    def __init__(
        self,
        status: int,
        message: str,
        body: str = "",
        *,
        attempts: int = 0,
        secret: str | None = None,
    ) -> None:
        super().__init__(f"{status}: {redact(message, secret)}", attempts=attempts)
        self.status = status
        self.body = redact(body, secret)[:BODY_LIMIT]


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
