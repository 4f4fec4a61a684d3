"""Sending the batches of a run, exactly once, with no Prefect in sight.

The protocol (DESIGN.md, "Exactly once"), per batch:

1. claim the batch (``send_batch``: pending -> claimed by this worker);
2. load its planned rows with the customer, features, device and
   recommendations in ONE query, and render each message (a template error
   fails that one message);
3. hand the messages to the provider in chunks (tracking.outcomes): a chunk's
   rows are marked ``sending`` and COMMITTED just before it leaves, never more
   rows than the provider holds requests in flight (``in_flight``);
4. commit each ``sent``/``failed``/``unknown`` outcome with its provider id and
   its permanent-error effects (consent, suppression) as it comes back, in small
   groups; then mark the batch done.

A process killed between 3 and 4 leaves rows in ``sending``, at most the
provider's ``in_flight`` per channel; whoever claims the batch next turns them
into ``unknown`` ("outcome unknown after crash") and does not send them again,
except where the provider itself says what it got (the outbox's files:
tracking.reconcile). Claims by a dead process are taken over at once when it
ran on this host (its pid is gone), otherwise after ``claim_timeout`` seconds.

Flows (flows/run_campaign.py) and workers (``relance work``) are thin loops
over ``claim_batch`` + ``process_batch``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, func, select, update

from relance.models import (
    Consent,
    Customer,
    CustomerFeatures,
    Device,
    LedgerEntry,
    Recommendation,
    Status,
    Suppression,
    utcnow,
)
from relance.settings import get_settings
from relance.spec import Campaign
from tracking import ledger, outcomes, reconcile
from tracking.alerts import pause_if_crossed

log = logging.getLogger(__name__)

LEDGER = LedgerEntry.__table__
BATCHES = ledger.BATCHES
CUSTOMERS = Customer.__table__
FEATURES = CustomerFeatures.__table__
DEVICES = Device.__table__
RECOS = Recommendation.__table__
CONSENT = Consent.__table__
SUPPRESSION = Suppression.__table__

# Customer fields a template may read; identifiers of the base stay out of messages.
CUSTOMER_FIELDS = (
    "id", "external_id", "first_name", "last_name", "email", "phone", "locale", "timezone",
    "country", "city", "postcode", "gender", "birth_year", "signup_date", "preferred_channel",
    "preferred_payment_method",
)  # fmt: skip
FEATURE_FIELDS = (
    "first_order_at", "last_order_at", "recency_days", "frequency", "monetary_cents",
    "avg_basket_cents", "tenure_days", "favourite_category", "preferred_payment_method",
)  # fmt: skip
ADDRESS_FIELD = {"email": "email", "sms": "phone", "push": "device_token"}


class RunPaused(Exception):
    """The run cannot go on now (a provider's circuit breaker is open); the reason is recorded."""


# --------------------------------------------------------------------------
# Workers and claims
# --------------------------------------------------------------------------


def worker_id(tag: str | None = None) -> str:
    """``host:pid:tag``: the pid lets a worker on the same host see at once that a claimer died."""
    host = socket.gethostname()[:40]
    return f"{host}:{os.getpid()}:{tag or uuid.uuid4().hex[:8]}"


def _claimer_state(claimed_by: str | None) -> str:
    """'dead' or 'alive' when the claim was made on this host (its pid tells), else 'remote'."""
    if not claimed_by:
        return "dead"
    host, _, rest = claimed_by.partition(":")
    pid_text = rest.split(":", 1)[0]
    if host != socket.gethostname()[:40] or not pid_text.isdigit():
        return "remote"
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return "dead"
    except PermissionError:
        return "alive"
    return "alive"


def reclaim_stale(conn: Connection, run_id: int, claim_timeout: float) -> list[int]:
    """Release claims of dead workers (their ``sending`` rows become unknown); return the batches freed.

    A claimer on this host is dead when its pid is gone (at once); one on another
    host when its claim is older than ``claim_timeout`` seconds.
    """
    cutoff = utcnow() - timedelta(seconds=claim_timeout)
    claims = conn.execute(
        select(BATCHES.c.batch, BATCHES.c.claimed_by, BATCHES.c.claimed_at).where(
            BATCHES.c.run_id == run_id, BATCHES.c.status == "claimed"
        )
    ).all()
    freed = []
    for batch, claimed_by, claimed_at in claims:
        state = _claimer_state(claimed_by)
        timed_out = claimed_at is None or _aware(claimed_at) < cutoff
        stale = state == "dead" or (state == "remote" and timed_out)
        if not stale:
            continue
        released = conn.execute(
            update(BATCHES)
            .where(
                BATCHES.c.run_id == run_id,
                BATCHES.c.batch == batch,
                BATCHES.c.status == "claimed",
                BATCHES.c.claimed_by == claimed_by,
            )
            .values(status="pending", claimed_by=None, claimed_at=None)
        ).rowcount
        if released:
            lost = ledger.mark_unknown_after_crash(conn, run_id, batch)
            if lost:
                log.warning(
                    "run %s batch %s: %s message(s) in flight when %s died: now unknown",
                    run_id,
                    batch,
                    lost,
                    claimed_by,
                )
            freed.append(batch)
    return freed


def _aware(value: datetime) -> datetime:
    from datetime import UTC

    return value if value.tzinfo else value.replace(tzinfo=UTC)


def claim_batch(conn: Connection, run_id: int, me: str, batch: int | None = None) -> int | None:
    """Claim one pending batch of the run (``batch`` if given); return it, or None if none is left.

    A given ``batch`` already claimed by ``me`` is claimed again: that is a retry
    in this worker after an exception (``process_batch`` then turns its rows left
    in ``sending`` into ``unknown``).

    PostgreSQL: ``SELECT ... FOR UPDATE SKIP LOCKED`` so concurrent workers each
    get a different batch without waiting. SQLite: one atomic UPDATE (SQLite
    serializes writers). Does not commit: commit right after to publish the claim.
    """
    where = [BATCHES.c.run_id == run_id, BATCHES.c.status == "pending"]
    now = utcnow()
    if batch is not None:
        where.append(BATCHES.c.batch == batch)
        retaken = conn.execute(
            update(BATCHES)
            .where(BATCHES.c.run_id == run_id, BATCHES.c.batch == batch)
            .where(BATCHES.c.status == "claimed", BATCHES.c.claimed_by == me)
            .values(claimed_at=now)
        ).rowcount
        if retaken:
            return batch
    if conn.dialect.name == "postgresql":
        chosen = conn.execute(
            select(BATCHES.c.batch)
            .where(*where)
            .order_by(BATCHES.c.batch)
            .limit(1)
            .with_for_update(skip_locked=True)
        ).scalar_one_or_none()
        if chosen is None:
            return None
        conn.execute(
            update(BATCHES)
            .where(BATCHES.c.run_id == run_id, BATCHES.c.batch == chosen)
            .values(status="claimed", claimed_by=me, claimed_at=now)
        )
        return int(chosen)
    first = select(func.min(BATCHES.c.batch)).where(*where).scalar_subquery()
    chosen = conn.execute(
        update(BATCHES)
        .where(BATCHES.c.run_id == run_id, BATCHES.c.status == "pending", BATCHES.c.batch == first)
        .values(status="claimed", claimed_by=me, claimed_at=now)
        .returning(BATCHES.c.batch)
    ).scalar_one_or_none()
    return None if chosen is None else int(chosen)


def release_batch(conn: Connection, run_id: int, batch: int, me: str) -> None:
    """Give a claimed batch back untouched (the run is pausing)."""
    conn.execute(
        update(BATCHES)
        .where(BATCHES.c.run_id == run_id, BATCHES.c.batch == batch, BATCHES.c.claimed_by == me)
        .values(status="pending", claimed_by=None, claimed_at=None)
    )


def pending_batches(conn: Connection, run_id: int) -> list[int]:
    return list(
        conn.execute(
            select(BATCHES.c.batch)
            .where(BATCHES.c.run_id == run_id, BATCHES.c.status == "pending")
            .order_by(BATCHES.c.batch)
        ).scalars()
    )


# --------------------------------------------------------------------------
# Loading a batch
# --------------------------------------------------------------------------


@dataclass
class Recipient:
    """One planned ledger row with what its message needs."""

    ledger_id: int
    customer_id: int
    channel: str
    variant: str | None
    message: str | None
    customer: dict[str, Any]
    features: dict[str, Any]
    device_token: str | None
    recommendations: list[dict[str, Any]] = field(default_factory=list)
    blocked: str | None = None  # why it may no longer be sent (consent, suppression, erasure)

    @property
    def address(self) -> str | None:
        key = ADDRESS_FIELD[self.channel]
        return self.device_token if key == "device_token" else self.customer.get(key)


def load_batch(conn: Connection, run_id: int, batch: int) -> list[Recipient]:
    """The planned rows of one batch joined with customer, features, device and recommendations.

    ONE query: recommendations are a LEFT JOIN (a row per rank), folded here,
    so a batch costs one round trip whatever its size.
    """
    device = (
        select(DEVICES.c.token)
        .where(DEVICES.c.customer_id == LEDGER.c.customer_id, DEVICES.c.active.is_(True))
        .order_by(DEVICES.c.last_seen_at.desc(), DEVICES.c.id.desc())
        .limit(1)
        .correlate(LEDGER)
        .scalar_subquery()
    )
    # consent and suppression again at send time: a customer may unsubscribe, bounce or reply STOP
    # between the recording of the audience and their batch (hours, for a paused run)
    consent_ok = (
        select(CONSENT.c.customer_id)
        .where(
            CONSENT.c.customer_id == LEDGER.c.customer_id,
            CONSENT.c.channel == LEDGER.c.channel,
            CONSENT.c.status == "granted",
        )
        .correlate(LEDGER)
        .exists()
    )
    suppressed = (
        select(SUPPRESSION.c.id)
        .where(
            SUPPRESSION.c.channel.in_([LEDGER.c.channel, "*"]),
            SUPPRESSION.c.address.in_([CUSTOMERS.c.email, CUSTOMERS.c.phone]),
        )
        .correlate(LEDGER, CUSTOMERS)
        .exists()
    )
    cols = [
        consent_ok.label("consent_ok"),
        suppressed.label("suppressed"),
        CUSTOMERS.c.erased_at.label("erased_at"),
        LEDGER.c.id.label("ledger_id"),
        LEDGER.c.channel,
        LEDGER.c.variant,
        LEDGER.c.message,
        device.label("device_token"),
        *[CUSTOMERS.c[f].label(f"c_{f}") for f in CUSTOMER_FIELDS],
        *[FEATURES.c[f].label(f"f_{f}") for f in FEATURE_FIELDS],
        FEATURES.c.customer_id.label("f_present"),
        RECOS.c.rank.label("r_rank"),
        RECOS.c.item.label("r_item"),
        RECOS.c.score.label("r_score"),
    ]
    stmt = (
        select(*cols)
        .select_from(
            LEDGER.join(CUSTOMERS, CUSTOMERS.c.id == LEDGER.c.customer_id)
            .outerjoin(FEATURES, FEATURES.c.customer_id == LEDGER.c.customer_id)
            .outerjoin(RECOS, RECOS.c.customer_id == LEDGER.c.customer_id)
        )
        .where(LEDGER.c.run_id == run_id, LEDGER.c.batch == batch, LEDGER.c.status == str(Status.planned))
        .order_by(LEDGER.c.id, RECOS.c.rank)
    )
    out: dict[int, Recipient] = {}
    for row in conn.execute(stmt).mappings():
        rec = out.get(row["ledger_id"])
        if rec is None:
            rec = out[row["ledger_id"]] = Recipient(
                ledger_id=row["ledger_id"],
                customer_id=row["c_id"],
                channel=row["channel"],
                variant=row["variant"],
                message=row["message"],
                customer={f: row[f"c_{f}"] for f in CUSTOMER_FIELDS},
                features={f: row[f"f_{f}"] for f in FEATURE_FIELDS} if row["f_present"] is not None else {},
                device_token=row["device_token"],
                blocked=(
                    "customer erased"
                    if row["erased_at"] is not None
                    else "consent withdrawn after the audience was recorded"
                    if not row["consent_ok"]
                    else "address suppressed after the audience was recorded"
                    if row["suppressed"]
                    else None
                ),  # fmt: skip
            )
        if row["r_item"] is not None:
            rec.recommendations.append(
                {"rank": row["r_rank"], "item": row["r_item"], "score": row["r_score"]}
            )
    return list(out.values())


# --------------------------------------------------------------------------
# Processing a batch
# --------------------------------------------------------------------------


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
        paused = alerts or run_status(conn, ctx.run_id) == "paused"
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
    # committed as it comes back (tracking.outcomes: a crash leaves unknown only what was in flight)
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
        update(LEDGER)
        .where(LEDGER.c.id == bindparam("b_id"), LEDGER.c.status == str(Status.planned))
        .values(status=str(status), reason=bindparam("b_reason"), updated_at=utcnow()),
        [{"b_id": ledger_id, "b_reason": reason} for ledger_id, reason in rows],
    )


