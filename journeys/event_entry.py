"""Entering a journey on customer events: one entry per matching event, in the tick's transaction.

A journey with ``entry: {event: cart_abandoned, where: {...}, delay: 1h}`` reads the events that
arrived since its cursor (``journey_cursor``), keeps the first matching event per customer, and
enters those customers who also match the journey's audience now, with the same control group,
re-entry rules and reach conditions as a scheduled entry (journeys.engine). The entry's key is
``event:<event id>``: the unique (journey, customer, entry key) makes an event that arrives twice,
or is read by two ticks, enter once. ``entered_at`` is the event's time (exits and the conversion
window count from what the customer did); the first step is due at the event's time + ``delay``.

Why the cursor lags by ``LOOKBACK``: on PostgreSQL, an ingestion transaction may commit an event
with a lower id after a tick has read past it; the cursor only moves past events received more
than ``LOOKBACK`` ago, so recent ones are read again (and enter once, by their key).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, func, literal, select

from audiences.event_rules import event_conditions
from audiences.rule_context import RuleContext
from audiences.selection import candidates
from core.models import CustomerEvent, JourneyCursor
from core.spec import Campaign
from core.spec_rules import EventCondition
from journeys.conditions import ENTRY
from journeys.definition import entry_campaign
from journeys.entering import dialect_insert, entry_select, insert_entries

EVENTS = CustomerEvent.__table__
CURSORS = JourneyCursor.__table__
LOOKBACK = timedelta(minutes=2)


def cursor(conn: Connection, journey: str) -> int:
    found = conn.execute(select(CURSORS.c.last_event_id).where(CURSORS.c.journey == journey)).scalar()
    return int(found or 0)


def later(conn: Connection, moment: ColumnElement, delay: timedelta) -> ColumnElement:
    """``moment + delay`` in SQL, stored as the column type stores date-times on each database."""
    if not delay:
        return moment
    seconds = int(delay.total_seconds())
    if conn.dialect.name == "postgresql":
        return moment + func.make_interval(0, 0, 0, 0, 0, 0, seconds)
    return func.strftime("%Y-%m-%d %H:%M:%f000", moment, f"+{seconds} seconds")


def new_events(conn: Connection, journey: Campaign, now: datetime, segments: Any = None) -> Any:
    """The first matching, not yet considered event per known customer: (event id, customer, time, row id)."""
    spec = journey.entry
    ctx = RuleContext(now, segments=segments, bind=conn)
    conds = event_conditions(EventCondition(name=spec.event, where=spec.where), ctx)
    first = (
        select(EVENTS.c.customer_id, func.min(EVENTS.c.id).label("row_id"))
        .where(
            EVENTS.c.customer_id.is_not(None),
            EVENTS.c.occurred_at <= literal(now, EVENTS.c.occurred_at.type),
            EVENTS.c.id > cursor(conn, journey.name),  # a range of the primary key: only new rows
            *conds,
        )
        .group_by(EVENTS.c.customer_id)
        .subquery("first_event")
    )
    return (
        select(first.c.customer_id, first.c.row_id, EVENTS.c.event_id, EVENTS.c.occurred_at)
        .join_from(first, EVENTS, EVENTS.c.id == first.c.row_id)
        .subquery("new_events")
    )


def enter_on_events(conn: Connection, journey: Campaign, now: datetime, segments: Any = None) -> int:
    """Enter the customers whose events arrived since the cursor; return how many entered now."""
    events = new_events(conn, journey, now, segments)
    cand = candidates(
        entry_campaign(journey), now, bind=conn, window=False, segments=segments,
        among=select(events.c.customer_id),
    )  # fmt: skip
    key = literal("event:") + events.c.event_id
    due = later(conn, events.c.occurred_at, journey.entry.delay_time)
    rows = entry_select(journey, cand, now, key, due, events.c.occurred_at).join_from(
        cand.sub, events, events.c.customer_id == cand.flag("customer_id")
    )
    before = _count(conn, journey.name)
    insert_entries(conn, rows)
    move_cursor(conn, journey.name, now)
    return _count(conn, journey.name) - before


def _count(conn: Connection, journey: str) -> int:
    return conn.execute(select(func.count()).where(ENTRY.c.journey == journey)).scalar_one()


def move_cursor(conn: Connection, journey: str, now: datetime) -> None:
    """Past every event received before the look-back: those were all considered by now."""
    settled = (
        select(func.max(EVENTS.c.id))
        .where(
            EVENTS.c.id > cursor(conn, journey),  # only the rows read since the last move
            EVENTS.c.received_at <= literal(now - LOOKBACK, EVENTS.c.received_at.type),
        )
        .scalar_subquery()
    )
    last = conn.execute(select(func.coalesce(settled, 0))).scalar_one()
    if last <= cursor(conn, journey):
        return
    stmt = dialect_insert(conn, CURSORS).values(journey=journey, last_event_id=last, updated_at=now)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[CURSORS.c.journey], set_={"last_event_id": last, "updated_at": now}
        )
    )
