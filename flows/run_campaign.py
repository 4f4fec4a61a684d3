"""The `run_campaign` Prefect flow: record the audience once, then one task per batch.

Thin on purpose: the logic (and exactly-once) lives in delivery.send and
delivery.ledger; Prefect adds scheduling, retries, concurrency and the UI.
Task retries are safe because every task asks the ledger what is left:
a retried batch task sends only rows still ``planned`` and turns rows it left
in ``sending`` into ``unknown``. A batch task handles ~``batch_size`` (1000)
recipients, never one message, so Prefect's few milliseconds per task stay
a small share of the run. The run is passed to tasks under ``quote()``: Prefect
otherwise walks and rebuilds its campaign model in every task's parameters,
looking for futures (~5 ms per batch task on the bench machine, a third of
Prefect's own cost per task).

Entry point of the deployments in prefect.yaml: ``flows/run_campaign.py:run_campaign``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import flow, get_run_logger, task, unmapped
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote

from core.db import get_engine, ready_engine
from core.settings import get_settings
from delivery import claims, ledger, runs, send
from flows.retries import worth_retrying as _worth_retrying

_contexts: dict[tuple[int, str], send.SendContext] = {}


def _context(run: runs.PreparedRun) -> send.SendContext:
    """One SendContext per run per process, so breakers and rate limits span the run's batches."""
    key = (run.run_id, run.key)
    if key not in _contexts:
        _contexts[key] = runs.make_context(run)
    return _contexts[key]


def _release(run: runs.PreparedRun) -> None:
    """Drop the run's SendContext when this process is done with its batches.

    Why: a long-lived process (``relance serve``) runs campaign after campaign,
    and each context holds compiled templates and per-offer caches; and a
    later run with the same id and key in another database (a copy, a test)
    must not inherit this one's providers and settings.
    """
    _contexts.pop((run.run_id, run.key), None)


@task(
    name="record-audience",
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=_worth_retrying,
    cache_policy=NO_CACHE,
)
def record_audience(
    campaign_path: str, run_key: str | None, now: str | None, resend_unknown: bool
) -> runs.PreparedRun:
    """Select, assign and record the audience in one transaction (done once per run key)."""
    run = runs.prepare_run(ready_engine(), campaign_path, run_key, ledger.run_datetime(now), resend_unknown)
    get_run_logger().info("run %s (%s): %s ledger rows", run.run_id, run.key, run.recorded)
    return run


@task(name="recover-claims", cache_policy=NO_CACHE)
def recover_claims(run: runs.PreparedRun) -> list[int]:
    """Free the claims of dead workers (their in-flight rows become unknown) and list pending batches."""
    engine = get_engine()
    with engine.begin() as conn:
        freed = claims.reclaim_stale(conn, run.run_id, get_settings().claim_timeout_seconds)
        if freed:
            get_run_logger().warning("batches %s were claimed by a dead worker: taken over", freed)
        return claims.pending_batches(conn, run.run_id)


@task(
    name="send-batch",
    retries=2,
    retry_delay_seconds=1,
    retry_condition_fn=_worth_retrying,
    cache_policy=NO_CACHE,
    task_run_name="send-batch-{batch}",
)
def send_batch(run: runs.PreparedRun, batch: int) -> dict[str, int]:
    """Claim, render and send one batch; a batch already done (or claimed by a live worker) is skipped."""
    engine = get_engine()
    ctx = _context(run)
    with engine.begin() as conn:
        claimed = claims.claim_batch(conn, run.run_id, ctx.worker, batch=batch)
    if claimed is None:
        return {}
    return send.process_batch(engine, ctx, batch).counts


@task(name="summarize-run", cache_policy=NO_CACHE)
def summarize_run(run: runs.PreparedRun) -> dict[str, Any]:
    engine = get_engine()
    with engine.begin() as conn:
        ledger.finish_if_done(conn, run.run_id)
    summary = runs.summarize(engine, run.run_id)
    _artifacts(summary)
    return summary


def _artifacts(summary: dict[str, Any]) -> None:
    """A table per run (channel x status) and a short markdown note, visible in the Prefect UI."""
    slug = "".join(ch if ch.isalnum() else "-" for ch in summary["key"].lower()).strip("-")
    rows = [
        {"channel": channel, "status": status, "messages": n}
        for channel, by_status in sorted(summary["counts"].items())
        for status, n in sorted(by_status.items())
    ]
    create_table_artifact(
        key=f"run-{slug}"[:100],
        table=rows,
        description=f"Run {summary['key']} ({summary['campaign']}): messages per channel and status",
    )
    lines = [f"# Run `{summary['key']}`", "", f"status: **{summary['status']}**"]
    if summary["paused_reason"]:
        lines.append(f"paused: {summary['paused_reason']}")
    lines += ["", "| status | messages |", "|---|---|"]
    lines += [f"| {s} | {n} |" for s, n in sorted(summary["totals"].items())]
    if summary["unknown"]:
        lines += ["", f"{len(summary['unknown'])} message(s) with unknown outcome (not re-sent; "
                  "`relance run ... --resend-unknown` sends them again):"]  # fmt: skip
        lines += [f"- ledger {u['id']} customer {u['customer_id']} {u['channel']}: {u['reason']}"
                  for u in summary["unknown"][:20]]  # fmt: skip
    create_markdown_artifact(key=f"run-{slug}-summary"[:100], markdown="\n".join(lines))


