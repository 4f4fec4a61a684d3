"""When a step acts: the end of a wait, or the next moment a send is allowed, per customer time zone.

Decided in Python once per distinct time zone of the base (a handful) and
written into SQL as ``CASE customer.timezone WHEN ... THEN <moment>``, as the
selection decides open windows (audiences.step_conditions.open_condition): one
statement moves every entry, and the calendar arithmetic (weekdays, local
times across a DST change) stays in zoneinfo rather than in two SQL dialects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, case, literal

from audiences.policy import ChannelPolicy, zone
from core.models import JourneyEntry
from core.spec import WEEKDAYS
from core.spec_steps import WaitAction

MOMENT = JourneyEntry.__table__.c.due_at.type
RETRY_EVERY = timedelta(hours=1)  # a capped send is tried again this often (up to max_delay_hours)


def wait_end(wait: WaitAction, now: datetime, timezone: str) -> datetime:
    """The end of ``wait`` started at ``now`` for a customer of ``timezone`` (UTC).

    The duration first, then (if given) forward to the next local ``time`` and
    one of ``weekdays``; a moment that already matches is kept.
    """
    tz = zone(timezone)
    local = (now + wait.duration).astimezone(tz)
    if wait.time is None and not wait.weekdays:
        return (now + wait.duration).astimezone(now.tzinfo)
    day, clock = local.date(), (wait.time or local.time().replace(tzinfo=None))
    for _ in range(15):
        candidate = datetime.combine(day, clock, tzinfo=tz)
        on_day = not wait.weekdays or WEEKDAYS[candidate.weekday()] in wait.weekdays
        if on_day and candidate >= local.replace(microsecond=0):
            return candidate.astimezone(now.tzinfo)
        day += timedelta(days=1)
    raise AssertionError("a weekday always comes within a week")  # pragma: no cover


def next_allowed(policy: ChannelPolicy, channels: Iterable[str], now: datetime, timezone: str) -> datetime:
    """The first moment one of ``channels`` opens in ``timezone`` (quiet hours, window, SMS rule)."""
    moments = [policy.next_open(ch, now, timezone) for ch in channels]
    found = [m for m in moments if m is not None]
    return min(found) if found else now + timedelta(days=1)


def per_zone(
    zones: list[str], timezone_col: ColumnElement, moment: Callable[[str], datetime]
) -> ColumnElement:
    """``moment(zone)`` for each customer's zone as one SQL expression (unknown zones: the default)."""
    from core.settings import get_settings

    default = literal(moment(get_settings().default_timezone), MOMENT)
    values = {z: moment(z) for z in zones}
    if len(set(values.values())) <= 1:
        return literal(next(iter(values.values())), MOMENT) if values else default
    return case(*[(timezone_col == z, literal(m, MOMENT)) for z, m in values.items()], else_=default)
