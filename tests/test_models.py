"""Models: statuses, validation before sending, and the wire shape of a request."""

from __future__ import annotations

import types
from datetime import datetime, timedelta, timezone
from typing import Any, cast

import phonenumbers
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from voicehub_async import Call, CallRequest, CallStatus, InvalidRequestError, Recordings
from voicehub_async.models import (
    TERMINAL_STATUSES,
    format_scheduled_at,
    make_converter,
    normalize_number,
    prepare_request,
)

NOW = datetime(2030, 6, 1, 12, 0, 30, tzinfo=timezone.utc)
DOCUMENTED = ["queued", "scheduled", "started", "in-progress", *sorted(TERMINAL_STATUSES)]


# -- CallStatus ------------------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["Queued", "queued", "QUEUED", "qUeUeD"])
def test_status_equality_and_hash_ignore_case(spelling: str) -> None:
    status = CallStatus(spelling)
    assert status == CallStatus.QUEUED
    assert hash(status) == hash(CallStatus.QUEUED)
    assert status in {CallStatus.QUEUED}
    assert {status: 1}[CallStatus("queued")] == 1
    assert status.name == "queued"
    assert str(status) == spelling  # kept as it came


@pytest.mark.parametrize("text", ["completed", "Completed", "COMPLETED"])
def test_status_equals_a_plain_string_without_case(text: str) -> None:
    status = CallStatus("Completed")
    assert status == text
    assert text == status
    assert status != "failed"
    assert hash(status) == hash("completed")
    assert status in {"completed"}
    assert status != 3


def test_different_statuses_differ() -> None:
    assert CallStatus("queued") != CallStatus("scheduled")
    assert CallStatus.COMPLETED != CallStatus.FAILED


@pytest.mark.parametrize("name", DOCUMENTED)
def test_documented_statuses_known(name: str) -> None:
    assert CallStatus(name).is_known
    assert CallStatus(name.title()).is_known


@pytest.mark.parametrize(
    ("name", "terminal"),
    [
        ("queued", False),
        ("scheduled", False),
        ("started", False),
        ("in-progress", False),
        ("completed", True),
        ("failed", True),
        ("cancelled", True),
        ("unanswered", True),
        ("busy", True),
        ("Completed", True),
        ("BUSY", True),
    ],
)
def test_is_terminal(name: str, terminal: bool) -> None:
    assert CallStatus(name).is_terminal is terminal
    assert Call(id="c1", status=CallStatus(name)).is_terminal is terminal


def test_constants_match_documentation() -> None:
    constants = [
        CallStatus.QUEUED,
        CallStatus.SCHEDULED,
        CallStatus.STARTED,
        CallStatus.IN_PROGRESS,
        CallStatus.COMPLETED,
        CallStatus.FAILED,
        CallStatus.CANCELLED,
        CallStatus.UNANSWERED,
        CallStatus.BUSY,
    ]
    assert sorted(c.name for c in constants) == sorted(DOCUMENTED)


def test_unknown_status_kept_and_not_terminal() -> None:
    status = CallStatus("Voicemail-Left")
    assert not status.is_known
    assert not status.is_terminal
    assert str(status) == "Voicemail-Left"
    assert status == CallStatus("voicemail-left")
    assert repr(status) == "CallStatus('Voicemail-Left')"


@settings(deadline=None)
@given(st.text())
def test_any_status_string_parses(value: str) -> None:
    converter = make_converter()
    call = converter.structure({"id": "c", "status": value, "type": "voip"}, Call)
    assert str(call.status) == value
    assert call.status == CallStatus(value)
    assert hash(call.status) == hash(CallStatus(value))
    assert call.status.is_terminal == (value.lower() in TERMINAL_STATUSES)


