"""`relance run`, `work`, `deploy` and `serve`: sending campaigns, now or on their schedules."""

from pathlib import Path as _Path

import typer as _typer

from relance.cli.app import app as _app
from relance.cli.common import console

# --------------------------------------------------------------------------
# Delivery (issue 5): run, work, deploy, serve
# --------------------------------------------------------------------------


def _print_run_summary(summary: dict) -> None:
    """Counts per channel and status, unknown outcomes, and where the outbox is."""
    from rich.table import Table

    if not summary["totals"]:
        console().print(
            f"run {summary['key']} ({summary['campaign']}): nobody selected; "
            "`relance plan <file>` shows where the audience leaves"
        )
        return
    table = Table(title=f"run {summary['key']} ({summary['campaign']}): {summary['status']}")
    statuses = sorted(summary["totals"])
    table.add_column("channel")
    for status in statuses:
        table.add_column(status, justify="right")
    for channel, by_status in sorted(summary["counts"].items()):
        table.add_row(channel, *[str(by_status.get(s, 0)) for s in statuses])
    table.add_row("total", *[str(summary["totals"][s]) for s in statuses], style="bold")
    console().print(table)
    if summary["paused_reason"]:
        console().print(f"[yellow]paused:[/yellow] {summary['paused_reason']}")
    if summary["unknown"]:
        console().print(
            f"[yellow]{summary['totals'].get('unknown', 0)} message(s) with unknown outcome[/yellow] "
            "(the process died during the provider call): not re-sent. Check the provider, then "
            "`relance run <file> --run-key KEY --resend-unknown` to send them again."
        )
        for row in summary["unknown"][:10]:
            console().print(
                f"  ledger {row['id']} customer {row['customer_id']} {row['channel']}: {row['reason']}"
            )
    console().print(f"outbox: {summary['outbox']}")


@_app.command("run")
def run_cmd(
    campaign_file: _Path = _typer.Argument(..., help="The campaign YAML, e.g. campaigns/winback.yaml"),
    run_key: str = _typer.Option(None, "--run-key", help="Occurrence key; the same key resumes the same run"),
    resend_unknown: bool = _typer.Option(
        False, "--resend-unknown", help="Send again the messages whose outcome is unknown after a crash"
    ),
    now: str = _typer.Option(None, "--now", help="Run as if at this ISO date-time (default: now)"),
    no_prefect: bool = _typer.Option(
        False, "--no-prefect", help="Run in this process without the Prefect engine (same ledger protocol)"
    ),
    ignore_alerts: bool = _typer.Option(
        False, "--ignore-alerts", help="Resume a run paused by an alert threshold and do not pause it again"
    ),
) -> None:
    """Run (or resume) a campaign through the Prefect flow and print what it sent.

    Exit status 3 when the run is paused (an alert threshold was crossed, or a provider's circuit
    breaker opened): the reason is printed; the same command resumes it.
    """
    import os

    from audiences.rules import RuleError
    from audiences.selection import SelectionError
    from core.settings import get_settings
    from core.spec_loader import SpecError
    from delivery import ledger, runs
    from relance.cli.common import ensure_db, fail
    from relance.cli.validation import refuse_broken_campaign

    if ignore_alerts:
        os.environ["RELANCE_ALERTS_PAUSE_RUNS"] = "false"  # also read by Prefect task threads
        get_settings.cache_clear()

    if not campaign_file.is_file():
        fail(f"{campaign_file}: no such campaign file; write its path, e.g. campaigns/winback.yaml")
    refuse_broken_campaign(campaign_file)  # before any Prefect start: a config error is not retried
    engine = ensure_db()
    from core.spec_loader import load_campaign

    if load_campaign(campaign_file).is_journey:
        _run_journey(engine, campaign_file, run_key, now, no_prefect)
        return
    try:
        if no_prefect:
            summary = runs.run_direct(
                engine, str(campaign_file), run_key, ledger.run_datetime(now), resend_unknown
            )
        else:
            from flows.run_campaign import run_campaign
            from relance.cli.prefect_server import prefect_api

            with prefect_api():  # a local API server that dies with this command, even on kill -9
                summary = run_campaign(
                    str(campaign_file), run_key=run_key, resend_unknown=resend_unknown, now=now
                )
    except ledger.RunError as exc:
        fail(str(exc))
    except (SpecError, RuleError, SelectionError) as exc:  # the file changed since the check above
        fail(f"{campaign_file}: {exc}")
    _print_run_summary(summary)
    if resend_unknown:  # issue 16: only what the providers' evidence left unknown is sent again
        console().print(
            f"--resend-unknown: {summary['requeued']} message(s) still unknown after "
            f"reconciliation sent again; {summary['reconciled']} settled by the provider's "
            "evidence (outbox files, webhooks) skipped"
        )
    if summary["status"] == "paused":
        raise _typer.Exit(3)


