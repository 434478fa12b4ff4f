"""Calling hours, with "now" pinned at zone and day boundaries."""

from __future__ import annotations

from datetime import datetime, time, timezone
from zoneinfo import ZoneInfo

import pytest

from voicehub_async.campaign.hours import CallingHours, parse_calling_hours, zones_for_number
from voicehub_async.errors import InvalidRequestError

UTC = timezone.utc
SAN_FRANCISCO = "+14155550100"  # America/Los_Angeles
NEW_YORK = "+12125550100"  # America/New_York
LONDON = "+442071838750"  # Europe/London
SYDNEY = "+61291234567"  # Australia/Sydney
US_TOLL_FREE = "+18005551234"  # every zone of the NANP, Guam to Newfoundland
MOSCOW_MOBILE = "+79161234567"  # a Russian mobile range spans many zones


def hours(text: str = "09:00-20:00", fallback: str | None = None) -> CallingHours:
    return CallingHours.parse(text, fallback)


def test_parse() -> None:
    assert parse_calling_hours("09:00-20:00") == (time(9), time(20))
    assert parse_calling_hours(" 8:30 - 17:45 ".replace(" 8", "08")) == (time(8, 30), time(17, 45))
    for bad in ("9-20", "09:00", "20:00-20:00", "25:00-26:00"):
        with pytest.raises(ValueError):
            parse_calling_hours(bad)
    with pytest.raises(ValueError, match="unknown time zone"):
        CallingHours.parse("09:00-20:00", "Mars/Olympus")


def test_zones_from_the_number() -> None:
    assert zones_for_number(SAN_FRANCISCO) == ("America/Los_Angeles",)
    assert zones_for_number(LONDON) == ("Europe/London",)
    assert len(zones_for_number(US_TOLL_FREE)) > 10


def test_inside_the_window_calls_now() -> None:
    # 17:00 UTC is 09:00 in San Francisco (PST, January): just opened.
    now = datetime(2030, 1, 15, 17, 0, tzinfo=UTC)
    assert hours().next_allowed(SAN_FRANCISCO, now) is None


def test_one_minute_before_opening_is_scheduled_at_the_opening() -> None:
    now = datetime(2030, 1, 15, 16, 59, tzinfo=UTC)  # 08:59 in San Francisco
    assert hours().next_allowed(SAN_FRANCISCO, now) == datetime(2030, 1, 15, 17, 0, tzinfo=UTC)


def test_the_end_is_excluded_and_the_call_moves_to_the_next_day() -> None:
    # 20:00 in New York (EST) is 01:00 UTC the next day: the window is closed,
    # and the next opening is 09:00 New York time that same (UTC) day.
    now = datetime(2030, 1, 16, 1, 0, tzinfo=UTC)
    assert hours().next_allowed(NEW_YORK, now) == datetime(2030, 1, 16, 14, 0, tzinfo=UTC)
    # One minute earlier it is still 19:59 there: fine.
    assert hours().next_allowed(NEW_YORK, datetime(2030, 1, 16, 0, 59, tzinfo=UTC)) is None


def test_same_instant_different_zones() -> None:
    now = datetime(2030, 1, 15, 12, 0, tzinfo=UTC)  # London 12:00, Sydney 23:00, SF 04:00
    assert hours().next_allowed(LONDON, now) is None
    # Sydney (AEDT, +11 in January): next 09:00 local is 22:00 UTC the same day.
    assert hours().next_allowed(SYDNEY, now) == datetime(2030, 1, 15, 22, 0, tzinfo=UTC)
    assert hours().next_allowed(SAN_FRANCISCO, now) == datetime(2030, 1, 15, 17, 0, tzinfo=UTC)


def test_across_the_date_line_and_new_year() -> None:
    # 31 Dec 23:30 UTC = 1 Jan 10:30 in Sydney: allowed there, on the next year's day.
    now = datetime(2029, 12, 31, 23, 30, tzinfo=UTC)
    assert hours().next_allowed(SYDNEY, now) is None
    # ... and 15:30 in San Francisco: allowed too.
    assert hours().next_allowed(SAN_FRANCISCO, now) is None
    # 31 Dec 09:30 UTC = 20:30 in Sydney: the next opening is 1 Jan 09:00 local.
    late = datetime(2029, 12, 31, 9, 30, tzinfo=UTC)
    assert hours().next_allowed(SYDNEY, late) == datetime(2029, 12, 31, 22, 0, tzinfo=UTC)


def test_daylight_saving_changes_the_utc_opening() -> None:
    # New York opens at 14:00 UTC in winter (EST) and 13:00 UTC in summer (EDT).
    winter = hours().next_allowed(NEW_YORK, datetime(2030, 1, 15, 6, 0, tzinfo=UTC))
    summer = hours().next_allowed(NEW_YORK, datetime(2030, 7, 15, 6, 0, tzinfo=UTC))
    assert winter == datetime(2030, 1, 15, 14, 0, tzinfo=UTC)
    assert summer == datetime(2030, 7, 15, 13, 0, tzinfo=UTC)
    # The night of the spring change (10 March 2030): 09:00 EDT is 13:00 UTC.
    change = hours().next_allowed(NEW_YORK, datetime(2030, 3, 10, 5, 0, tzinfo=UTC))
    assert change == datetime(2030, 3, 10, 13, 0, tzinfo=UTC)


