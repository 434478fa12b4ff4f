"""Typed webhook events and :func:`parse_event`, the one place a POST is judged.

VoiceHub POSTs JSON events to a URL of the customer's with a shared secret in
``x-webhook-secret``. Everything that decides whether a delivery is genuine
and well formed lives here, framework-free, so that the aiohttp handler, the
ASGI app and a caller's own framework all refuse exactly the same things with
exactly the same reasons.

Tolerance follows the API page: ``eventType`` and ``callId`` are required (an
event that names no call cannot be routed); each known event's own payload
field (``status``, ``recordings``, ``analysisResultUrl``) is required because
the typed event would be meaningless without it; every descriptive field
(``agentId``, ``eventId``, ``timestamp``, ...) may be missing and is then
``None``. An ``eventType`` the SDK does not know becomes an
:class:`UnknownEvent` rather than a refusal, so a new event on VoiceHub's side
never makes VoiceHub retry a delivery the receiver cannot accept.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any, ClassVar, Final, TypeAlias

import attrs

from .._iso8601 import parse_iso_datetime
from ..errors import VoiceHubError
from ..models import CallStatus

__all__ = [
    "SECRET_HEADER",
    "AnalysisResultReady",
    "AnyWebhookEvent",
    "CallStatusChanged",
    "RecordingsAvailable",
    "UnknownEvent",
    "WebhookError",
    "WebhookEvent",
    "check_secret",
    "header_value",
    "parse_event",
    "parse_timestamp",
]

logger = logging.getLogger("voicehub_async.webhooks")

#: The header carrying the shared secret (compared without regard to case).
SECRET_HEADER: Final = "x-webhook-secret"

class WebhookError(VoiceHubError):
    """A webhook delivery was refused.

    ``status`` is the HTTP status to answer: 401 for a missing or wrong
    secret (VoiceHub's own deliveries always carry the right one, so this is
    somebody else knocking, or a misconfigured secret), 400 for a body that
    cannot be an event. ``reason`` is safe to send back and to log: it never
    contains the secret.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"webhook refused ({status}): {reason}")
        self.status = status
        self.reason = reason


@attrs.frozen(kw_only=True)
class WebhookEvent:
    """What every VoiceHub webhook event carries.

    ``event_id`` is unique per event but repeated across deliveries of the
    same event (it is the de-duplication key); ``timestamp`` is when VoiceHub
    says the event happened, time-zone aware (a timestamp without a zone is
    taken as UTC, the only reading that does not depend on the receiving
    machine's zone). ``raw`` is the decoded body as received, for fields the
    SDK does not model yet.
    """

    call_id: str
    event_id: str | None = None
    timestamp: datetime | None = None
    raw: Mapping[str, Any] = attrs.field(factory=dict, eq=False, repr=False)


@attrs.frozen(kw_only=True)
class CallStatusChanged(WebhookEvent):
    """A call moved to ``status``: the push counterpart of polling its status."""

    event_type: ClassVar[str] = "CallStatusChanged"

    status: CallStatus
    agent_id: str | None = None
    user_number: str | None = None
    agent_number: str | None = None


@attrs.frozen(kw_only=True)
class RecordingsAvailable(WebhookEvent):
    """The call's recordings are ready; ``recordings`` are their paths or URLs."""

    event_type: ClassVar[str] = "RecordingsAvailable"

    recordings: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class AnalysisResultReady(WebhookEvent):
    """An analysis of the call is ready at ``analysis_result_url``.

    Fetch it with :meth:`VoiceHubClient.get_analysis
    <voicehub_async.VoiceHubClient.get_analysis>`, which sends the API key
    only to the API's own host.
    """

    event_type: ClassVar[str] = "AnalysisResultReady"

    analysis_result_url: str
    analysis_id: str | None = None


@attrs.frozen(kw_only=True)
class UnknownEvent(WebhookEvent):
    """An ``eventType`` this version of the SDK does not model, kept as it came.

    Accepting it (rather than answering 400) stops VoiceHub from retrying a
    delivery that would never succeed, and lets a caller's ``on_event`` read
    ``raw`` until the SDK learns the new type.
    """

    event_type: str


AnyWebhookEvent: TypeAlias = (
    CallStatusChanged | RecordingsAvailable | AnalysisResultReady | UnknownEvent
)


def header_value(headers: Mapping[str, str], name: str) -> str | None:
    """The value of header ``name`` in any mapping, names compared without case.

    A plain dict from a framework may spell a header ``X-Webhook-Secret`` or
    ``x-webhook-secret``; case-insensitive mappings (aiohttp's, Starlette's)
    answer the direct lookup at once.
    """
    value = headers.get(name)
    if value is not None:
        return value
    for key, candidate in headers.items():
        if key.lower() == name:
            return candidate
    return None


def _secrets(secret: str | Iterable[str]) -> tuple[bytes, ...]:
    values = (secret,) if isinstance(secret, str) else tuple(secret)
    if not values or any(not isinstance(v, str) or not v for v in values):
        # An empty secret would accept a request whose header is empty.
        raise ValueError("the webhook secret must be a non-empty string (or several, to rotate)")
    return tuple(v.encode("utf-8") for v in values)


