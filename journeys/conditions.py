"""The SQL tests of branches and exits, over ``journey_entry`` rows.

A branch on a response reads what tracking already stored for the messages of
that entry's earlier step (ledger rows carry ``entry_id`` and ``step``): the
ledger status, which human opens, clicks and attributed conversions move
forward (machine opens only prove delivery), or the events themselves when
the test has a time limit. Audience tests and exits compile the campaign
rules (audiences.rules) for the one statement that moves the entries.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, exists, false, func, literal, not_, or_, select

from audiences.rule_context import CUSTOMER, RuleContext, from_clause
from audiences.rules import compile_rule
from core.models import EntryStatus, Event, JourneyEntry, LedgerEntry, Order
from core.spec import Campaign, SegmentRule
from core.spec_steps import BranchTest

ENTRY = JourneyEntry.__table__
LEDGER = LedgerEntry.__table__
EVENTS = Event.__table__
ORDERS = Order.__table__

# Ledger statuses that prove each response (forward-only ranks: clicked implies opened...).
REACHED = {
    "delivered": ("delivered", "opened", "clicked", "converted"),
    "opened": ("opened", "clicked", "converted"),
    "clicked": ("clicked", "converted"),
    "converted": ("converted",),
    "bounced": ("bounced",),
}
# Event types that prove each response within a time limit (human events only for opens and clicks).
PROVING_EVENTS = {
    "delivered": ("delivered", "opened", "clicked", "converted"),
    "opened": ("opened", "clicked", "converted"),
    "clicked": ("clicked", "converted"),
    "converted": ("converted",),
    "bounced": ("bounced",),
    "unsubscribed": ("unsubscribed", "complained"),
}
RESPONDED = "opened"  # no_response: not even an open (so no click and no conversion either)


def _within(conn: Connection, event_at: ColumnElement, sent_at: ColumnElement, hours: int) -> ColumnElement:
    """``event_at <= sent_at + hours`` in the connection's dialect."""
    if conn.dialect.name == "postgresql":
        return event_at <= sent_at + func.make_interval(0, 0, 0, 0, hours)
    return func.julianday(event_at) <= func.julianday(sent_at) + literal(hours / 24.0)


def _step_messages(entry: Any, step: str) -> Any:
    return and_(LEDGER.c.entry_id == entry.c.id, LEDGER.c.step == step)


def response_test(conn: Connection, test: BranchTest, entry: Any = ENTRY) -> ColumnElement:
    """True when the entry's messages of ``test.step`` show ``test.response`` (within the limit)."""
    response = RESPONDED if test.response == "no_response" else test.response
    mine = _step_messages(entry, test.step)
    if test.within_hours is None and response in REACHED:
        found = exists(select(LEDGER.c.id).where(mine, LEDGER.c.status.in_(REACHED[response])))
    else:
        ev = select(EVENTS.c.id).select_from(EVENTS.join(LEDGER, LEDGER.c.id == EVENTS.c.ledger_id))
        conds = [mine, EVENTS.c.type.in_(PROVING_EVENTS[response])]
        if response in ("opened", "clicked"):
            conds.append(EVENTS.c.machine == false())
        if test.within_hours is not None:
            conds.append(_within(conn, EVENTS.c.occurred_at, LEDGER.c.sent_at, test.within_hours))
        found = exists(ev.where(*conds))
    return not_(found) if test.response == "no_response" else found


def rule_test(
    rule: Any, now: datetime, conn: Connection, entry: Any = ENTRY, segments: Any = None
) -> ColumnElement:
    """True when the entry's customer matches an audience rule now (one compiled rule, as a campaign's)."""
    ctx = RuleContext(now, segments=segments, bind=conn)
    cond = compile_rule(rule, ctx)
    members = select(CUSTOMER.c.id).select_from(from_clause(ctx)).where(cond)
    return entry.c.customer_id.in_(members)


def exit_tests(
    journey: Campaign,
    channels: list[str],
    now: datetime,
    conn: Connection,
    entry: Any = ENTRY,
    segments: Any = None,
) -> list[tuple[str, ColumnElement]]:
    """(reason, condition) for each of the journey's `exit_when`, in the order they are checked."""
    from core.spec import ExitWhen

    rules = journey.exit_when or ExitWhen()
    out: list[tuple[str, ColumnElement]] = []
    if rules.converted:
        bought = select(ORDERS.c.id).where(
            ORDERS.c.customer_id == entry.c.customer_id,
            ORDERS.c.ordered_at >= entry.c.entered_at,
            ORDERS.c.ordered_at <= literal(now, ORDERS.c.ordered_at.type),
        )
        # purchases posted to the conversions API reach no `orders` row: attribution's events carry them
        api = select(EVENTS.c.id).where(
            EVENTS.c.customer_id == entry.c.customer_id,
            EVENTS.c.type.in_(("converted", "purchased")),
            EVENTS.c.occurred_at >= entry.c.entered_at,
            EVENTS.c.occurred_at <= literal(now, EVENTS.c.occurred_at.type),
        )
        out.append(("converted", or_(exists(bought), exists(api))))
    if rules.consent_withdrawn:
        reachable = or_(
            *[and_(CUSTOMER.c[f"consent_{ch}"] == 1, CUSTOMER.c[f"suppressed_{ch}"] == 0) for ch in channels]
        )
        unreachable = select(CUSTOMER.c.id).where(CUSTOMER.c.id == entry.c.customer_id, not_(reachable))
        out.append(("consent withdrawn", exists(unreachable)))
    if rules.event:  # e.g. order_placed: the customer did it after entering (audiences/events.yaml)
        from core.models import CustomerEvent

        events = CustomerEvent.__table__
        did = select(events.c.id).where(
            events.c.customer_id == entry.c.customer_id,
            events.c.type == rules.event,
            events.c.occurred_at >= entry.c.entered_at,
            events.c.occurred_at <= literal(now, events.c.occurred_at.type),
        )
        out.append((f"event {rules.event}", exists(did)))
    if rules.left_segment:
        rule = SegmentRule(segment=rules.left_segment)
        out.append((f"left segment {rules.left_segment}", not_(rule_test(rule, now, conn, entry, segments))))
    if rules.left_audience and journey.audience is not None:
        out.append(("left audience", not_(rule_test(journey.audience, now, conn, entry, segments))))
    return out


def already_in(journey: Campaign, now: datetime, customer: ColumnElement) -> ColumnElement:
    """The customer may not enter now: an entry in progress, or the re-entry rule forbids it."""
    mine = ENTRY.c.journey == journey.name
    every = journey.reentry.every_days if journey.reentry is not None else None
    if every is None:  # `once`: any entry ever (control included) keeps the customer out
        blocking = mine
    else:
        recent = ENTRY.c.entered_at > literal(now - timedelta(days=every), ENTRY.c.entered_at.type)
        blocking = and_(mine, or_(ENTRY.c.status == str(EntryStatus.active), recent))
    return customer.in_(select(ENTRY.c.customer_id).where(blocking))