def test_window_over_midnight() -> None:
    night = hours("22:00-06:00")
    assert night.next_allowed(LONDON, datetime(2030, 1, 15, 23, 0, tzinfo=UTC)) is None
    assert night.next_allowed(LONDON, datetime(2030, 1, 15, 5, 59, tzinfo=UTC)) is None
    assert night.next_allowed(LONDON, datetime(2030, 1, 15, 6, 0, tzinfo=UTC)) == datetime(
        2030, 1, 15, 22, 0, tzinfo=UTC
    )


def test_a_number_with_several_zones_must_be_inside_in_all() -> None:
    zones = [ZoneInfo(name) for name in zones_for_number(MOSCOW_MOBILE)]
    assert len(zones) > 1
    wide = hours("08:00-22:00")
    # 06:00 UTC is 09:00 in Moscow but 16:00 in Kamchatka...
    when = wide.next_allowed(MOSCOW_MOBILE, datetime(2030, 1, 15, 6, 0, tzinfo=UTC))
    if when is not None:
        assert wide.allows(when, zones)
    # Whatever is answered is inside the window in every zone.
    for hour in range(24):
        now = datetime(2030, 1, 15, hour, 0, tzinfo=UTC)
        answer = wide.next_allowed(MOSCOW_MOBILE, now)
        assert wide.allows(answer or now, zones)


def test_no_common_time_in_all_zones_is_refused() -> None:
    with pytest.raises(InvalidRequestError, match="all of its time zones"):
        hours("09:00-10:00").next_allowed(US_TOLL_FREE, datetime(2030, 1, 15, 12, 0, tzinfo=UTC))
    # A wide window does fit all of them (Guam's morning is Samoa's noon).
    assert hours().next_allowed(US_TOLL_FREE, datetime(2030, 1, 15, 12, 0, tzinfo=UTC))


def test_unknown_zone_is_refused_unless_a_fallback_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import voicehub_async.campaign.hours as module

    monkeypatch.setattr(module, "zones_for_number", lambda number: ("Etc/Unknown",))
    now = datetime(2030, 1, 15, 3, 0, tzinfo=UTC)
    with pytest.raises(InvalidRequestError, match="--calling-hours-tz"):
        hours().next_allowed(LONDON, now)
    paris = hours(fallback="Europe/Paris")
    assert paris.next_allowed(LONDON, now) == datetime(2030, 1, 15, 8, 0, tzinfo=UTC)


def test_a_wanted_time_outside_the_window_is_moved() -> None:
    now = datetime(2030, 1, 15, 12, 0, tzinfo=UTC)
    inside = datetime(2030, 1, 20, 12, 0, tzinfo=UTC)  # 12:00 in London
    outside = datetime(2030, 1, 20, 23, 0, tzinfo=UTC)  # 23:00 in London
    assert hours().next_allowed(LONDON, now, inside) == inside
    assert hours().next_allowed(LONDON, now, outside) == datetime(2030, 1, 21, 9, 0, tzinfo=UTC)


# -- calling days -----------------------------------------------------------------------------


def test_parse_calling_days() -> None:
    from voicehub_async.campaign.hours import parse_calling_days

    assert parse_calling_days("mon-fri") == {0, 1, 2, 3, 4}
    assert parse_calling_days("Sat,sun") == {5, 6}
    assert parse_calling_days("fri-mon") == {4, 5, 6, 0}
    assert parse_calling_days("monday,wed") == {0, 2}
    for bad in ("", "weekdays", "mon-", "mon-xyz"):
        with pytest.raises(ValueError, match="weekdays"):
            parse_calling_days(bad)


def test_calling_days_move_a_weekend_call_to_monday_in_the_contacts_zone() -> None:
    weekdays = CallingHours.parse("09:00-20:00", days="mon-fri")
    # Saturday 2030-06-01 12:00 in San Francisco.
    saturday = datetime(2030, 6, 1, 12, 0, tzinfo=ZoneInfo("America/Los_Angeles"))
    when = weekdays.next_allowed(SAN_FRANCISCO, saturday)
    assert when == datetime(2030, 6, 3, 9, 0, tzinfo=ZoneInfo("America/Los_Angeles"))
    assert weekdays.what_excludes(SAN_FRANCISCO, saturday) == "calling days"
    # Friday 23:30 in Sydney is already Saturday there... and Friday in London:
    # each contact's own zone decides.
    friday_utc = datetime(2030, 5, 31, 14, 0, tzinfo=UTC)  # Sat 00:00 Sydney, Fri 15:00 London
    assert weekdays.next_allowed(LONDON, friday_utc) is None
    sydney = weekdays.next_allowed(SYDNEY, friday_utc)
    assert sydney is not None and sydney.astimezone(ZoneInfo("Australia/Sydney")).weekday() == 0


def test_calling_days_without_hours_open_the_whole_day() -> None:
    weekends = CallingHours.parse(None, days="sat-sun")
    friday_night = datetime(2030, 5, 31, 23, 59, tzinfo=ZoneInfo("Europe/London"))
    assert weekends.next_allowed(LONDON, friday_night) == datetime(
        2030, 6, 1, 0, 0, tzinfo=ZoneInfo("Europe/London")
    )
    sunday = datetime(2030, 6, 2, 3, 0, tzinfo=ZoneInfo("Europe/London"))
    assert weekends.next_allowed(LONDON, sunday) is None