def _run_journey(engine, path: _Path, entry_key: str | None, now: str | None, no_prefect: bool) -> None:  # noqa: ANN001
    """A journey's occurrence: enter the customers its audience selects now, then tick it once."""
    from delivery import ledger

    moment = ledger.run_datetime(now)
    if no_prefect:
        from core.spec_loader import load_campaign
        from journeys.definition import JourneyFile
        from journeys.tick import run_journey

        result = run_journey(engine, JourneyFile(str(path), load_campaign(path)), moment, entry_key)
        name = next(iter(result.entered))
        summary = {
            "journey": name,
            "entered": result.entered[name],
            "moves": {name: result.moves},
            "sent": dict(result.sent),
        }
    else:
        from flows.run_campaign import run_campaign
        from relance.cli.prefect_server import prefect_api

        with prefect_api():
            summary = run_campaign(str(path), run_key=entry_key, now=moment.isoformat())
    name = summary["journey"]
    sent = ", ".join(f"{n:,} {s}" for s, n in sorted(summary["sent"].items())) or "nothing"
    console().print(
        f"journey {name}: {summary['entered']:,} customer(s) entered (control group included); "
        f"{summary['moves'].get(name, 0):,} step(s) done now; messages: {sent}"
    )
    console().print(
        f"the following steps run as they fall due: `relance journeys status {name}` shows where "
        "customers are; the `advance-journeys` deployment (`relance serve`) moves them on"
    )


@_app.command("work")
def work_cmd(
    run_key: str = _typer.Argument(..., help="Key of a started run, e.g. winback:2026-11-22"),
    campaign_file: _Path = _typer.Option(
        None, "--campaign", help="The campaign YAML (default: found by name)"
    ),
) -> None:
    """Join a started run as one more sender: claim its pending batches until none is left (PostgreSQL)."""
    from core.settings import get_settings
    from delivery import ledger, runs, send
    from relance.cli.common import ensure_db, fail

    engine = ensure_db()
    try:
        run = runs.join_run(engine, run_key, str(campaign_file) if campaign_file else None)
    except ledger.RunError as exc:
        fail(str(exc))
    ctx = runs.make_context(run)
    try:
        done = send.work(engine, ctx, get_settings().claim_timeout_seconds)
    except send.RunPaused as exc:
        fail(str(exc))
    _typer.echo(f"worker {ctx.worker}: {done} batch(es) sent")
    _print_run_summary(runs.summarize(engine, run.run_id))


@_app.command("deploy")
def deploy_cmd(
    check: bool = _typer.Option(False, "--check", help="Only report whether prefect.yaml is in sync"),
    output: _Path = _typer.Option(_Path("prefect.yaml"), "--output", help="Where to write prefect.yaml"),
    apply: bool = _typer.Option(
        False, "--apply", help="Also register the deployments on the Prefect API (PREFECT_API_URL)"
    ),
) -> None:
    """Write prefect.yaml: one deployment per scheduled campaign (then `prefect deploy --all`)."""
    from flows.deploy import apply_deployments, check_prefect_yaml, write_prefect_yaml
    from relance.cli.common import fail

    if check:
        problems = check_prefect_yaml(output)
        if problems:
            fail("\n".join(problems))
        _typer.echo(f"{output} is in sync with the campaigns")
        return
    names = write_prefect_yaml(output)
    _typer.echo(f"{output}: {len(names)} deployment(s): {', '.join(names) or '(no scheduled campaign)'}")
    if apply:
        from relance.cli.prefect_server import prefect_api

        with prefect_api() as local_url:
            applied = apply_deployments()
        where = (
            "in the local Prefect database (PREFECT_HOME; set PREFECT_API_URL to use your Prefect server)"
            if local_url
            else "on the Prefect API"
        )
        _typer.echo(f"registered {where}: {', '.join(applied) or 'nothing'}")


@_app.command("serve")
def serve_cmd() -> None:
    """Run every scheduled campaign on this machine on its schedule (Prefect `serve`), until stopped."""
    from flows.deploy import serve_campaigns

    serve_campaigns()