@settings(deadline=None)
@given(st.sampled_from(DOCUMENTED), st.data())
def test_documented_status_any_ascii_case(name: str, data: st.DataObject) -> None:
    flips = data.draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
    spelled = "".join(c.upper() if f else c for c, f in zip(name, flips, strict=True))
    assert CallStatus(spelled) == CallStatus(name)
    assert CallStatus(spelled).is_terminal == (name in TERMINAL_STATUSES)


# -- structuring answers -------------------------------------------------------------


def test_call_structured_from_wire() -> None:
    converter = make_converter()
    raw = {"id": "abc", "status": "Queued", "type": "voip", "extra": {"x": 1}}
    call = converter.structure(raw, Call)
    assert call == Call(id="abc", status=CallStatus.QUEUED, type="voip")
    assert call.raw == raw
    assert call.attempts == 1


@pytest.mark.parametrize(
    "raw", [{"status": "Queued"}, {"id": "x"}, ["x"], "x", None, {"id": "x", "status": 3}]
)
def test_call_structure_refuses_non_call(raw: Any) -> None:
    with pytest.raises(Exception):  # noqa: B017 - any error; the client maps it
        make_converter().structure(raw, Call)


@pytest.mark.parametrize(
    ("raw", "urls"),
    [
        ("https://r.example/a.wav", ("https://r.example/a.wav",)),
        (
            ["https://r.example/a.wav", "https://r.example/b.wav"],
            ("https://r.example/a.wav", "https://r.example/b.wav"),
        ),
        ({"recordings": ["https://r.example/a.wav"]}, ("https://r.example/a.wav",)),
        ({"callId": "c1", "url": "https://r.example/a.wav"}, ("https://r.example/a.wav",)),
        ({"recordings": [{"url": "/recordings/a.wav"}]}, ("/recordings/a.wav",)),
        ({"callId": "c1", "status": "ready", "path": "recordings/c1.wav"}, ("recordings/c1.wav",)),
        ({"id": "c1", "file": "c1.MP3"}, ("c1.MP3",)),
        ({"recordings": []}, ()),
        ("", ()),
        ([], ()),
        (None, ()),
        (["https://r.example/a.wav", "https://r.example/a.wav"], ("https://r.example/a.wav",)),
    ],
)
def test_recordings_every_shape(raw: Any, urls: tuple[str, ...]) -> None:
    recordings = make_converter().structure({"call_id": "c1", "raw": raw}, Recordings)
    assert recordings.call_id == "c1"
    assert recordings.urls == urls
    assert recordings.url == (urls[0] if urls else None)
    assert recordings.raw == raw


# -- phone numbers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "region", "expected"),
    [
        ("(415) 555-0123", "US", "+14155550123"),
        ("415.555.0123", "US", "+14155550123"),
        ("+1 415 555 0123", None, "+14155550123"),
        ("+14155550123", None, "+14155550123"),
        ("+14155550123", "GB", "+14155550123"),
        ("020 7946 0958", "GB", "+442079460958"),
        ("+44 20 7946 0958", "US", "+442079460958"),
    ],
)
def test_normalize_number(value: str, region: str | None, expected: str) -> None:
    assert normalize_number(value, "to", region) == expected


