"""The rows an entry writes, shared by the scheduled entry (journeys.engine) and the event entry.

Both select from the audience's candidates (audiences.selection): customers with a reachable
channel of the journey, out of the global control group, not barred by the re-entry rules; the
journey's control group is held out here, for the whole journey (status ``control``, never due).
Only the entry key, when the first step is due and when the customer entered differ.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, case, false, literal, select, true
from sqlalchemy.dialects import postgresql, sqlite

from core.models import EntryStatus
from core.spec import Campaign
from journeys import moments
from journeys.conditions import ENTRY, already_in
from journeys.definition import first_step


def entry_select(
    journey: Campaign,
    cand: Any,
    now: datetime,
    key: ColumnElement,
    due: ColumnElement,
    entered_at: ColumnElement,
) -> Select:
    """journey_entry rows for the candidates ``cand`` (join more tables onto the result as needed)."""
    customer = cand.flag("customer_id")
    control = cand.flag("control") == 1
    moment = literal(now, moments.MOMENT)
    return select(
        literal(journey.name).label("journey"),
        customer.label("customer_id"),
        key.label("entry_key"),
        literal(first_step(journey)).label("step"),
        case((control, literal(str(EntryStatus.control))), else_=literal(str(EntryStatus.active))).label(
            "status"
        ),
        case((control, literal(None, moments.MOMENT)), else_=due).label("due_at"),
        moment.label("since"),
        literal(0).label("moves"),
        case((control, literal(True)), else_=false()).label("in_control"),
        entered_at.label("entered_at"),
        moment.label("updated_at"),
    ).where(cand.any_ok("suppression"), cand.flag("global_control") == 0, ~already_in(journey, now, customer))


def dialect_insert(conn: Connection, table: Any) -> Any:
    """The dialect's INSERT, which has ON CONFLICT on both databases."""
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def insert_entries(conn: Connection, rows: Select) -> None:
    """INSERT ... SELECT, an entry key already present for the customer inserting nothing (idempotent)."""
    sub = rows.subquery("entering")
    conn.execute(
        dialect_insert(conn, ENTRY)
        .from_select([c.name for c in sub.c], select(sub).where(true()))  # SQLite: WHERE before ON CONFLICT
        .on_conflict_do_nothing(index_elements=[ENTRY.c.journey, ENTRY.c.customer_id, ENTRY.c.entry_key])
    )
