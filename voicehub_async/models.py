"""Value classes for requests and answers, and the one cattrs converter.

The wire is camelCase JSON (``agentId``, ``scheduledAt``, ``from``); Python is
snake_case. Models are small frozen, slotted attrs classes. A request is
validated *before* anything is sent (:func:`prepare_request`), so a bad row
fails fast with an :class:`~voicehub_async.errors.InvalidRequestError` naming
the field, and never costs a request.
"""

from __future__ import annotations

import enum
import itertools
import json
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, ClassVar, Final

import attrs
import cattrs
import orjson
import phonenumbers
from cattrs.gen import make_dict_unstructure_fn, override

from ._time import is_aware
from .errors import InvalidRequestError

__all__ = [
    "Call",
    "CallRequest",
    "CallStage",
    "CallStatus",
    "NumberCache",
    "PreparedRequest",
    "Recordings",
    "TERMINAL_STATUSES",
    "assume_prepared",
    "call_from_json",
    "check_region",
    "dumps_json",
    "trigger_payload",
    "format_scheduled_at",
    "make_converter",
    "normalize_number",
    "prepare_request",
]

#: Statuses after which a call never changes again (lower case).
TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled", "unanswered", "busy"})
_KNOWN_STATUSES = frozenset({"queued", "scheduled", "started", "in-progress"}) | TERMINAL_STATUSES


class CallStage(enum.IntEnum):
    """How far along its life a call is: the one order of call statuses.

    The poller, webhook de-duplication, the load test and the journal all ask
    "is this status further along than that one?"; they ask it here. Stages
    follow the documented lifecycle: a call is scheduled (waiting for its
    time), queued, started (connected, ringing), in progress (talking), then
    ended (any terminal status). A status the documentation does not list has
    no stage (``CallStatus.stage`` is None): see :meth:`CallStatus.may_follow`.
    """

    SCHEDULED = 0
    QUEUED = 1
    STARTED = 2
    IN_PROGRESS = 3
    ENDED = 4


_STAGES: dict[str, CallStage] = {
    "scheduled": CallStage.SCHEDULED,
    "queued": CallStage.QUEUED,
    "started": CallStage.STARTED,
    "in-progress": CallStage.IN_PROGRESS,
    **dict.fromkeys(TERMINAL_STATUSES, CallStage.ENDED),
}


@attrs.frozen(repr=False, eq=False)
class CallStatus:
    """A call's status, compared without regard to case.

    The trigger answers ``Queued``; webhooks say ``queued``: both are the same
    status. A status the documentation does not list is kept as it came
    (``is_known`` is False) and is not terminal, so a new status on the
    service's side never breaks a caller. A plain string compares equal too
    (``call.status == "completed"``), so the natural test is not silently False.
    """

    value: str

    QUEUED: ClassVar[CallStatus]
    SCHEDULED: ClassVar[CallStatus]
    STARTED: ClassVar[CallStatus]
    IN_PROGRESS: ClassVar[CallStatus]
    COMPLETED: ClassVar[CallStatus]
    FAILED: ClassVar[CallStatus]
    CANCELLED: ClassVar[CallStatus]
    UNANSWERED: ClassVar[CallStatus]
    BUSY: ClassVar[CallStatus]

    @property
    def name(self) -> str:
        """The status in lower case, as the webhook page spells it."""
        return self.value.lower()

    @property
    def is_terminal(self) -> bool:
        """True when the call is over and its status will not change again."""
        return self.value.lower() in TERMINAL_STATUSES

    @property
    def is_known(self) -> bool:
        """True for a status the API documentation lists."""
        return self.value.lower() in _KNOWN_STATUSES

    @classmethod
    def documented(cls) -> tuple[CallStatus, ...]:
        """Every status the API documents, in lifecycle order (terminal last)."""
        return (
            cls.SCHEDULED,
            cls.QUEUED,
            cls.STARTED,
            cls.IN_PROGRESS,
            cls.COMPLETED,
            cls.FAILED,
            cls.CANCELLED,
            cls.UNANSWERED,
            cls.BUSY,
        )

    @property
    def stage(self) -> CallStage | None:
        """How far along the call is; None for a status the API does not document."""
        return _STAGES.get(self.value.lower())

    @property
    def is_answered(self) -> bool:
        """True when somebody talked: ``in-progress`` or ``completed``."""
        return self.value.lower() in ("in-progress", "completed")

    @property
    def has_started(self) -> bool:
        """True once the call got at least as far as ``started`` (connected):
        ``started``, ``in-progress`` or ``completed``."""
        return self.value.lower() in ("started", "in-progress", "completed")

    def may_follow(self, previous: CallStatus | None) -> bool:
        """True when this status, reported after ``previous``, does not move
        the call backwards: the one rule for late or out-of-order reports.

        * Nothing follows a terminal status (the call is over; a different
          terminal status reported later is a late or conflicting report).
        * A documented status may follow one of an earlier or the same stage.
        * A status the API does not document is live (not terminal) and of
          unknown order: it may follow any live status, and any status may
          follow it. The API says to keep such statuses, not to guess where
          they belong, so the SDK neither drops them nor lets them hold back
          the statuses that come after.

        The same status twice is not backwards (callers that report changes
        check equality themselves).
        """
        if previous is None:
            return True
        if previous.is_terminal:
            return False
        stage, before = self.stage, previous.stage
        return stage is None or before is None or stage >= before

    def __eq__(self, other: object) -> bool:
        if isinstance(other, CallStatus):
            return self.value.lower() == other.value.lower()
        if isinstance(other, str):
            return self.value.lower() == other.lower()
        return NotImplemented

    def __hash__(self) -> int:
        # Equal to the hash of the lower-case string, as equality requires.
        return hash(self.value.lower())

    def __str__(self) -> str:
        return self.value

    def __repr__(self) -> str:
        return f"CallStatus({self.value!r})"