def test_no_country_code_without_region_is_refused() -> None:
    with pytest.raises(InvalidRequestError) as info:
        normalize_number("(415) 555-0123", "to")
    err = info.value
    assert err.field == "to"
    assert err.value == "(415) 555-0123"
    assert "no country code" in str(err)
    assert "default_region" in str(err)
    assert "'(415) 555-0123'" in str(err)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("+1415555012", "not a valid phone number"),
        ("+999 1234567", "unknown country code"),
        ("hello", "not a phone number"),
        ("", "a phone number string is required"),
        ("   ", "a phone number string is required"),
        (None, "a phone number string is required"),
        (14155550123, "a phone number string is required"),
    ],
)
def test_bad_numbers_name_field_and_value(value: Any, reason: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        normalize_number(value, "from_number", "US")
    assert info.value.field == "from_number"
    assert info.value.value == value
    assert reason in str(info.value)
    assert str(info.value).startswith(f"invalid from_number {value!r}")
    assert isinstance(info.value, ValueError)


def _valid_numbers() -> st.SearchStrategy[phonenumbers.PhoneNumber]:
    """Valid numbers: a region's example number with its last digits redrawn."""

    def build(region: str, digits: str) -> phonenumbers.PhoneNumber | None:
        example = phonenumbers.example_number(region)
        if example is None:
            return None
        national = str(example.national_number)
        keep = max(len(national) - len(digits), 1)
        candidate = phonenumbers.PhoneNumber(
            country_code=example.country_code,
            national_number=int(national[:keep] + digits[: len(national) - keep]),
            italian_leading_zero=example.italian_leading_zero,
            number_of_leading_zeros=example.number_of_leading_zeros,
        )
        return candidate if phonenumbers.is_valid_number(candidate) else None

    regions = sorted(phonenumbers.SUPPORTED_REGIONS)
    numbers = st.builds(
        build, st.sampled_from(regions), st.text("0123456789", min_size=1, max_size=4)
    ).filter(lambda n: n is not None)
    return cast("st.SearchStrategy[phonenumbers.PhoneNumber]", numbers)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow],
)
@given(_valid_numbers())
def test_any_valid_number_round_trips(number: phonenumbers.PhoneNumber) -> None:
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    international = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    region = phonenumbers.region_code_for_number(number)
    assume(region not in (None, "001", "ZZ"))
    assert normalize_number(e164, "to") == e164
    assert normalize_number(international, "to") == e164
    assert normalize_number(e164, "to", "US") == e164
    national = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
    assert normalize_number(national, "to", region) == e164


@settings(deadline=None)
@given(st.text(max_size=40))
def test_any_text_is_a_number_or_a_named_error(value: str) -> None:
    try:
        result = normalize_number(value, "to", "US")
    except InvalidRequestError as err:
        assert err.field == "to"
        assert err.value == value
    else:
        assert result.startswith("+")
        assert normalize_number(result, "to") == result


# -- scheduled_at ------------------------------------------------------------------------


def test_format_scheduled_at_is_utc_minutes() -> None:
    plus_two = timezone(timedelta(hours=2))
    when = datetime(2030, 1, 2, 3, 4, 59, tzinfo=plus_two)
    assert format_scheduled_at(when) == "2030-01-02T01:04"
    assert format_scheduled_at(datetime(2030, 1, 1, 1, 0, tzinfo=plus_two)) == "2029-12-31T23:00"


@settings(deadline=None)
@given(
    st.datetimes(
        min_value=datetime(2000, 1, 1),
        max_value=datetime(2200, 1, 1),
        timezones=st.sampled_from([timezone(timedelta(minutes=m)) for m in range(-720, 841, 15)]),
    )
)
def test_format_scheduled_at_property(when: datetime) -> None:
    text = format_scheduled_at(when)
    parsed = datetime.strptime(text, "%Y-%m-%dT%H:%M").replace(tzinfo=timezone.utc)
    assert parsed <= when < parsed + timedelta(minutes=1)


# -- prepare_request -----------------------------------------------------------------------


def _prepare(**fields: Any) -> CallRequest:
    base: dict[str, Any] = {"to": "+14155550123", "agent_id": "agent-1"}
    base.update(fields)
    return prepare_request(CallRequest(**base), default_region=None, now=NOW)


def test_prepare_normalises_numbers() -> None:
    request = prepare_request(
        CallRequest(to="(415) 555-0123", agent_id="a", from_number="415 555 0199"),
        default_region="US",
        now=NOW,
    )
    assert request.to == "+14155550123"
    assert request.from_number == "+14155550199"