def _breaker_open(ctx: SendContext, channel: str) -> bool:
    breaker = ctx.breakers.get(channel)
    return bool(breaker is not None and not breaker.allow())


# --------------------------------------------------------------------------
# A worker loop (``relance work`` and the bench): claim, process, repeat
# --------------------------------------------------------------------------


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


__all__ = [
    "BatchOutcome",
    "Recipient",
    "RunPaused",
    "SendContext",
    "claim_batch",
    "load_batch",
    "pending_batches",
    "process_batch",
    "reclaim_stale",
    "release_batch",
    "work",
    "prepare_run",
    "run_direct",
    "summarize",
    "worker_id",
]


# --------------------------------------------------------------------------
# A whole run, without Prefect: what the flow's tasks wrap
# --------------------------------------------------------------------------


@dataclass
class PreparedRun:
    run_id: int
    key: str
    campaign: Campaign
    path: str
    recorded: int  # ledger rows of the run
    requeued: int  # unknown rows put back on the operator's request
    reconciled: int = 0  # rows of the run once unknown, settled by evidence (outbox files, webhooks)
    replanned: int = 0  # unknown rows the outbox proved never written: planned again by this start

    def unknown_handling(self) -> dict[str, int]:
        """What this start did to unknown outcomes: for the run's summary and the CLI's message."""
        return {"requeued": self.requeued, "reconciled": self.reconciled, "replanned": self.replanned}


