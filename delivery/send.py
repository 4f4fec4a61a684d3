"""Sending one claimed batch, exactly once, with no Prefect in sight; and a worker's loop over batches.

The protocol (DESIGN.md, "Exactly once"), per batch:

1. claim the batch (``send_batch``: pending -> claimed by this worker);
2. load its planned rows with the customer, features, device and
   recommendations in ONE query, and render each message (a template error
   fails that one message);
3. hand the messages to the provider in chunks (delivery.outcomes): a chunk's
   rows are marked ``sending`` and COMMITTED just before it leaves, never more
   rows than the provider holds requests in flight (``in_flight``);
4. commit each ``sent``/``failed``/``unknown`` outcome with its provider id and
   its permanent-error effects (consent, suppression) as it comes back, in small
   groups; then mark the batch done.

A process killed between 3 and 4 leaves rows in ``sending``, at most the
provider's ``in_flight`` per channel; whoever claims the batch next turns them
into ``unknown`` ("outcome unknown after crash") and does not send them again,
except where the provider itself says what it got (the outbox's files:
delivery.reconcile). Claims by a dead process are taken over at once when it
ran on this host (its pid is gone), otherwise after ``claim_timeout`` seconds.

Flows (flows/run_campaign.py) and workers (``relance work``) are thin loops
over ``claims.claim_batch`` + ``process_batch``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, select, update

from core.models import (
    Status,
    utcnow,
)
from core.settings import get_settings
from core.spec import Campaign
from delivery import ledger, outcomes, reconcile
from delivery.alerts import pause_if_crossed
from delivery.batch import ADDRESS_FIELD, load_batch
from delivery.claims import BATCHES, claim_batch, reclaim_stale, release_batch

log = logging.getLogger(__name__)


class RunPaused(Exception):
    """The run cannot go on now (a provider's circuit breaker is open); the reason is recorded."""


@dataclass
class SendContext:
    """What every batch of one run shares: built once per worker, not per batch."""

    run_id: int
    campaign: Campaign
    worker: str
    renderer: Any
    providers: Callable[[str], Any]  # channel -> a new provider (closed after each batch)
    breakers: dict[str, Any] = field(default_factory=dict)
    limiters: dict[str, Any] = field(default_factory=dict)
    alerts_checked_at: float | None = None  # time.monotonic() of this worker's last alert check

    def alerts_due(self) -> bool:
        """Alert counts read the whole run (a 1M-row run: ~0.3 s), so each worker checks them before
        its first batch and then at most every ``alert_check_seconds``, not before every batch."""
        now = time.monotonic()
        if (
            self.alerts_checked_at is None
            or now - self.alerts_checked_at >= get_settings().alert_check_seconds
        ):
            self.alerts_checked_at = now
            return True
        return False

    def offer_for(self, variant: str | None) -> dict[str, Any]:
        offer = dict(self.campaign.offer)
        for v in self.campaign.variants:
            if v.name == variant:
                offer.update(v.offer)
        return offer


@dataclass
class BatchOutcome:
    batch: int
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def process_batch(engine: Engine, ctx: SendContext, batch: int) -> BatchOutcome:
    """Render and send one batch that ``ctx.worker`` has claimed; see the module docstring."""
    from channels.base import Outbound
    from channels.render import RenderContext, RenderError

    with engine.begin() as conn:
        # bounces, complaints, unsubscribes so far; an operator resuming a paused run may override
        check = get_settings().alerts_pause_runs and ctx.alerts_due()
        alerts = pause_if_crossed(conn, ctx.run_id) if check else []
        paused = alerts or ledger.run_status(conn, ctx.run_id) == "paused"
    if paused:
        _stop_paused(engine, ctx, batch)  # raises RunPaused
    with engine.begin() as conn:
        ledger.mark_unknown_after_crash(conn, ctx.run_id, batch)  # a previous claimer died mid-call
        reconcile.settle_unknown(conn, ctx.run_id, batch)  # the outbox says which of those it wrote
        recipients = load_batch(conn, ctx.run_id, batch)

    counts: dict[str, int] = defaultdict(int)
    skipped: list[tuple[int, str]] = []
    failed: list[tuple[int, str]] = []
    outbound: dict[str, list[Any]] = defaultdict(list)
    for rec in recipients:
        if rec.blocked:
            skipped.append((rec.ledger_id, rec.blocked))
            continue
        if not rec.address:
            skipped.append(
                (rec.ledger_id, f"no {ADDRESS_FIELD[rec.channel].replace('_', ' ')} for {rec.channel}")
            )
            continue
        context = RenderContext(
            customer=rec.customer,
            features=rec.features,
            offer=ctx.offer_for(rec.variant),
            variant=rec.variant or "default",
            campaign=ctx.campaign.name,
            ledger_id=rec.ledger_id,
            recommendations=rec.recommendations,
        )
        try:
            rendered = ctx.renderer.render(rec.message, rec.channel, context)
        except RenderError as exc:
            failed.append((rec.ledger_id, f"template error: {exc}"))
            continue
        outbound[rec.channel].append(
            Outbound(
                ledger_id=rec.ledger_id,
                run_id=ctx.run_id,
                customer_id=rec.customer_id,
                campaign=ctx.campaign.name,
                channel=rec.channel,
                to=rec.address,
                rendered=rendered,
            )
        )

    open_channel = next((ch for ch in outbound if _breaker_open(ctx, ch)), None)
    if open_channel is not None:
        _pause(engine, ctx, batch, open_channel)  # raises RunPaused
    with engine.begin() as conn:
        _finish_unsent(conn, skipped, Status.skipped)
        _finish_unsent(conn, failed, Status.failed)
    counts[str(Status.skipped)] += len(skipped)
    counts[str(Status.failed)] += len(failed)

    # ---- the provider calls: each chunk committed `sending` just before it leaves, each outcome
    # committed as it comes back (delivery.outcomes: a crash leaves unknown only what was in flight)
    if outbound:
        sent_counts = asyncio.run(
            outcomes.send_all(engine, outbound, ctx.providers, ctx.breakers, ctx.limiters, ctx.run_id)
        )
        for status, n in sent_counts.items():
            counts[status] += n

    with engine.begin() as conn:
        conn.execute(
            update(BATCHES)
            .where(BATCHES.c.run_id == ctx.run_id, BATCHES.c.batch == batch)
            .values(status="done", finished_at=utcnow())
        )
    return BatchOutcome(batch, dict(counts))


def _pause(engine: Engine, ctx: SendContext, batch: int, channel: str) -> None:
    """Give the batch back untouched and record why the run pauses, then raise RunPaused."""
    why = getattr(ctx.breakers[channel], "reason", None) or f"{channel} provider failing"
    reason = f"circuit breaker open ({why}); resume with the same `relance run` command"
    with engine.begin() as conn:
        release_batch(conn, ctx.run_id, batch, ctx.worker)
        ledger.set_run_status(conn, ctx.run_id, "paused", reason)
    raise RunPaused(reason)


def _stop_paused(engine: Engine, ctx: SendContext, batch: int) -> None:
    """The run was paused (an alert threshold, another worker's breaker): give the batch back, stop."""
    with engine.begin() as conn:
        release_batch(conn, ctx.run_id, batch, ctx.worker)
        reason = conn.execute(
            select(ledger.RUNS.c.paused_reason).where(ledger.RUNS.c.id == ctx.run_id)
        ).scalar_one()
    raise RunPaused(reason or "run paused")


def _finish_unsent(conn: Connection, rows: list[tuple[int, str]], status: Status) -> None:
    """Planned rows that will not be sent (no address, template error): one executemany."""
    if not rows:
        return
    from sqlalchemy import bindparam

    conn.execute(
        update(ledger.LEDGER)
        .where(ledger.LEDGER.c.id == bindparam("b_id"), ledger.LEDGER.c.status == str(Status.planned))
        .values(status=str(status), reason=bindparam("b_reason"), updated_at=utcnow()),
        [{"b_id": ledger_id, "b_reason": reason} for ledger_id, reason in rows],
    )


def _breaker_open(ctx: SendContext, channel: str) -> bool:
    breaker = ctx.breakers.get(channel)
    return bool(breaker is not None and not breaker.allow())


def work(engine: Engine, ctx: SendContext, claim_timeout: float, on_batch: Callable | None = None) -> int:
    """Claim and send batches of the run until none is left; return batches processed here."""
    done = 0
    while True:
        with engine.begin() as conn:
            reclaim_stale(conn, ctx.run_id, claim_timeout)
            batch = claim_batch(conn, ctx.run_id, ctx.worker)
        if batch is None:
            break
        outcome = process_batch(engine, ctx, batch)
        done += 1
        if on_batch is not None:
            on_batch(outcome)
    with engine.begin() as conn:
        ledger.finish_if_done(conn, ctx.run_id)
    return done