def check_secret(headers: Mapping[str, str], secret: str | Iterable[str]) -> None:
    """Raise :class:`WebhookError` (401) unless ``x-webhook-secret`` matches.

    Compared with :func:`hmac.compare_digest`, so the time taken does not tell
    an attacker how much of a guess was right. Several secrets may be given
    while rotating one: each is compared, and all of them always are, so the
    timing does not tell which one matched either. Neither the expected nor the
    received value is ever logged or put in the error.
    """
    expected = _secrets(secret)
    received = header_value(headers, SECRET_HEADER)
    if received is None:
        reason = f"missing {SECRET_HEADER} header"
        logger.warning("webhook refused (401): %s", reason)
        raise WebhookError(401, reason)
    if isinstance(received, bytes):  # a framework handing raw header values on
        received = received.decode("latin-1")
    given = received.encode("utf-8", "surrogateescape")
    matched = False
    for candidate in expected:
        matched |= hmac.compare_digest(given, candidate)
    if not matched:
        reason = f"wrong {SECRET_HEADER}"
        logger.warning("webhook refused (401): %s (value not logged)", reason)
        raise WebhookError(401, reason)


def parse_timestamp(value: Any) -> datetime:
    """An ISO 8601 timestamp as a time-zone-aware datetime.

    Accepts ``2024-05-01T12:30:00Z``, offsets (``+02:00``, ``+0200``, ``+02``),
    any number of fractional digits (truncated to microseconds), a space for
    ``T``, and a bare date (the SDK's one ISO 8601 parser,
    :func:`voicehub_async._iso8601.parse_iso_datetime`). A timestamp without a
    zone is taken as UTC (VoiceHub documents ISO 8601 but no zone; UTC is the
    only reading that does not depend on where the receiver runs). Anything
    else raises ValueError.
    """
    try:
        when = parse_iso_datetime(value)
    except ValueError as exc:
        raise ValueError(f"timestamp {exc}") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


def _optional_text(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise WebhookError(400, f"{key} must be a string")
    return str(value)


def _required_text(data: Mapping[str, Any], key: str, event_type: str) -> str:
    value = _optional_text(data, key)
    if value is None or not value:
        raise WebhookError(400, f"{event_type} event lacks {key}")
    return value


def _recordings(value: Any) -> tuple[str, ...]:
    # Documented as a list of paths; a single string is accepted too.
    if isinstance(value, str):
        return (value,) if value else ()
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise WebhookError(400, "recordings must be a list of strings")


def _decode(body: bytes) -> Mapping[str, Any]:
    """The body as a JSON object, or WebhookError (400) saying why not.

    Every way ``json.loads`` can refuse bytes is a 400: not JSON, not UTF-8
    (``UnicodeDecodeError``), an integer of more digits than Python converts
    (``ValueError``), and nesting deeper than the interpreter's recursion
    limit (``RecursionError``, which is not a ``ValueError``: ``[`` * 20,000
    used to escape as a 500).
    """
    try:
        data = json.loads(body)
    except UnicodeDecodeError:
        raise WebhookError(400, "body is not UTF-8 JSON") from None
    except RecursionError:
        raise WebhookError(400, "body is nested too deeply") from None
    except ValueError:
        raise WebhookError(400, "body is not JSON") from None
    if not isinstance(data, dict):
        raise WebhookError(400, "body is not a JSON object")
    return data


def parse_event(
    body: bytes,
    headers: Mapping[str, str],
    secret: str | Iterable[str],
) -> AnyWebhookEvent:
    """Authenticate and decode one webhook delivery.

    ``body`` is the raw request body, ``headers`` the request headers (any
    mapping; names compared without regard to case), ``secret`` the shared
    secret configured on the agent (or several, while rotating it).

    The secret is checked first, so nothing of an unauthenticated body is even
    decoded. Raises :class:`WebhookError` with ``status`` 401 (missing or wrong
    secret) or 400 (not JSON, not an object, no ``eventType``/``callId``, a
    known event without its payload field, an unparseable ``timestamp``).
    """
    check_secret(headers, secret)
    data = _decode(body)
    event_type = data.get("eventType")
    if not isinstance(event_type, str) or not event_type:
        raise WebhookError(400, "body lacks eventType")
    call_id = _optional_text(data, "callId")
    if not call_id:
        raise WebhookError(400, "body lacks callId")
    raw_timestamp = data.get("timestamp")
    try:
        timestamp = None if raw_timestamp is None else parse_timestamp(raw_timestamp)
    except ValueError as exc:
        raise WebhookError(400, str(exc)) from None
    common: dict[str, Any] = {
        "call_id": call_id,
        "event_id": _optional_text(data, "eventId"),
        "timestamp": timestamp,
        "raw": data,
    }
    # Compared without regard to case, like statuses: a change of spelling on
    # VoiceHub's side should not turn a known event into an unknown one.
    kind = event_type.lower()
    if kind == "callstatuschanged":
        return CallStatusChanged(
            status=CallStatus(_required_text(data, "status", event_type)),
            agent_id=_optional_text(data, "agentId"),
            user_number=_optional_text(data, "userNumber"),
            agent_number=_optional_text(data, "agentNumber"),
            **common,
        )
    if kind == "recordingsavailable":
        if "recordings" not in data:
            raise WebhookError(400, f"{event_type} event lacks recordings")
        return RecordingsAvailable(recordings=_recordings(data["recordings"]), **common)
    if kind == "analysisresultready":
        return AnalysisResultReady(
            analysis_result_url=_required_text(data, "analysisResultUrl", event_type),
            analysis_id=_optional_text(data, "analysisId"),
            **common,
        )
    return UnknownEvent(event_type=event_type, **common)
