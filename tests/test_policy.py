"""SMS hours, French public holidays, quiet hours and time zones (Paris vs Reunion)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time

from audiences.policy import Window, campaign_policy, easter, french_public_holidays, is_public_holiday
from core.settings import Settings
from core.spec import Campaign

CAMP = Campaign.model_validate({"name": "t", "message": "m"})


def test_easter_and_public_holidays():
    assert [easter(y) for y in (2024, 2025, 2026, 2027)] == [
        date(2024, 3, 31), date(2025, 4, 20), date(2026, 4, 5), date(2027, 3, 28),
    ]  # fmt: skip
    h = french_public_holidays(2026)
    assert len(h) == 11
    assert {
        date(2026, 4, 6),
        date(2026, 5, 14),
        date(2026, 5, 25),
        date(2026, 7, 14),
    } <= h  # Easter Mon, Ascension, Whit Mon
    assert is_public_holiday(date(2026, 12, 20), "Indian/Reunion")
    assert not is_public_holiday(date(2026, 12, 20), "Europe/Paris")


def test_sms_rule_sunday_holidays_and_hours():
    policy = campaign_policy(CAMP, Settings())
    paris = "Europe/Paris"
    assert policy.allowed("sms", datetime(2026, 3, 3, 10, 0, tzinfo=UTC), paris)  # Tuesday 11:00
    assert not policy.allowed("sms", datetime(2026, 3, 8, 10, 0, tzinfo=UTC), paris)  # Sunday
    assert not policy.allowed("sms", datetime(2026, 7, 14, 10, 0, tzinfo=UTC), paris)  # Bastille Day
    assert not policy.allowed("sms", datetime(2026, 5, 25, 10, 0, tzinfo=UTC), paris)  # Whit Monday
    assert policy.allowed("sms", datetime(2026, 5, 26, 10, 0, tzinfo=UTC), paris)
    assert not policy.allowed("sms", datetime(2026, 3, 3, 19, 0, tzinfo=UTC), paris)  # 20:00 local: closed
    assert policy.allowed("sms", datetime(2026, 3, 3, 18, 59, tzinfo=UTC), paris)
    assert "public holiday" in policy.reason("sms", datetime(2026, 7, 14, 10, 0, tzinfo=UTC), paris)
    # e-mail has no window by default; push has quiet hours 21:00-08:00
    assert policy.allowed("email", datetime(2026, 3, 8, 2, 0, tzinfo=UTC), paris)
    assert not policy.allowed("push", datetime(2026, 3, 3, 21, 30, tzinfo=UTC), paris)


def test_reunion_versus_paris_at_the_same_instant():
    policy = campaign_policy(CAMP, Settings())
    at = datetime(2026, 3, 3, 16, 30, tzinfo=UTC)  # Paris 17:30, Reunion 20:30
    assert policy.open_zones("sms", at, ["Europe/Paris", "Indian/Reunion"]) == ["Europe/Paris"]
    morning = datetime(2026, 3, 3, 4, 30, tzinfo=UTC)  # Paris 05:30, Reunion 08:30
    assert policy.open_zones("sms", morning, ["Europe/Paris", "Indian/Reunion"]) == ["Indian/Reunion"]
    # the Paris SMS window opens at 08:00 local = 07:00 UTC
    assert policy.next_open("sms", morning, "Europe/Paris") == datetime(2026, 3, 3, 7, 0, tzinfo=UTC)
    # an unknown zone name behaves like the default zone (Europe/Paris)
    assert policy.open_zones("sms", morning, ["Mars/Olympus"]) == []


def test_campaign_window_and_settings_switch():
    camp = Campaign.model_validate(
        {"name": "t", "message": "m", "sending_window": {"start": "10:00", "end": "12:00", "days": ["tue"]}}
    )
    policy = campaign_policy(camp, Settings(sms_hours_policy=False))
    assert policy.allowed("email", datetime(2026, 3, 3, 9, 30, tzinfo=UTC), "Europe/Paris")  # Tue 10:30
    assert not policy.allowed("email", datetime(2026, 3, 4, 9, 30, tzinfo=UTC), "Europe/Paris")  # Wednesday
    assert policy.allowed("sms", datetime(2026, 3, 3, 9, 30, tzinfo=UTC), "Europe/Paris")
    quiet = Window(time(21), time(8))
    assert quiet.allows(datetime(2026, 3, 3, 23, 0)) and not quiet.allows(datetime(2026, 3, 3, 12, 0))
