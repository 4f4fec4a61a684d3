"""A run from its campaign file: start or resume it, record its audience once, summarize it.

What the flow's tasks wrap, and ``run_direct``: the whole run in this process without Prefect
(same ledger protocol).
"""

from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, select

from core.models import (
    utcnow,
)
from core.settings import get_settings
from core.spec import Campaign
from delivery import ledger, reconcile
from delivery.claims import worker_id
from delivery.send import RunPaused, SendContext, work

log = logging.getLogger(__name__)


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

    tz = campaign.schedule.timezone if campaign.schedule else get_settings().default_timezone
    return f"{campaign.name}:{now.astimezone(ZoneInfo(tz)).date().isoformat()}"


def load_campaign_file(path: str) -> tuple[Campaign, str]:
    """The campaign of ``path`` and the hash of its text (a resumed run reports a changed spec)."""
    from pathlib import Path

    from core.spec_loader import load_campaign

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
        recorded = conn.execute(select(func.count()).where(ledger.LEDGER.c.run_id == run_id)).scalar_one()
        if ledger.run_status(conn, run_id) in ("paused", "failed"):  # resuming: the run goes on
            ledger.set_run_status(conn, run_id, "running")
    with engine.begin() as conn:  # evidence first: what the outbox holds is sent, what it lacks planned
        settled = reconcile.settle_unknown(conn, run_id)
        requeued = ledger.requeue_unknown(conn, run_id) if resend_unknown else 0
        reconciled = reconcile.reconciled_count(conn, run_id)
    return PreparedRun(run_id, key, campaign, str(path), recorded, requeued, reconciled, settled.replanned)


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
    from core.db import get_engine

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
        recorded = conn.execute(select(func.count()).where(ledger.LEDGER.c.run_id == run["id"])).scalar_one()
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
            if run["step"]:  # a journey's send step: sent as the campaign that step is
                try:
                    campaign = campaign.step_campaign(run["step"])
                except KeyError:
                    raise ledger.RunError(
                        f"run {key!r} sends step {run['step']!r}, which {candidate} no longer has"
                    ) from None
            return PreparedRun(run["id"], key, campaign, str(candidate), recorded, 0)
    raise ledger.RunError(
        f"no campaign named {run['campaign']!r} in {get_settings().campaigns_dir}: "
        "pass its file with --campaign"
    )