CallStatus.QUEUED = CallStatus("queued")
CallStatus.SCHEDULED = CallStatus("scheduled")
CallStatus.STARTED = CallStatus("started")
CallStatus.IN_PROGRESS = CallStatus("in-progress")
CallStatus.COMPLETED = CallStatus("completed")
CallStatus.FAILED = CallStatus("failed")
CallStatus.CANCELLED = CallStatus("cancelled")
CallStatus.UNANSWERED = CallStatus("unanswered")
CallStatus.BUSY = CallStatus("busy")


@attrs.frozen
class Call:
    """A call as the service reports it.

    ``raw`` is the answer exactly as received, for fields the SDK does not
    model yet; ``attempts`` is how many requests it took to get it.
    """

    id: str
    status: CallStatus
    type: str | None = None
    raw: Mapping[str, Any] = attrs.field(factory=dict, eq=False, repr=False)
    attempts: int = attrs.field(default=1, eq=False)

    @property
    def is_terminal(self) -> bool:
        return self.status.is_terminal


@attrs.frozen
class Recordings:
    """The recording URL(s) of a call.

    The answer's shape is not documented: a string, a list of strings, or an
    object holding them are all accepted; ``raw`` keeps what came.
    """

    call_id: str
    urls: tuple[str, ...]
    raw: Any = attrs.field(default=None, eq=False, repr=False)

    @property
    def url(self) -> str | None:
        """The first recording URL, or None when there is none yet."""
        return self.urls[0] if self.urls else None


@attrs.frozen
class CallRequest:
    """What to send for one call, as the caller gave it.

    Nothing is checked here, so building one costs nothing; checking and
    normalising happen in :func:`prepare_request`, right before sending, where
    the client's ``default_region`` and the current time are known.
    ``scheduled_at`` must be a time-zone-aware datetime: it is sent in UTC.
    """

    to: str
    agent_id: str
    context: Mapping[str, Any] | None = None
    scheduled_at: datetime | None = None
    from_number: str | None = None


def format_scheduled_at(when: datetime) -> str:
    """``when`` in UTC as ``yyyy-mm-ddThh:mm``, the API's format.

    The API documents no time zone; the SDK always sends UTC, and so refuses
    naive datetimes rather than guess what zone they meant.
    """
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M")


@attrs.frozen
class PreparedRequest(CallRequest):
    """A :class:`CallRequest` that passed :func:`prepare_request`: safe to send as it is.

    Numbers are in E.164, ``scheduled_at`` was in a later minute than "now"
    when it was checked, ``context`` is a JSON object. Made by
    :meth:`~voicehub_async.VoiceHubClient.prepare` (or :func:`prepare_request`),
    never by hand: the type is the proof that validation happened, so the
    client, the dispatcher, the poller and the campaign pass it on without
    checking it again. It is a :class:`CallRequest`, so it goes wherever one goes.
    """


