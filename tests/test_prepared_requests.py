"""PreparedRequest as a type, the region check, extensions, the number cache, deprecations.

Wire shapes use aioresponses (``mock_aiohttp``); nothing here needs a server.
"""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator

import phonenumbers
import pytest
from aioresponses import aioresponses
from hypothesis import given, settings
from hypothesis import strategies as st
from yarl import URL

from voicehub_async import (
    CallRequest,
    Dispatcher,
    InvalidRequestError,
    PreparedRequest,
    VoiceHubClient,
)
from voicehub_async.models import NumberCache, is_valid_number, normalize_number, prepare_request

BASE = "https://voicehub.dataqueue.ai"
TRIGGER_URL = f"{BASE}/api/v1/calls/api-call"
QUEUED = {"id": "call-1", "status": "Queued", "type": "voip"}


@pytest.fixture
async def client(api_key: str) -> AsyncIterator[VoiceHubClient]:
    async with VoiceHubClient(api_key, default_region="US", max_retries=0) as client:
        yield client


def sent_json(mock: aioresponses) -> list[object]:
    return [call.kwargs["json"] for call in mock.requests.get(("POST", URL(TRIGGER_URL)), [])]


def test_prepare_returns_a_prepared_request_once(client: VoiceHubClient) -> None:
    prepared = client.prepare(CallRequest(to="415-555-0123", agent_id="a"))
    assert isinstance(prepared, PreparedRequest) and isinstance(prepared, CallRequest)
    assert prepared.to == "+14155550123"
    assert client.prepare(prepared) is prepared  # never checked twice
    assert prepare_request(prepared, default_region="GB") is prepared


def test_an_unknown_region_names_default_region() -> None:
    with pytest.raises(InvalidRequestError) as info:
        prepare_request(CallRequest(to="415-555-0123", agent_id="a"), default_region="XX")
    assert info.value.field == "default_region"
    assert "region code" in str(info.value)
    assert "no country code" not in str(info.value)
    # Lower case is a known region written differently, not an error.
    assert prepare_request(CallRequest(to="415-555-0123", agent_id="a"), default_region="us").to
    with pytest.raises(InvalidRequestError) as client_info:
        VoiceHubClient("k", default_region="XX")
    assert client_info.value.field == "default_region"


@pytest.mark.parametrize(
    "value",
    ["+1 415 555 0123 ext. 12", "+1 415 555 0123x12", "+1 415 555 0123;ext=5", "+1 415 555 0123x",
     "+1-415-555-0123 x", "+1 415 555 0123 ext."],
)
def test_extensions_and_trailing_marks_are_refused(value: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        normalize_number(value, "to")
    assert info.value.field == "to"
    assert "a voice call cannot dial an extension" in str(info.value)


def test_plain_numbers_still_pass() -> None:
    assert normalize_number("+1 415 555 0123", "to") == "+14155550123"
    assert normalize_number(" (415) 555-0123 ", "to", "US") == "+14155550123"


def test_the_number_cache_answers_as_normalize_does_and_stays_bounded() -> None:
    cache = NumberCache(size=3)
    numbers = [f"+1415555{i:04d}" for i in range(10)]
    for value in numbers * 2:
        assert cache.normalize(value, "to", None) == normalize_number(value, "to", None)
        assert len(cache) <= 3
    assert cache.normalize("(415) 555-0123", "to", "US") == "+14155550123"
    # Errors are not kept: each names the field it came from.
    for field in ("to", "from_number"):
        with pytest.raises(InvalidRequestError) as info:
            cache.normalize("12", field, None)
        assert info.value.field == field
    with pytest.raises(ValueError):
        NumberCache(size=0)


async def test_a_prepared_request_is_sent_as_it_is(
    client: VoiceHubClient, mock_aiohttp: aioresponses
) -> None:
    # The type is the proof of validation: the client does not check it again.
    mock_aiohttp.post(TRIGGER_URL, payload=QUEUED)
    trusted = PreparedRequest(to="+14155550123", agent_id="a", context={"n": 2**70})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        await client.trigger(trusted)
    assert sent_json(mock_aiohttp) == [
        {"to": "+14155550123", "agentId": "a", "context": {"n": 2**70}}
    ]


async def test_prepared_flag_still_works_with_a_deprecation_warning(
    client: VoiceHubClient, mock_aiohttp: aioresponses
) -> None:
    mock_aiohttp.post(TRIGGER_URL, payload=QUEUED, repeat=True)
    with pytest.warns(DeprecationWarning, match="PreparedRequest"):
        await client.trigger(CallRequest(to="+14155550123", agent_id="a"), prepared=True)
    with pytest.warns(DeprecationWarning, match="PreparedRequest"):
        dispatcher = Dispatcher(
            client, [CallRequest(to="+14155550199", agent_id="a")], prepared=True
        )
    async with dispatcher:
        results = [result async for result in dispatcher]
    assert [result.outcome for result in results] == ["queued"]


async def test_dispatch_does_not_validate_prepared_requests_again(
    client: VoiceHubClient, mock_aiohttp: aioresponses, monkeypatch: pytest.MonkeyPatch
) -> None:
    mock_aiohttp.post(TRIGGER_URL, payload=QUEUED, repeat=True)
    rows = [client.prepare(CallRequest(to=f"415-555-01{i:02d}", agent_id="a")) for i in range(5)]
    import voicehub_async.models as models

    def refuse(*_: object) -> str:
        raise AssertionError("validated twice")

    monkeypatch.setattr(models, "normalize_number", refuse)
    async with client.dispatch(rows, concurrency=2) as dispatcher:
        results = [result async for result in dispatcher]
    assert sorted(r.outcome for r in results) == ["queued"] * 5
    assert sorted(j["to"] for j in sent_json(mock_aiohttp)) == [  # type: ignore[index]
        f"+1415555010{i}" for i in range(5)
    ]


# -- is_valid_number: libphonenumber's answer, computed once --------------------------------


def _sample_numbers() -> list[phonenumbers.PhoneNumber]:
    numbers = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in (
            phonenumbers.PhoneNumberType.FIXED_LINE,
            phonenumbers.PhoneNumberType.MOBILE,
            phonenumbers.PhoneNumberType.TOLL_FREE,
            phonenumbers.PhoneNumberType.PREMIUM_RATE,
            phonenumbers.PhoneNumberType.VOIP,
        ):
            example = phonenumbers.example_number_for_type(region, kind)
            if example is not None:
                numbers.append(example)
                # Neighbours of a valid number: some valid, some not.
                for delta in (1, 7, 10, 1000):
                    numbers.append(
                        phonenumbers.PhoneNumber(
                            country_code=example.country_code,
                            national_number=example.national_number + delta,
                        )
                    )
        invalid = phonenumbers.invalid_example_number(region)
        if invalid is not None:
            numbers.append(invalid)
    for code in phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS:
        example = phonenumbers.example_number_for_non_geo_entity(code)
        if example is not None:
            numbers.append(example)
    return numbers


def test_is_valid_number_agrees_with_libphonenumber_everywhere() -> None:
    numbers = _sample_numbers()
    assert len(numbers) > 3000
    for number in numbers:
        assert is_valid_number(number) == phonenumbers.is_valid_number(number), number


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([1, 7, 44, 47, 61, 262, 290, 358, 590, 599, 33, 49, 999, 800]),
    st.integers(min_value=0, max_value=10**12),
)
def test_is_valid_number_agrees_on_any_digits(code: int, national: int) -> None:
    number = phonenumbers.PhoneNumber(country_code=code, national_number=national)
    assert is_valid_number(number) == phonenumbers.is_valid_number(number)