def _ensure_rate_limits(run: runs.PreparedRun) -> None:
    """Create the global rate limits of the providers this run sends through; idempotent.

    Shared by every worker of every run; providers the run does not use are left alone.
    """
    import asyncio

    from channels.ratelimit import ensure_global_limits

    settings = get_settings()
    providers = {getattr(settings, f"{channel}_provider") for channel in run.campaign.channels.order}
    try:
        asyncio.run(ensure_global_limits(settings, providers=providers))
    except Exception as exc:  # noqa: BLE001 - sending still paces locally per process
        get_run_logger().warning("could not create Prefect rate limits: %s", exc)


def _is_journey(campaign_path: str) -> bool:
    from core.spec_loader import load_campaign

    return load_campaign(campaign_path).is_journey


def _scheduled_now() -> datetime | None:
    """For a scheduled (deployment) run, the scheduled time: the run key names the occurrence."""
    from prefect.runtime import deployment, flow_run

    if deployment.id:
        return flow_run.scheduled_start_time
    return None


@flow(
    name="run-campaign",
    task_runner=ThreadPoolTaskRunner(max_workers=get_settings().send_workers),
    log_prints=True,
)
def run_campaign(
    campaign_path: str,
    run_key: str | None = None,
    resend_unknown: bool = False,
    now: str | None = None,
) -> dict[str, Any]:
    """Run (or resume) one campaign: record the audience, send its batches, summarize.

    ``run_key`` names the occurrence (default ``<campaign>:<local date>``): the
    same key resumes the same run and sends only what is left.
    """
    if now is None:
        scheduled = _scheduled_now()
        now = scheduled.isoformat() if scheduled else None
    if _is_journey(campaign_path):  # a journey's occurrence enters its audience, then ticks it
        from flows.advance_journeys import run_journey

        return run_journey(campaign_path, ledger.run_datetime(now), run_key)
    run = record_audience(campaign_path, run_key, now, resend_unknown)
    _ensure_rate_limits(run)
    quoted = quote(run)
    batches = recover_claims(quoted)
    futures = send_batch.map(unmapped(quoted), batches) if batches else []
    paused, failures = None, []
    for future in futures:
        try:
            future.result()
        except send.RunPaused as exc:
            paused = str(exc)
        except Exception as exc:  # noqa: BLE001 - summarize first, then fail the flow run
            failures.append(exc)
    _release(run)
    summary = summarize_run(quoted) | run.unknown_handling()
    if paused:
        get_run_logger().warning("run %s paused: %s", run.key, paused)
    if failures:
        raise RuntimeError(
            f"{len(failures)} batch(es) of run {run.key} failed after retries ({failures[0]}); "
            "run the same command again to resume: nothing is sent twice"
        ) from failures[0]
    return summary


@task(
    name="send-claimed-batch",
    retries=2,
    retry_delay_seconds=1,
    retry_condition_fn=_worth_retrying,
    cache_policy=NO_CACHE,
    task_run_name="send-batch-{batch}",
)
def send_claimed_batch(run: runs.PreparedRun, batch: int) -> dict[str, int]:
    """Render and send a batch this worker already claimed (a retry re-enters it safely)."""
    return send.process_batch(get_engine(), _context(run), batch).counts


@flow(name="send-run", log_prints=True)
def send_run(run_key: str, campaign_path: str | None = None) -> dict[str, Any]:
    """Join a started run as one more worker (any Prefect worker, any machine, PostgreSQL).

    Claims pending batches one at a time with ``FOR UPDATE SKIP LOCKED`` until
    none is left; other workers (this flow elsewhere, ``relance work``, the
    run's own flow) take the others.
    """
    engine = get_engine()
    run = runs.join_run(engine, run_key, campaign_path)
    me = _context(run).worker
    sent = 0
    try:
        while True:
            with engine.begin() as conn:
                claims.reclaim_stale(conn, run.run_id, get_settings().claim_timeout_seconds)
                batch = claims.claim_batch(conn, run.run_id, me)
            if batch is None:
                break
            try:
                send_claimed_batch(quote(run), batch)
            except send.RunPaused as exc:
                get_run_logger().warning("run %s paused: %s", run_key, exc)
                break
            sent += 1
    finally:
        _release(run)
    get_run_logger().info("worker %s sent %s batch(es) of run %s", me, sent, run_key)
    return summarize_run(quote(run))
