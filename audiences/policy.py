"""When a customer may be contacted: sending windows, quiet hours and the French SMS rule.

Why in Python and not in SQL: time zone arithmetic is not portable between
SQLite and PostgreSQL, and a base holds few distinct time zones. Selection asks
this module which of those zones are open at ``now`` for each channel and
filters ``customer.timezone IN (...)`` in SQL: legible and fast.

French public holidays are computed here (Easter-based ones with the
anonymous Gregorian algorithm) because the `holidays` package is not
installed and eleven dates do not justify a dependency.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from core.settings import Settings, get_settings
from core.spec import Campaign

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

# Overseas departments keep their own public holiday (abolition of slavery), found by time zone.
OVERSEAS_HOLIDAYS: dict[str, tuple[int, int]] = {
    "America/Guadeloupe": (5, 27),
    "America/Martinique": (5, 22),
    "America/Cayenne": (6, 10),
    "Indian/Reunion": (12, 20),
    "Indian/Mayotte": (4, 27),
}


def easter(year: int) -> date:
    """Easter Sunday (Gregorian calendar), by the anonymous Gregorian (Meeus/Jones/Butcher) algorithm."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = divmod(b, 4)
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    leap = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * leap) // 451
    month, day = divmod(h + leap - 7 * m + 114, 31)
    return date(year, month, day + 1)


@lru_cache(maxsize=64)
def french_public_holidays(year: int, timezone: str | None = None) -> frozenset[date]:
    """The 11 national public holidays of France, plus the overseas one of ``timezone`` if any."""
    e = easter(year)
    days = {
        date(year, 1, 1),
        e + timedelta(days=1),  # Easter Monday
        date(year, 5, 1),
        date(year, 5, 8),
        e + timedelta(days=39),  # Ascension
        e + timedelta(days=50),  # Whit Monday
        date(year, 7, 14),
        date(year, 8, 15),
        date(year, 11, 1),
        date(year, 11, 11),
        date(year, 12, 25),
    }
    if timezone in OVERSEAS_HOLIDAYS:
        days.add(date(year, *OVERSEAS_HOLIDAYS[timezone]))
    return frozenset(days)


def is_public_holiday(day: date, timezone: str | None = None) -> bool:
    return day in french_public_holidays(day.year, timezone)


@dataclass(frozen=True)
class Window:
    """Allowed local hours and weekdays; ``start > end`` wraps past midnight (quiet hours do)."""

    start: time
    end: time
    days: tuple[str, ...] = WEEKDAYS
    skip_holidays: bool = False
    name: str = "window"

    def allows(self, local: datetime, timezone: str | None = None) -> bool:
        if WEEKDAYS[local.weekday()] not in self.days:
            return False
        if self.skip_holidays and is_public_holiday(local.date(), timezone):
            return False
        t = local.time().replace(tzinfo=None)
        if self.start <= self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end

    def why_not(self, local: datetime, timezone: str | None = None) -> str:
        if WEEKDAYS[local.weekday()] not in self.days:
            return f"{self.name}: {WEEKDAYS[local.weekday()]} is not a sending day"
        if self.skip_holidays and is_public_holiday(local.date(), timezone):
            return f"{self.name}: {local.date().isoformat()} is a public holiday"
        return f"{self.name}: {local:%H:%M} local is outside {self.start:%H:%M}-{self.end:%H:%M}"


@dataclass
class ChannelPolicy:
    """The windows each channel must satisfy (all of them) for a campaign."""

    windows: dict[str, list[Window]] = field(default_factory=dict)

    def allowed(self, channel: str, now: datetime, timezone: str) -> bool:
        local = now.astimezone(zone(timezone))
        return all(w.allows(local, timezone) for w in self.windows.get(channel, []))

    def reason(self, channel: str, now: datetime, timezone: str) -> str | None:
        """Why ``channel`` is closed for this time zone at ``now`` (None if open)."""
        local = now.astimezone(zone(timezone))
        for w in self.windows.get(channel, []):
            if not w.allows(local, timezone):
                return w.why_not(local, timezone)
        return None

    def open_zones(self, channel: str, now: datetime, timezones: Iterable[str]) -> list[str]:
        """The time zone names (as stored on customers) in which ``channel`` may be used at ``now``."""
        return sorted(tz for tz in timezones if self.allowed(channel, now, tz))

    def next_open(self, channel: str, now: datetime, timezone: str, horizon: int = 10) -> datetime | None:
        """The first quarter hour from ``now`` at which the channel opens (UTC), for deferring a send."""
        step = timedelta(minutes=15)
        t = now.replace(second=0, microsecond=0)
        t += timedelta(minutes=(15 - t.minute % 15) % 15)
        for _ in range(horizon * 96):
            if self.allowed(channel, t, timezone):
                return t
            t += step
        return None


@lru_cache(maxsize=1024)
def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def zone(name: str | None) -> ZoneInfo:
    """The customer's zone; an unknown or empty name falls back to the default time zone."""
    found = _zone(name) if name else None
    return found or _zone(get_settings().default_timezone) or ZoneInfo("UTC")


def sms_rule(settings: Settings) -> Window | None:
    """The French commercial SMS rule from settings (None when switched off)."""
    if not settings.sms_hours_policy:
        return None
    return Window(
        settings.sms_hours_start,
        settings.sms_hours_end,
        tuple(settings.sms_days),
        settings.sms_skip_public_holidays,
        name="SMS hours (Mon-Sat 08:00-20:00, no public holiday)",
    )


def campaign_policy(campaign: Campaign, settings: Settings | None = None) -> ChannelPolicy:
    """Windows per channel: the campaign's sending_window (or default quiet hours) and the SMS rule."""
    settings = settings or get_settings()
    policy = ChannelPolicy({ch: [] for ch in ("email", "sms", "push")})
    sw = campaign.sending_window
    if sw is not None:
        window = Window(sw.start, sw.end, tuple(sw.days), name="sending window")
        for ch in policy.windows:
            policy.windows[ch].append(window)
    else:
        quiet = Window(settings.quiet_hours_end, settings.quiet_hours_start, name="quiet hours")
        for ch in settings.quiet_hours_channels:
            policy.windows.setdefault(ch, []).append(quiet)
    rule = sms_rule(settings)
    if rule is not None:
        policy.windows["sms"].append(rule)
    return policy