def default_run_key(campaign: Campaign, now: datetime) -> str:
    """``name:YYYY-MM-DD`` in the campaign's time zone: one run per campaign per local day."""
    from zoneinfo import ZoneInfo

    from relance.settings import get_settings

    tz = campaign.schedule.timezone if campaign.schedule else get_settings().default_timezone
    return f"{campaign.name}:{now.astimezone(ZoneInfo(tz)).date().isoformat()}"


def load_campaign_file(path: str) -> tuple[Campaign, str]:
    """The campaign of ``path`` and the hash of its text (a resumed run reports a changed spec)."""
    from pathlib import Path

    from relance.spec_loader import load_campaign

    return load_campaign(path), ledger.spec_hash(Path(path).read_text(encoding="utf-8"))


def prepare_run(
    engine: Engine,
    path: str,
    run_key: str | None = None,
    now: datetime | None = None,
    resend_unknown: bool = False,
    batch_size: int | None = None,
) -> PreparedRun:
    """Load the campaign, start or resume its run, and record the audience once (select + assign + record)."""
    from relance.settings import get_settings

    now = now or utcnow()
    campaign, digest = load_campaign_file(path)
    key = run_key or default_run_key(campaign, now)
    with engine.begin() as conn:
        run_id = ledger.start_run(conn, campaign.name, key, digest)
    with engine.begin() as conn:
        if not ledger.is_recorded(conn, run_id):
            selection, funnel = select_audience(conn, campaign, now)
            ledger.record_selection(
                conn, run_id, campaign.name, selection, batch_size or get_settings().batch_size, funnel
            )
        recorded = conn.execute(select(func.count()).where(LEDGER.c.run_id == run_id)).scalar_one()
        if run_status(conn, run_id) in ("paused", "failed"):  # resuming: the run goes on
            ledger.set_run_status(conn, run_id, "running")
    with engine.begin() as conn:  # evidence first: what the outbox holds is sent, what it lacks planned
        settled = reconcile.settle_unknown(conn, run_id)
        requeued = ledger.requeue_unknown(conn, run_id) if resend_unknown else 0
        reconciled = reconcile.reconciled_count(conn, run_id)
    return PreparedRun(run_id, key, campaign, str(path), recorded, requeued, reconciled, settled.replanned)


