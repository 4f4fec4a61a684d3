"""The send ledger: one row per (run, customer, channel), written before any send.

Why the ledger carries exactly-once delivery rather than the scheduler: Prefect
retries a task or a whole flow, and an operator re-runs a killed process; each
of them simply asks the ledger what is left. The rules:

* ``start_run`` keys a run by its occurrence ("winback:2026-11-22"), so running
  the same key again RESUMES the same run.
* ``record_selection`` writes every selected customer in ONE set-based
  ``INSERT ... SELECT`` (control group as ``held_out``), numbers the batches in
  SQL and creates the ``send_batch`` rows, in one transaction; it runs once per
  run (``campaign_run.status`` leaves ``planned``), so a resumed run neither
  inserts twice nor re-numbers batches if the audience changed meanwhile.
* statuses only move forward (``core.models.RANK``, ``tracking.status.advance``); the one sanctioned step
  back is ``requeue_unknown`` on the operator's explicit request.

Functions take a SQLAlchemy Connection and do not commit unless they say so:
the caller's transaction decides what is atomic.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Integer,
    Select,
    and_,
    case,
    cast,
    false,
    func,
    literal,
    select,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from core.models import CampaignRun, LedgerEntry, SendBatch, Status, utcnow

LEDGER = LedgerEntry.__table__
RUNS = CampaignRun.__table__
BATCHES = SendBatch.__table__

CRASH_REASON = "outcome unknown after crash"
CONTROL_REASON = "control group"


class RunError(Exception):
    """A run cannot start or resume as asked; the message says what to do instead."""


def _insert(conn: Connection, table):
    """Dialect insert with ON CONFLICT support (SQLite and PostgreSQL)."""
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def spec_hash(text: str) -> str:
    """Hash of a campaign file's text: a resumed run must run the same campaign."""
    return hashlib.sha256(text.encode()).hexdigest()


# --------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------


def start_run(conn: Connection, campaign: str, key: str, spec_hash: str | None = None) -> int:
    """The id of the run keyed ``key``: created if new, resumed otherwise.

    A key already used by another campaign is an error (two campaigns must never
    share a ledger). A changed spec on resume is allowed but recorded: what was
    already recorded stays as recorded.
    """
    now = utcnow()
    conn.execute(
        _insert(conn, RUNS)
        .values(key=key, campaign=campaign, spec_hash=spec_hash, status="planned", created_at=now)
        .on_conflict_do_nothing(index_elements=[RUNS.c.key])
    )
    row = conn.execute(select(RUNS.c.id, RUNS.c.campaign).where(RUNS.c.key == key)).one()
    if row.campaign != campaign:
        raise RunError(
            f"run key {key!r} belongs to campaign {row.campaign!r}, not {campaign!r}: "
            f"choose another --run-key, e.g. {campaign}:{now.date().isoformat()}"
        )
    conn.execute(update(RUNS).where(RUNS.c.id == row.id, RUNS.c.started_at.is_(None)).values(started_at=now))
    return int(row.id)


def get_run(conn: Connection, key: str) -> Mapping[str, Any] | None:
    row = conn.execute(select(RUNS).where(RUNS.c.key == key)).mappings().one_or_none()
    return dict(row) if row else None


def set_run_status(conn: Connection, run_id: int, status: str, reason: str | None = None) -> None:
    """Run status: planned -> running -> completed, or paused (with a reason) / failed."""
    values: dict[str, Any] = {"status": status, "paused_reason": reason}
    if status == "completed":
        values["finished_at"] = utcnow()
    conn.execute(update(RUNS).where(RUNS.c.id == run_id).values(**values))


def run_status(conn: Connection, run_id: int) -> str:
    return conn.execute(select(RUNS.c.status).where(RUNS.c.id == run_id)).scalar_one()


def is_recorded(conn: Connection, run_id: int) -> bool:
    """Whether the audience of the run is already in the ledger (recording is done once)."""
    return conn.execute(select(RUNS.c.status).where(RUNS.c.id == run_id)).scalar_one() != "planned"


# --------------------------------------------------------------------------
# Recording the audience
# --------------------------------------------------------------------------