@pytest.mark.parametrize("agent_id", ["", "   ", None, 7])
def test_empty_agent_id_refused(agent_id: Any) -> None:
    with pytest.raises(InvalidRequestError) as info:
        _prepare(agent_id=agent_id)
    assert info.value.field == "agent_id"
    assert info.value.value == agent_id
    assert "agent_id" in str(info.value)


@pytest.mark.parametrize("context", [["a"], "name=x", 3, ("a", 1)])
def test_non_mapping_context_refused(context: Any) -> None:
    with pytest.raises(InvalidRequestError) as info:
        _prepare(context=context)
    assert info.value.field == "context"
    assert info.value.value == context
    assert "mapping" in info.value.reason


@pytest.mark.parametrize(
    "context",
    [{"when": datetime(2030, 1, 1)}, {"x": object()}, {"x": float("nan")}, {"x": {1, 2}}],
)
def test_non_json_context_refused(context: Any) -> None:
    with pytest.raises(InvalidRequestError) as info:
        _prepare(context=context)
    assert info.value.field == "context"
    assert "JSON" in info.value.reason


def test_any_mapping_is_a_valid_context() -> None:
    request = _prepare(context=types.MappingProxyType({"name": "Ada"}))
    payload = make_converter().unstructure(request, CallRequest)
    assert payload["context"] == {"name": "Ada"}


def test_naive_datetime_refused() -> None:
    naive = datetime(2031, 1, 1, 9, 0)
    with pytest.raises(InvalidRequestError) as info:
        _prepare(scheduled_at=naive)
    assert info.value.field == "scheduled_at"
    assert info.value.value == naive
    assert "naive" in str(info.value)
    assert "2031" in str(info.value)


@pytest.mark.parametrize(
    "when",
    [
        NOW - timedelta(days=1),
        NOW - timedelta(seconds=1),
        NOW,
        NOW + timedelta(seconds=20),  # still inside the current minute once truncated
    ],
)
def test_past_datetime_refused(when: datetime) -> None:
    with pytest.raises(InvalidRequestError) as info:
        _prepare(scheduled_at=when)
    assert info.value.field == "scheduled_at"
    assert info.value.value == when
    assert "future" in str(info.value)


def test_scheduled_at_not_a_datetime_refused() -> None:
    with pytest.raises(InvalidRequestError) as info:
        _prepare(scheduled_at="2031-01-01T09:00")
    assert info.value.field == "scheduled_at"


def test_next_minute_accepted() -> None:
    request = _prepare(scheduled_at=NOW + timedelta(seconds=31))
    assert request.scheduled_at == NOW + timedelta(seconds=31)


def test_prepare_uses_the_current_time_by_default() -> None:
    with pytest.raises(InvalidRequestError):
        prepare_request(
            CallRequest(
                to="+14155550123",
                agent_id="a",
                scheduled_at=datetime.now(timezone.utc) - timedelta(minutes=5),
            )
        )


# -- the wire shape -------------------------------------------------------------------------


def test_unstructure_is_camel_case_and_omits_none() -> None:
    converter = make_converter()
    full = _prepare(
        context={"name": "Ada"},
        scheduled_at=datetime(2031, 1, 2, 3, 4, tzinfo=timezone(timedelta(hours=2))),
        from_number="+14155550199",
    )
    assert converter.unstructure(full, CallRequest) == {
        "to": "+14155550123",
        "agentId": "agent-1",
        "context": {"name": "Ada"},
        "scheduledAt": "2031-01-02T01:04",
        "from": "+14155550199",
    }
    assert converter.unstructure(_prepare(), CallRequest) == {
        "to": "+14155550123",
        "agentId": "agent-1",
    }
    # An empty context is still a context: only None is omitted.
    assert converter.unstructure(_prepare(context={}), CallRequest)["context"] == {}


def test_call_attempts_not_part_of_equality() -> None:
    assert Call(id="a", status=CallStatus.QUEUED, attempts=3) == Call(
        id="a", status=CallStatus("Queued")
    )