def check_region(region: str | None) -> str | None:
    """``region`` upper-cased if libphonenumber knows it (``"US"``, ``"GB"``), else ValueError.

    Checked once, when the client is made: an unknown region would otherwise
    make every number without a country code fail with a misleading reason.
    The error is an :class:`InvalidRequestError` (a ``ValueError``) naming
    ``default_region``.
    """
    if not region:
        return None
    code = region.strip().upper()
    if code not in phonenumbers.SUPPORTED_REGIONS:
        raise InvalidRequestError(
            "default_region",
            region,
            "not a region code libphonenumber knows; "
            "use a two-letter ISO 3166 code such as 'US' or 'GB'",
        )
    return code


_NO_EXTENSION: Final = (
    "a voice call cannot dial an extension; give the number alone "
    "(the agent can ask for the extension)"
)


def normalize_number(value: Any, field: str, default_region: str | None = None) -> str:
    """``value`` as an E.164 string (``+14155550123``), or InvalidRequestError.

    Parsed and validated with Google's libphonenumber. A number without a
    country code is refused unless ``default_region`` (an ISO country code
    such as ``"US"``) says which country it belongs to. An extension
    (``x12``, ``ext. 12``, ``;ext=12``) is refused, since a voice call cannot
    dial one, and so is anything after the last digit (libphonenumber would
    quietly drop a trailing ``x``).
    """
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequestError(field, value, "a phone number string is required")
    try:
        parsed = phonenumbers.parse(value, default_region)
    except phonenumbers.NumberParseException as exc:
        no_country = exc.error_type == phonenumbers.NumberParseException.INVALID_COUNTRY_CODE
        if no_country and value.lstrip().startswith("+"):
            reason = "unknown country code"
        elif no_country:
            reason = (
                "no country code; write it as +<country code><number>, "
                "or set a default region such as 'US' (the client's default_region, "
                "or --default-region on the command line)"
            )
        else:
            reason = f"not a phone number ({exc._msg})"
        raise InvalidRequestError(field, value, reason) from None
    if parsed.extension:
        raise InvalidRequestError(
            field, value, f"has an extension ({parsed.extension}): {_NO_EXTENSION}"
        )
    if not value.rstrip()[-1].isdigit():
        raise InvalidRequestError(
            field,
            value,
            f"unexpected {value.rstrip()[-1]!r} after the number; if it marks an extension, "
            + _NO_EXTENSION,
        )
    if not is_valid_number(parsed):
        raise InvalidRequestError(field, value, "not a valid phone number")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def is_valid_number(number: phonenumbers.PhoneNumber) -> bool:
    """Exactly :func:`phonenumbers.is_valid_number`, without its work done twice.

    For a country code shared by several regions (+1: the US, Canada and
    the NANP's others; +44, +7, ...), libphonenumber finds the number's
    region by checking the number's type against each region's patterns,
    then validates it for that region by checking the very same type again.
    Here the first check's answer is used; every other case (one region, a
    region found by its leading digits, the non-geographic "001") goes to
    libphonenumber as it is. Same answer for every number (a test compares
    them); a libphonenumber without these internals gets the plain call.
    """
    regions = _COUNTRY_REGIONS.get(number.country_code) if _TYPE_HELPER is not None else None
    if regions is None or len(regions) == 1:
        return bool(phonenumbers.is_valid_number(number))
    nsn = phonenumbers.national_significant_number(number)
    for region in regions:
        metadata = _METADATA.metadata_for_region(region.upper(), None)
        if metadata is None:
            continue
        if metadata.leading_digits is not None or region == _NON_GEO:
            # libphonenumber's own path from here on (is_valid_number's).
            return bool(phonenumbers.is_valid_number(number))
        if _TYPE_HELPER(nsn, metadata) != _UNKNOWN:
            # is_valid_number_for_region(number, region) with the same
            # metadata: the country code check, then this same type check.
            return bool(metadata.country_code == number.country_code)
    return False


