"""Entering customers into a journey and advancing every due entry, set-based, in the caller's transaction.

One tick per journey (journeys.tick wraps this in a transaction per journey):

1. exits first: due entries meeting an `exit_when` test, or standing on a step
   the file no longer has, leave with that reason;
2. then each step in turn moves ITS due entries with a few statements: a
   history INSERT ... SELECT and an UPDATE with the same guard (journey, step,
   status 'active', due_at <= now), so an entry moves at most once per due
   step, whatever crashes around it (both statements commit together or not);
3. an entry arriving at a step that acts now (anything but a wait) is due at
   once: passes repeat until nothing is due, so e-mail -> branch -> SMS
   happens in one tick; a cycle must contain a wait (validate refuses it), and
   passes are bounded by the number of steps anyway.

Send steps write ledger rows (journeys.sends); nothing here calls a provider:
``relance plan`` runs ``enter`` + ``advance`` in a transaction it rolls back.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    ColumnElement,
    Connection,
    and_,
    func,
    insert,
    literal,
    select,
    text,
    update,
)

from audiences import assign
from audiences.rule_context import CUSTOMER
from audiences.selection import candidates
from audiences.step_conditions import customer_timezones
from core.models import EntryStatus, JourneyStepLog
from core.settings import get_settings
from core.spec import Campaign, kind_of
from journeys import conditions, moments
from journeys.definition import entry_campaign, first_step, following, journey_channels, kinds, steps_of
from journeys.entering import entry_select, insert_entries
from journeys.event_entry import EVENTS, cursor, enter_on_events
from journeys.sends import act_send

ENTRY = conditions.ENTRY
HISTORY = JourneyStepLog.__table__
ACTIVE = str(EntryStatus.active)
# Entries arrived at steps acting now in this transaction before PostgreSQL re-reads journey_entry's
# statistics (Mover.refresh_statistics): below this, a misplanned nested loop costs milliseconds.
ANALYZE_AFTER = 2000
HISTORY_COLUMNS = ["entry_id", "move", "journey", "step", "kind", "outcome", "detail", "run_id", "at"]


@dataclass
class Advanced:
    """What one advance did: moves per (step, outcome), sends deferred per step, send runs created."""

    journey: str
    moves: Counter = field(default_factory=Counter)
    deferred: Counter = field(default_factory=Counter)
    run_ids: list[int] = field(default_factory=list)
    passes: int = 0
    entered: int = 0  # triggered journeys: customers entered on events by this advance

    @property
    def total(self) -> int:
        return sum(self.moves.values())


def lock_journey(conn: Connection, journey: str) -> None:
    """Serialize ticks of one journey, and make sure what follows is ONE transaction.

    PostgreSQL: a transaction advisory lock per journey. SQLite: ``BEGIN IMMEDIATE`` (the write
    lock up front) unless a transaction is already open. Why: Python's sqlite3 opens a transaction
    only before a statement starting with INSERT, UPDATE or DELETE; the selection's statements
    start with ``WITH``, and run first they would commit on their own (an entry's moves and its
    ledger rows must commit together; the plan must be able to roll everything back).
    """
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:j))"), {"j": f"relance-journey:{journey}"})
    elif conn.dialect.name == "sqlite" and not conn.connection.driver_connection.in_transaction:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def changed(conn: Connection, statement: Any) -> int:
    """Rows an UPDATE changed. Why not ``rowcount`` alone: Python 3.11's sqlite3 reports -1 for a
    statement starting with ``WITH`` (the selection's CTEs come first), so SQLite asks ``changes()``."""
    n = conn.execute(statement).rowcount
    if n < 0 and conn.dialect.name == "sqlite":
        n = conn.exec_driver_sql("SELECT changes()").scalar_one()
    return n


class Mover:
    """The statements that move entries of one journey at one ``now``."""

    def __init__(self, conn: Connection, journey: Campaign, now: datetime, segments: Any = None):
        self.conn, self.journey, self.now, self.segments = conn, journey, now, segments
        self.name = journey.name
        self.kinds = kinds(journey)
        self.following = following(journey)
        self.zones = customer_timezones(conn)
        self.result = Advanced(journey.name)
        self.arrived = 0  # entries moved to a step that acts now, since the statistics were read

    # ---- guards
    def due(self, step: str | None = None) -> ColumnElement:
        conds = [ENTRY.c.journey == self.name, ENTRY.c.status == ACTIVE, ENTRY.c.due_at <= self.moment()]
        if step is not None:
            conds.insert(1, ENTRY.c.step == step)
        return and_(*conds)

    def moment(self) -> ColumnElement:
        return literal(self.now, moments.MOMENT)

    def any_due(self, where: ColumnElement) -> bool:
        """One index look-up (ordered by due_at: see journeys.tick.anything_due)."""
        found = self.conn.execute(select(ENTRY.c.id).where(where).order_by(ENTRY.c.due_at).limit(1))
        return found.first() is not None

    def customer_zone(self, entry: Any = ENTRY) -> ColumnElement:
        return select(CUSTOMER.c.timezone).where(CUSTOMER.c.id == entry.c.customer_id).scalar_subquery()

    # ---- where an arriving entry is due
    def arrival_due(self, target: str, timezone: ColumnElement | None = None) -> ColumnElement:
        """When ``target`` acts for an entry arriving now: at the end of its wait, or now."""
        if self.kinds.get(target) != "wait":
            return self.moment()
        wait = self.journey.step(target).wait
        zone_col = timezone if timezone is not None else self.customer_zone()
        return moments.per_zone(self.zones, zone_col, lambda z: moments.wait_end(wait, self.now, z))

    # ---- the two statements of a move
    def move(
        self,
        where: ColumnElement,
        step: str | ColumnElement,
        kind: str,
        outcome: str | ColumnElement,
        to: str | None,
        *,
        status: str | None = None,
        reason: str | ColumnElement | None = None,
        detail: str | None = None,
        run_id: int | None = None,
    ) -> int:
        """Log the step done and move the entries matching ``where`` to ``to`` (None: they leave).

        Leaving: ``status`` (completed / exited) with ``reason``.
        """
        now = self.moment()
        history = select(
            ENTRY.c.id,
            ENTRY.c.moves,
            literal(self.name),
            step if isinstance(step, ColumnElement) else literal(step),
            literal(kind),
            outcome if isinstance(outcome, ColumnElement) else literal(outcome),
            literal(detail),
            literal(run_id),
            now,
        ).where(where)
        self.conn.execute(insert(HISTORY).from_select(HISTORY_COLUMNS, history))
        values: dict[str, Any] = {"moves": ENTRY.c.moves + 1, "since": now, "updated_at": now}
        if to is None:
            values.update(status=status or str(EntryStatus.completed), due_at=None, exit_reason=reason)
        else:
            values.update(step=to, due_at=self.arrival_due(to))
        moved = changed(self.conn, update(ENTRY).where(where).values(**values))
        if to is not None and self.kinds.get(to) != "wait":
            self.arrived += moved
        if moved:
            where_label = step if isinstance(step, str) else "(journey)"
            self.result.moves[(where_label, outcome if isinstance(outcome, str) else "step removed")] += moved
        return moved

    def defer(self, where: ColumnElement, until: ColumnElement, step: str) -> int:
        """A due send that may not go now: the same step, later (no history row: nothing was done)."""
        n = changed(self.conn, update(ENTRY).where(where).values(due_at=until, updated_at=self.moment()))
        if n:
            self.result.deferred[step] += n
        return n

    def leave(self, where: ColumnElement, reason: str | ColumnElement, step: str | ColumnElement) -> int:
        outcome = reason if isinstance(reason, str) else "step removed"
        return self.move(where, step, "journey", outcome, None, status=str(EntryStatus.exited), reason=reason)

    # ---- exits
    def exits(self) -> None:
        """Due entries meeting an exit test, or on a step the file no longer has, leave first."""
        if not self.any_due(self.due()):
            return
        names = list(self.kinds)
        removed = and_(self.due(), ENTRY.c.step.not_in(names))
        if self.any_due(removed):
            self.leave(removed, literal("step removed: ") + ENTRY.c.step, ENTRY.c.step)
        channels = journey_channels(self.journey)
        for reason, test in conditions.exit_tests(
            self.journey, channels, self.now, self.conn, segments=self.segments
        ):
            self.leave(and_(self.due(), test), reason, ENTRY.c.step)

    # ---- the steps
    def refresh_statistics(self) -> None:
        """PostgreSQL: re-sample journey_entry once many entries arrived at steps acting in this tick.

        Why: the planner reads statistics taken before this transaction, in which a step the
        entries just reached holds none; planned for 1 row, the send and move statements of 15,000
        arrivals ran as quadratic nested loops (20-27 s each at 1M entries, bench/journey_tick.py).
        ANALYZE in the transaction sees its own rows (~0.3 s for 1M entries).
        """
        if self.arrived >= ANALYZE_AFTER and self.conn.dialect.name == "postgresql":
            self.conn.exec_driver_sql(f"ANALYZE {ENTRY.name}")
            self.arrived = 0

    def act(self, step: Any) -> None:
        if not self.any_due(self.due(step.name)):
            return
        self.refresh_statistics()
        kind = kind_of(step)
        if kind == "send":
            act_send(self, step)
        elif kind == "wait":
            self.move(self.due(step.name), step.name, "wait", "waited", self.next_of(step.name))
        elif kind == "branch":
            test = step.branch.if_
            cond = (
                conditions.response_test(self.conn, test)
                if test.audience is None
                else conditions.rule_test(test.audience, self.now, self.conn, segments=self.segments)
            )
            self.move(and_(self.due(step.name), cond), step.name, "branch", "then", step.branch.then)
            self.move(self.due(step.name), step.name, "branch", "else", step.branch.else_)
        elif kind == "split":
            self.split(step)
        else:  # exit
            self.move(self.due(step.name), step.name, "exit", step.exit, None, reason=step.exit)

    def next_of(self, step: str) -> str | None:
        targets = self.following[step]
        return targets[0] if targets else None

    def split(self, step: Any) -> None:
        """Paths by the customer's stable bucket (audiences.assign): the same customer, the same path."""
        bucket = assign.bucket_sql(ENTRY.c.customer_id, assign.salt(self.name, step.name, "split"))
        low = 0.0
        for i, path in enumerate(step.split):
            high = low + path.percent
            last = i == len(step.split) - 1
            cond = (
                bucket >= assign.threshold(low)
                if last
                else and_(bucket >= assign.threshold(low), bucket < assign.threshold(high))
            )
            self.move(and_(self.due(step.name), cond), step.name, "split", path.next, path.next)
            low = high


def advance(conn: Connection, journey: Campaign, now: datetime, segments: Any = None) -> Advanced:
    """Every due move of ``journey`` at ``now``, in the caller's transaction (no commit, no provider call)."""
    lock_journey(conn, journey.name)
    mover = Mover(conn, journey, now, segments)
    if journey.entry is not None and has_new_events(conn, journey):
        mover.result.entered = enter_on_events(conn, journey, now, segments)
    steps = steps_of(journey)
    for _ in range(len(steps) + 2):
        if not mover.any_due(mover.due()):
            break
        mover.result.passes += 1
        before = mover.result.total + sum(mover.result.deferred.values())
        mover.exits()
        for step in steps:
            mover.act(step)
        if mover.result.total + sum(mover.result.deferred.values()) == before:
            break
    return mover.result


# --------------------------------------------------------------------------
# Entering
# --------------------------------------------------------------------------


def has_new_events(conn: Connection, journey: Campaign) -> bool:
    """Whether events of the journey's entry type arrived past its cursor (an index look-up)."""
    found = conn.execute(
        select(EVENTS.c.id)
        .where(EVENTS.c.id > cursor(conn, journey.name), EVENTS.c.type == journey.entry.event)
        .limit(1)
    ).first()
    return found is not None


def default_entry_key(journey: Campaign, now: datetime) -> str:
    """``name:YYYY-MM-DD`` in the journey's time zone: a scheduled entry enters a customer once a day."""
    tz = journey.schedule.timezone if journey.schedule else get_settings().default_timezone
    return f"{journey.name}:{now.astimezone(ZoneInfo(tz)).date().isoformat()}"


def entry_rows(conn: Connection, journey: Campaign, now: datetime, key: str, segments: Any = None) -> Any:
    """The rows a scheduled entry inserts: the audience now, due at the first step's arrival time."""
    cand = candidates(entry_campaign(journey), now, bind=conn, window=False, segments=segments)
    due = Mover(conn, journey, now, segments).arrival_due(first_step(journey), timezone=cand.flag("timezone"))
    moment = literal(now, moments.MOMENT)
    return entry_select(journey, cand, now, literal(key), due, moment)


def enter(
    conn: Connection, journey: Campaign, now: datetime, entry_key: str | None = None, segments: Any = None
) -> int:
    """Enter the customers the journey's audience selects now; return how many entered (control included).

    Idempotent per ``entry_key`` (default: one per local day): entering twice inserts nothing.
    """
    lock_journey(conn, journey.name)
    key = entry_key or default_entry_key(journey, now)
    before = conn.execute(
        select(literal(1)).where(ENTRY.c.journey == journey.name, ENTRY.c.entry_key == key).limit(1)
    ).first()
    if before is not None:
        return 0  # this occurrence already entered its customers
    insert_entries(conn, entry_rows(conn, journey, now, key, segments))
    record_control(conn, journey, key)
    return conn.execute(
        select(func.count()).where(ENTRY.c.journey == journey.name, ENTRY.c.entry_key == key)
    ).scalar_one()


def record_control(conn: Connection, journey: Campaign, key: str) -> int:
    """The occurrence's control entries as ``held_out`` ledger rows of a run ``<key>:control``.

    Why in the ledger as well: a campaign's control group lives there (held_out rows), and what
    reads it (priority between campaigns the same day, the window purchases that attribution
    stores for held-out customers, the learning labels, the demo's simulated world) then treats a
    journey's control group as a campaign's, with no second path.
    """
    from delivery import ledger

    control = select(
        ENTRY.c.customer_id,
        literal(journey_channels(journey)[0]).label("channel"),
        literal("control").label("variant"),
        literal(None, ledger.LEDGER.c.message.type).label("message"),
        literal(True).label("in_control"),
        ENTRY.c.id.label("entry_id"),
        literal(None, ledger.LEDGER.c.step.type).label("step"),
    ).where(ENTRY.c.journey == journey.name, ENTRY.c.entry_key == key, ENTRY.c.status == "control")
    if conn.execute(control.limit(1)).first() is None:
        return 0
    run_id = ledger.start_run(conn, journey.name, f"{key}:control")
    recorded = ledger.record_selection(conn, run_id, journey.name, control, get_settings().batch_size)
    ledger.set_run_status(conn, run_id, "completed")
    return recorded