def run_status(conn: Connection, run_id: int) -> str:
    return conn.execute(select(ledger.RUNS.c.status).where(ledger.RUNS.c.id == run_id)).scalar_one()


def select_audience(conn: Connection, campaign: Campaign, now: datetime) -> tuple[Any, dict[str, Any] | None]:
    """The audience query (audiences.selection) and its funnel (audiences.plan)."""
    from audiences.plan import funnel as plan_funnel
    from audiences.selection import build_selection, tune_connection

    tune_connection(conn)  # PostgreSQL: no JIT, enough work_mem for the one big query
    return build_selection(campaign, now, bind=conn), plan_funnel(conn, campaign, now)


def _offer_urls(campaign: Campaign) -> list[str]:
    """The campaign's (and its variants') offer URLs: the links its SMS will carry."""
    offers = [campaign.offer, *(v.offer for v in campaign.variants)]
    return sorted({o["url"] for o in offers if isinstance(o.get("url"), str)})


def make_context(run: PreparedRun, worker: str | None = None) -> SendContext:
    """Renderer, providers, rate limiters and breakers for one worker of one run."""
    from channels.circuit import CircuitBreaker
    from channels.ratelimit import RateLimiter
    from channels.registry import get_provider
    from channels.render import Renderer
    from channels.tracking_links import DbLinkRegistry
    from relance.db import get_engine

    links = DbLinkRegistry(get_engine())
    links.register([url for url in _offer_urls(run.campaign)])  # no insert mid-batch
    return SendContext(
        run_id=run.run_id,
        campaign=run.campaign,
        worker=worker or worker_id(),
        renderer=Renderer(links=links),  # SMS get short /s/ links (one segment saved per SMS)
        providers=get_provider,
        breakers={ch: CircuitBreaker(ch) for ch in ("email", "sms", "push")},
        limiters={ch: RateLimiter.for_channel(ch) for ch in ("email", "sms", "push")},
    )