def record_selection(
    conn: Connection,
    run_id: int,
    campaign: str,
    selection: Select,
    batch_size: int,
    funnel: Mapping[str, Any] | None = None,
) -> int:
    """Write the selected audience as ledger rows, batches and the run's funnel; return rows inserted.

    ``selection`` has the columns (customer_id, channel, variant, message,
    in_control), and for a journey's send step (entry_id, step). Batches
    are numbered from 1 in SQL over the rows to send,
    ordered by (customer_id, channel); control-group rows are ``held_out`` in
    batch 0, which is never sent. Idempotent: a run already recorded inserts
    nothing (ON CONFLICT DO NOTHING guards the unique key as well).
    """
    if batch_size < 1:
        raise RunError(f"batch_size must be at least 1 (RELANCE_BATCH_SIZE), not {batch_size}")
    if is_recorded(conn, run_id):
        return 0
    now = utcnow()
    sel = selection.subquery("sel")
    in_control = func.coalesce(sel.c.in_control, false())
    position = func.row_number().over(partition_by=in_control, order_by=(sel.c.customer_id, sel.c.channel))
    batch = case(
        (in_control, literal(0)),
        else_=cast((position - 1) // batch_size, Integer) + 1,
    )
    ts = LEDGER.c.created_at.type
    journey = [sel.c.entry_id, sel.c.step] if "entry_id" in sel.c else []
    rows = select(
        literal(run_id).label("run_id"),
        literal(campaign).label("campaign"),
        sel.c.customer_id,
        sel.c.channel,
        sel.c.variant,
        sel.c.message,
        in_control.label("in_control"),
        batch.label("batch"),
        case((in_control, literal(str(Status.held_out))), else_=literal(str(Status.planned))).label("status"),
        case((in_control, literal(CONTROL_REASON)), else_=None).label("reason"),
        literal(0).label("attempts"),
        literal(now, ts).label("created_at"),
        literal(now, ts).label("updated_at"),
        *journey,
    ).where(true())  # SQLite needs a WHERE before ON CONFLICT in INSERT ... SELECT
    columns = [
        "run_id", "campaign", "customer_id", "channel", "variant", "message", "in_control",
        "batch", "status", "reason", "attempts", "created_at", "updated_at",
    ] + (["entry_id", "step"] if journey else [])  # fmt: skip
    conn.execute(
        _insert(conn, LEDGER)
        .from_select(columns, rows)
        .on_conflict_do_nothing(index_elements=[LEDGER.c.run_id, LEDGER.c.customer_id, LEDGER.c.channel])
    )
    # rowcount of INSERT ... SELECT is -1 with psycopg: count what the run holds (recorded once)
    inserted = conn.execute(select(func.count()).where(LEDGER.c.run_id == run_id)).scalar_one()
    batches = (
        select(LEDGER.c.run_id, LEDGER.c.batch, literal("pending").label("status"))
        .where(LEDGER.c.run_id == run_id, LEDGER.c.batch > 0)
        .group_by(LEDGER.c.run_id, LEDGER.c.batch)
    )
    conn.execute(
        _insert(conn, BATCHES)
        .from_select(["run_id", "batch", "status"], batches)
        .on_conflict_do_nothing(index_elements=[BATCHES.c.run_id, BATCHES.c.batch])
    )
    values: dict[str, Any] = {"status": "running"}
    if funnel is not None:
        values["funnel"] = json.dumps(funnel, default=str)
        if funnel.get("models"):  # the model versions that chose this audience, for the report
            values["models"] = json.dumps(funnel["models"], default=str)
    conn.execute(update(RUNS).where(RUNS.c.id == run_id).values(**values))
    return int(inserted or 0)


# --------------------------------------------------------------------------
# Send outcomes (forward moves of events are tracking.status.advance)
# --------------------------------------------------------------------------


def record_results(conn: Connection, results: Iterable[Mapping[str, Any]]) -> int:
    """Write provider outcomes (ledger_id, status, provider, provider_message_id, reason, attempts,
    cost_units) for rows in ``sending``; executemany, forward-only. Return rows written."""
    now = utcnow()
    params = [
        {
            "b_id": r["ledger_id"],
            "b_status": str(r["status"]),
            "b_provider": r.get("provider"),
            "b_pmid": r.get("provider_message_id"),
            "b_reason": r.get("reason"),
            "b_attempts": r.get("attempts") or 1,
            "b_cost": r.get("cost_units"),
            "b_sent_at": now if str(r["status"]) == Status.sent else None,
            "b_now": now,
        }
        for r in results
    ]
    if not params:
        return 0
    from sqlalchemy import bindparam

    stmt = (
        update(LEDGER)
        .where(LEDGER.c.id == bindparam("b_id"), LEDGER.c.status == str(Status.sending))
        .values(
            status=bindparam("b_status"),
            provider=bindparam("b_provider"),
            provider_message_id=bindparam("b_pmid"),
            reason=bindparam("b_reason"),
            attempts=LEDGER.c.attempts - 1 + bindparam("b_attempts", type_=Integer),
            cost_units=bindparam("b_cost"),
            sent_at=bindparam("b_sent_at", type_=LEDGER.c.sent_at.type),
            updated_at=bindparam("b_now", type_=LEDGER.c.updated_at.type),
        )
    )
    conn.execute(stmt.execution_options(synchronize_session=False), params)
    return len(params)


def mark_unknown_after_crash(conn: Connection, run_id: int, batch: int | None = None) -> int:
    """Rows left in ``sending`` by a dead process become ``unknown``: never re-sent blindly."""
    where = [LEDGER.c.run_id == run_id, LEDGER.c.status == str(Status.sending)]
    if batch is not None:
        where.append(LEDGER.c.batch == batch)
    return conn.execute(
        update(LEDGER)
        .where(*where)
        .values(status=str(Status.unknown), reason=CRASH_REASON, updated_at=utcnow())
    ).rowcount


def reopen_batches(conn: Connection, run_id: int) -> int:
    """Batches marked done that hold planned rows again (settled as never sent) go back to pending."""
    planned = (
        select(LEDGER.c.batch)
        .where(LEDGER.c.run_id == run_id, LEDGER.c.status == str(Status.planned))
        .distinct()
        .scalar_subquery()
    )
    reopened = conn.execute(
        update(BATCHES)
        .where(BATCHES.c.run_id == run_id, BATCHES.c.status == "done", BATCHES.c.batch.in_(planned))
        .values(status="pending", claimed_by=None, claimed_at=None, finished_at=None)
    ).rowcount
    if reopened:
        conn.execute(
            update(RUNS)
            .where(RUNS.c.id == run_id, RUNS.c.status == "completed")
            .values(status="running", finished_at=None)
        )
    return reopened


def requeue_unknown(conn: Connection, run_id: int) -> int:
    """Operator's ``--resend-unknown``: unknown rows go back to planned and their batches to pending.

    The one deliberate blind backward move of the ledger, so it is explicit and logged in the
    reason. Call it after the evidence has been read (delivery.reconcile.settle_unknown; webhooks
    settle rows as they arrive): what is left unknown here is truly unknown.
    """
    where = and_(LEDGER.c.run_id == run_id, LEDGER.c.status == str(Status.unknown))
    batches = select(LEDGER.c.batch).where(where).distinct().scalar_subquery()
    conn.execute(
        update(BATCHES)
        .where(BATCHES.c.run_id == run_id, BATCHES.c.batch.in_(batches))
        .values(status="pending", claimed_by=None, claimed_at=None, finished_at=None)
    )
    moved = conn.execute(
        update(LEDGER)
        .where(where)
        .values(
            status=str(Status.planned), reason="resent on operator request (was unknown)", updated_at=utcnow()
        )
    ).rowcount
    if moved:
        conn.execute(update(RUNS).where(RUNS.c.id == run_id).values(status="running", finished_at=None))
    return moved


# --------------------------------------------------------------------------
# What a run did
# --------------------------------------------------------------------------


def counts(conn: Connection, run_id: int) -> dict[tuple[str, str], int]:
    """(channel, status) -> number of ledger rows."""
    rows = conn.execute(
        select(LEDGER.c.channel, LEDGER.c.status, func.count())
        .where(LEDGER.c.run_id == run_id)
        .group_by(LEDGER.c.channel, LEDGER.c.status)
    )
    return {(ch, st): n for ch, st, n in rows}


def unknown_rows(conn: Connection, run_id: int, limit: int = 50) -> list[dict[str, Any]]:
    """Rows whose outcome is unknown, for the report an operator reads (customer ids, no addresses)."""
    rows = conn.execute(
        select(LEDGER.c.id, LEDGER.c.customer_id, LEDGER.c.channel, LEDGER.c.batch, LEDGER.c.reason)
        .where(LEDGER.c.run_id == run_id, LEDGER.c.status == str(Status.unknown))
        .order_by(LEDGER.c.id)
        .limit(limit)
    ).mappings()
    return [dict(r) for r in rows]


def pending_rows(conn: Connection, run_id: int) -> int:
    """Rows not yet in a final status (planned or sending)."""
    return conn.execute(
        select(func.count()).where(
            LEDGER.c.run_id == run_id, LEDGER.c.status.in_([str(Status.planned), str(Status.sending)])
        )
    ).scalar_one()


def finish_if_done(conn: Connection, run_id: int) -> bool:
    """Mark the run completed when every batch is done and no row is left planned or sending."""
    open_batches = conn.execute(
        select(func.count()).where(BATCHES.c.run_id == run_id, BATCHES.c.status != "done")
    ).scalar_one()
    if open_batches or pending_rows(conn, run_id):
        return False
    set_run_status(conn, run_id, "completed")
    return True


def run_datetime(value: str | datetime | None) -> datetime:
    """``--now`` as an aware UTC datetime (naive input is read as UTC)."""
    from datetime import UTC

    if value is None:
        return utcnow()
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError as exc:
            raise RunError(
                f"--now {value!r} is not an ISO date-time: write e.g. 2026-11-22T10:00:00+01:00"
            ) from exc
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
