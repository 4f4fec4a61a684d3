"""A tick: advance every due entry of every journey, then send what the advances recorded.

Each journey advances in its own transaction (entries moved and ledger rows
written together), then the journey runs left unfinished (just recorded, or
cut short by a crash or an open circuit breaker) are sent through
delivery.send.work: the claims, outcomes and exactly-once rules of campaign
runs, unchanged. A tick with nothing due and nothing to send is two indexed
look-ups.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, select

from audiences.selection import tune_connection
from core.models import EntryStatus, utcnow
from core.settings import get_settings
from delivery import ledger
from delivery.runs import PreparedRun, make_context
from delivery.send import RunPaused, work
from journeys.definition import JourneyFile, send_campaign
from journeys.engine import ENTRY, Advanced, advance, enter

log = logging.getLogger(__name__)
UNFINISHED = ("running", "paused")


@dataclass
class TickResult:
    now: datetime
    advanced: dict[str, Advanced] = field(default_factory=dict)
    entered: dict[str, int] = field(default_factory=dict)
    sent: Counter = field(default_factory=Counter)  # ledger status -> messages, for the runs sent now
    runs_sent: int = 0
    paused: list[str] = field(default_factory=list)
    advance_seconds: float = 0.0
    send_seconds: float = 0.0

    @property
    def moves(self) -> int:
        return sum(a.total for a in self.advanced.values())


def anything_due(engine: Engine, now: datetime) -> bool:
    """One index look-up. Why ORDER BY due_at: with statistics saying many rows are due (taken
    during a big tick), PostgreSQL chose a sequential scan of every entry (190-205 ms at 1M); the
    order makes it walk ix_journey_entry_status_due (2-3 ms, notes/17-bench.md)."""
    with engine.connect() as conn:
        row = conn.execute(
            select(ENTRY.c.id)
            .where(ENTRY.c.status == str(EntryStatus.active), ENTRY.c.due_at <= now)
            .order_by(ENTRY.c.due_at)
            .limit(1)
        ).first()
    return row is not None


def unfinished_runs(engine: Engine, names: list[str]) -> list[dict[str, Any]]:
    """Journey runs with messages left to send (recorded by an advance, cut by a crash or a breaker)."""
    runs = ledger.RUNS
    with engine.connect() as conn:
        rows = conn.execute(
            select(runs.c.id, runs.c.key, runs.c.campaign, runs.c.step, runs.c.status)
            .where(runs.c.step.is_not(None), runs.c.status.in_(UNFINISHED), runs.c.campaign.in_(names))
            .order_by(runs.c.id)
        ).mappings()
        return [dict(r) for r in rows]


def advance_all(engine: Engine, journeys: list[JourneyFile], now: datetime, result: TickResult) -> None:
    started = time.perf_counter()
    due = anything_due(engine, now)
    for jf in journeys:
        if due or jf.campaign.entry is not None:  # a triggered journey reads its new events
            with engine.begin() as conn:
                tune_connection(conn)
                result.advanced[jf.name] = advance(conn, jf.campaign, now)
    result.advance_seconds = time.perf_counter() - started


def send_pending(engine: Engine, journeys: list[JourneyFile], result: TickResult) -> None:
    """Send every unfinished run of these journeys in this process (other workers may share them)."""
    started = time.perf_counter()
    by_name = {jf.name: jf for jf in journeys}
    timeout = get_settings().claim_timeout_seconds
    for run in unfinished_runs(engine, list(by_name)):
        jf = by_name[run["campaign"]]
        try:
            step = jf.campaign.step(run["step"])
        except KeyError:
            log.warning("run %s: step %s is no longer in %s: not sent", run["key"], run["step"], jf.path)
            continue
        with engine.begin() as conn:
            if run["status"] == "paused":
                ledger.set_run_status(conn, run["id"], "running")
            recorded = conn.execute(
                select(func.count()).where(ledger.LEDGER.c.run_id == run["id"])
            ).scalar_one()
        prepared = PreparedRun(run["id"], run["key"], send_campaign(jf.campaign, step), jf.path, recorded, 0)
        ctx = make_context(prepared)
        with contextlib.suppress(RunPaused):  # outcomes per batch, as they were written
            work(engine, ctx, timeout, on_batch=lambda done: result.sent.update(+Counter(done.counts)))
        result.runs_sent += 1
        with engine.connect() as conn:
            if ledger.run_status(conn, run["id"]) == "paused":
                result.paused.append(run["key"])
    result.send_seconds = time.perf_counter() - started


def tick(
    engine: Engine, journeys: list[JourneyFile], now: datetime | None = None, send: bool = True
) -> TickResult:
    """Advance every due entry of ``journeys`` at ``now``, then (``send``) send what is recorded."""
    result = TickResult(now or utcnow())
    advance_all(engine, journeys, result.now, result)
    if send:
        send_pending(engine, journeys, result)
    return result


def run_journey(
    engine: Engine,
    journey: JourneyFile,
    now: datetime | None = None,
    entry_key: str | None = None,
    send: bool = True,
) -> TickResult:
    """A scheduled occurrence of a journey: enter the customers its audience selects, then tick it."""
    now = now or utcnow()
    entered = 0
    if journey.campaign.entry is None:  # a triggered journey enters on its events, in the tick
        with engine.begin() as conn:
            tune_connection(conn)
            entered = enter(conn, journey.campaign, now, entry_key)
    result = tick(engine, [journey], now, send)
    advanced = result.advanced.get(journey.name)
    result.entered[journey.name] = entered + (advanced.entered if advanced else 0)
    return result