def summarize(engine: Engine, run_id: int) -> dict[str, Any]:
    """Counts per channel and status, the run's state and unknown rows: what the CLI and artifacts show."""
    import json

    from relance.settings import get_settings

    with engine.connect() as conn:
        run = conn.execute(select(ledger.RUNS).where(ledger.RUNS.c.id == run_id)).mappings().one()
        by_channel: dict[str, dict[str, int]] = defaultdict(dict)
        totals: dict[str, int] = defaultdict(int)
        for (channel, status), n in sorted(ledger.counts(conn, run_id).items()):
            by_channel[channel][status] = n
            totals[status] += n
        unknown = ledger.unknown_rows(conn, run_id)
        reconciled = reconcile.reconciled_count(conn, run_id)
    return {
        "run_id": run_id,
        "key": run["key"],
        "campaign": run["campaign"],
        "status": run["status"],
        "paused_reason": run["paused_reason"],
        "counts": dict(by_channel),
        "totals": dict(totals),
        "unknown": unknown,
        "reconciled": reconciled,  # once unknown, settled by the provider's evidence (never re-sent)
        "funnel": json.loads(run["funnel"]) if run["funnel"] else None,
        "outbox": str(get_settings().outbox_dir.resolve()),
    }


def run_direct(
    engine: Engine,
    path: str,
    run_key: str | None = None,
    now: datetime | None = None,
    resend_unknown: bool = False,
    claim_timeout: float | None = None,
) -> dict[str, Any]:
    """The whole run in this process without the Prefect engine (same ledger protocol)."""
    from relance.settings import get_settings

    run = prepare_run(engine, path, run_key, now, resend_unknown)
    ctx = make_context(run)
    timeout = get_settings().claim_timeout_seconds if claim_timeout is None else claim_timeout
    with contextlib.suppress(RunPaused):  # the pause and its reason are on the run row
        work(engine, ctx, timeout)
    summary = summarize(engine, run.run_id)
    summary.update(run.unknown_handling())
    return summary


def join_run(engine: Engine, key: str, path: str | None = None) -> PreparedRun:
    """An existing run, for a worker joining it (``relance work``): its campaign file is found by name.

    The run must be recorded already (``relance run`` or the flow did it); a
    worker only sends.
    """
    from pathlib import Path

    from relance.settings import get_settings

    with engine.connect() as conn:
        run = ledger.get_run(conn, key)
        if run is None:
            raise ledger.RunError(
                f"no run with key {key!r}: start it with `relance run campaigns/<file>.yaml`"
            )
        if run["status"] == "planned":
            raise ledger.RunError(
                f"run {key!r} has no recorded audience yet: start it with `relance run` first"
            )
        recorded = conn.execute(select(func.count()).where(LEDGER.c.run_id == run["id"])).scalar_one()
    candidates = [Path(path)] if path else sorted(Path(get_settings().campaigns_dir).glob("*.y*ml"))
    for candidate in candidates:
        try:
            campaign, digest = load_campaign_file(str(candidate))
        except Exception:  # noqa: BLE001 - other files may be invalid; only the named campaign matters
            if path:
                raise
            continue
        if campaign.name == run["campaign"]:
            if run["spec_hash"] and digest != run["spec_hash"]:
                log.warning("campaign file %s changed since run %s started", candidate, key)
            return PreparedRun(run["id"], key, campaign, str(candidate), recorded, 0)
    raise ledger.RunError(
        f"no campaign named {run['campaign']!r} in {get_settings().campaigns_dir}: "
        "pass its file with --campaign"
    )