def _libphonenumber_internals() -> tuple[Any, Any, Any, Any, str]:
    """The internals :func:`is_valid_number` reads, or Nones if this version lacks them."""
    util: Any = phonenumbers.phonenumberutil
    try:
        return (
            util._number_type_helper,
            util.COUNTRY_CODE_TO_REGION_CODE,
            util.PhoneMetadata,
            util.PhoneNumberType.UNKNOWN,
            util.REGION_CODE_FOR_NON_GEO_ENTITY,
        )
    except AttributeError:  # pragma: no cover - another libphonenumber
        return (None, {}, None, None, "001")


_TYPE_HELPER, _COUNTRY_REGIONS, _METADATA, _UNKNOWN, _NON_GEO = _libphonenumber_internals()


class NumberCache:
    """:func:`normalize_number` that does no work twice for a number seen before.

    Libphonenumber is the main cost of preparing a request; a campaign's
    ``from`` number, a load test's cycled numbers and redials repeat. Only
    successes are kept (an error names the field it came from), for exact
    ``str`` values, keyed by value and region, so the answer is the very one
    :func:`normalize_number` gives. Bounded: at most ``size`` entries, the
    oldest half dropped when it is full, so memory stays flat however many
    numbers pass. One per client; not shared, no global state.
    """

    __slots__ = ("_entries", "_size")

    def __init__(self, size: int = 4096) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self._size = size
        self._entries: dict[tuple[str, str | None], str] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def normalize(self, value: Any, field: str, default_region: str | None) -> str:
        """As :func:`normalize_number`, from the cache when ``value`` was seen."""
        if type(value) is not str:
            return normalize_number(value, field, default_region)
        entries = self._entries
        key = (value, default_region)
        number = entries.get(key)
        if number is None:
            number = normalize_number(value, field, default_region)
            if len(entries) >= self._size:
                # Keep the newer half: O(1) per number on average, and no
                # scan over deleted slots at the front of the dict.
                keep = itertools.islice(entries.items(), len(entries) // 2, None)
                self._entries = entries = dict(keep)
            entries[key] = number
        return number


def _check_context(context: Any) -> Mapping[str, Any] | None:
    if context is None:
        return None
    if not isinstance(context, Mapping):
        raise InvalidRequestError("context", context, "must be a mapping (a JSON object)")
    try:
        # dict(): any Mapping is a JSON object; allow_nan=False: NaN is not JSON.
        json.dumps(dict(context), allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:  # Recursion: nested too deeply
        raise InvalidRequestError("context", context, f"not JSON-serialisable: {exc}") from None
    return context


def _check_scheduled_at(when: Any, now: datetime) -> datetime | None:
    if when is None:
        return None
    if not isinstance(when, datetime):
        raise InvalidRequestError(
            "scheduled_at", when, "must be a time-zone-aware datetime.datetime"
        )
    if not is_aware(when):
        raise InvalidRequestError(
            "scheduled_at",
            when,
            "naive datetime; give it a time zone (for example tzinfo=timezone.utc), "
            "it is sent to the API in UTC",
        )
    # The API takes minutes and refuses the past: a time inside the current
    # minute would be truncated into the past, so require the next minute.
    if when < now + timedelta(seconds=1) or format_scheduled_at(when) <= format_scheduled_at(now):
        raise InvalidRequestError(
            "scheduled_at",
            when,
            "must be in the future, in a later minute than now (the API schedules to the minute)",
        )
    return when


def prepare_request(
    request: CallRequest,
    *,
    default_region: str | None = None,
    now: datetime | None = None,
    numbers: NumberCache | None = None,
) -> PreparedRequest:
    """Check ``request`` and return it normalised (numbers in E.164) as a
    :class:`PreparedRequest`; one that is prepared already is returned as it is.

    Raises :class:`InvalidRequestError` naming the first bad field, or
    ``default_region`` when that is not a region code (checked first: it
    would make every number without a country code fail for the wrong
    reason). ``numbers`` remembers numbers already normalised.
    """
    if isinstance(request, PreparedRequest):
        return request
    region = check_region(default_region)
    if not isinstance(request.agent_id, str) or not request.agent_id.strip():
        raise InvalidRequestError("agent_id", request.agent_id, "a non-empty string is required")
    normalize = normalize_number if numbers is None else numbers.normalize
    to = normalize(request.to, "to", region)
    from_number = request.from_number
    if from_number is not None:
        from_number = normalize(from_number, "from_number", region)
    context = _check_context(request.context)
    scheduled_at = request.scheduled_at
    if scheduled_at is not None:
        scheduled_at = _check_scheduled_at(
            scheduled_at, now if now is not None else datetime.now(timezone.utc)
        )
    return PreparedRequest(
        to=to,
        agent_id=request.agent_id,
        context=context,
        scheduled_at=scheduled_at,
        from_number=from_number,
    )


def assume_prepared(request: CallRequest) -> PreparedRequest:
    """``request`` taken as prepared on the caller's word, unchecked.

    Only for the deprecated ``prepared=True`` flag (one release); new code
    passes what :meth:`~voicehub_async.VoiceHubClient.prepare` returns.
    """
    if isinstance(request, PreparedRequest):
        return request
    return PreparedRequest(
        to=request.to,
        agent_id=request.agent_id,
        context=request.context,
        scheduled_at=request.scheduled_at,
        from_number=request.from_number,
    )


def trigger_payload(request: PreparedRequest) -> dict[str, Any]:
    """The trigger's JSON object for ``request`` (camelCase, unset fields left out).

    Built once per trigger, whatever the number of attempts.
    """
    payload: dict[str, Any] = {"to": request.to, "agentId": request.agent_id}
    if request.context is not None:
        payload["context"] = request.context
    if request.scheduled_at is not None:
        payload["scheduledAt"] = format_scheduled_at(request.scheduled_at)
    if request.from_number is not None:
        payload["from"] = request.from_number
    return payload


def dumps_json(value: Any) -> bytes:
    """``value`` as JSON bytes: orjson, the request bodies' encoder.

    What orjson refuses although ``json`` takes it (an integer beyond 64
    bits, a non-string key, a Mapping that is not a dict: validation used
    ``json``'s rules) is encoded by ``json``, so whatever validation let
    through is sent.
    """
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, allow_nan=False, default=_as_dict).encode()


def _as_dict(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _structure_status(value: Any, _: type) -> CallStatus:
    if not isinstance(value, str):
        raise ValueError(f"status must be a string, got {value!r}")
    return CallStatus(value)


def call_from_json(data: Any) -> Call:
    """A :class:`Call` from the service's JSON answer (ValueError if it is not one)."""
    if not isinstance(data, Mapping) or "id" not in data or "status" not in data:
        raise ValueError("a call needs 'id' and 'status'")
    kind = data.get("type")
    return Call(
        id=str(data["id"]),
        status=_structure_status(data["status"], CallStatus),
        type=None if kind is None else str(kind),
        raw=data,
    )


_AUDIO_SUFFIXES = (".wav", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".webm", ".flac")


def _recording_urls(data: Any) -> list[str]:
    """Every URL-looking string in ``data``, in order, whatever its shape."""
    if isinstance(data, str):
        return [data] if data else []
    if isinstance(data, list):
        return [url for item in data for url in _recording_urls(item)]
    if isinstance(data, Mapping):
        urls: list[str] = []
        for value in data.values():
            if isinstance(value, str):
                # Beside the URLs, the object holds ids and statuses: keep only
                # what looks like a URL or a path ("recordings/x.wav" included).
                if "/" in value or value.lower().endswith(_AUDIO_SUFFIXES):
                    urls.append(value)
            else:
                urls.extend(_recording_urls(value))
        return urls
    return []


def make_converter() -> cattrs.Converter:
    """The converter between the wire (camelCase JSON) and the models.

    One per client, made on construction: no global state.
    """
    converter = cattrs.Converter()
    converter.register_unstructure_hook(datetime, format_scheduled_at)
    converter.register_unstructure_hook(
        CallRequest,
        make_dict_unstructure_fn(
            CallRequest,
            converter,
            _cattrs_omit_if_default=True,
            agent_id=override(rename="agentId"),
            scheduled_at=override(rename="scheduledAt"),
            from_number=override(rename="from"),
        ),
    )
    converter.register_structure_hook(CallStatus, _structure_status)
    converter.register_structure_hook(Call, lambda data, _: call_from_json(data))
    converter.register_structure_hook(
        Recordings,
        lambda data, _: Recordings(
            call_id=str(data["call_id"]),
            urls=tuple(dict.fromkeys(_recording_urls(data["raw"]))),
            raw=data["raw"],
        ),
    )
    return converter
