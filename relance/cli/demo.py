"""`relance demo`: the whole product end to end on the embedded defaults.

SQLite in the working directory, the outbox provider, Prefect's ephemeral
local API: nothing to configure and no account anywhere. The steps are the
real commands a marketer and an operator would run, in order.
"""

from __future__ import annotations

import shutil
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import typer

from relance.cli.app import app
from relance.cli.common import console, fail

PARIS = ZoneInfo("Europe/Paris")
# The demo's simulated world (tracking.simulate.Rates: purchases within each campaign's window). Every
# customer buys on their own with the same probability, treated or held out; winback's offer brings
# lapsed buyers back (+8 points where the message arrives), while the flash sale reaches fashion fans
# who would have bought anyway (no effect). The reports show one campaign that pays and one that does
# not; campaigns not named here get Rates()'s default effect.
DEMO_LIFT = {"winback": 0.08, "flash-sale": 0.0}


def last_sms_slot(now: datetime) -> datetime:
    """The latest 14:30 Paris time at or before ``now`` on a day commercial SMS are allowed.

    The demo sends SMS too, and the French rule forbids Sundays and public
    holidays; 14:30 Paris is inside every sample campaign's window, overseas
    customers' included. A demo run on a Sunday sends "as of" the Saturday before.
    """
    from audiences.policy import is_public_holiday

    slot = now.astimezone(PARIS).replace(hour=14, minute=30, second=0, microsecond=0)
    if slot > now:
        slot -= timedelta(days=1)
    while slot.weekday() == 6 or is_public_holiday(slot.date(), "Europe/Paris"):
        slot -= timedelta(days=1)
    return slot


def _reset(paths: list[Path]) -> None:
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def _step(title: str) -> float:
    console().rule(f"[bold cyan]{title}")
    return time.perf_counter()


@app.command("demo")
def demo(
    # 10,000: winback's control group (10 %) holds ~160 customers, enough for the report to conclude
    customers: int = typer.Option(10_000, "--customers", min=100, help="Size of the demo customer base"),
    seed: int = typer.Option(42, "--seed", help="Seed of the demo data and the simulated responses"),
    fresh: bool = typer.Option(True, "--fresh/--keep", help="Start from an empty database and outbox"),
) -> None:
    """Generate a demo base, run every sample campaign through Prefect, simulate responses, print reports."""
    from core.db import reset_engines
    from core.settings import get_settings
    from relance.cli.common import ensure_db

    started = time.perf_counter()
    settings = get_settings()
    if fresh:
        if not settings.database_url.startswith("sqlite:///"):
            fail("`relance demo --fresh` only resets a SQLite database; use --keep with another database")
        db_file = Path(settings.database_url.removeprefix("sqlite:///"))
        reset_engines()
        _reset(
            [
                db_file,
                Path(f"{db_file}-wal"),
                Path(f"{db_file}-shm"),
                settings.outbox_dir,
                settings.reports_dir,
                Path("demo-data"),
            ]
        )
    engine = ensure_db()

    _step(f"1. Demo customer base ({customers:,} customers, seed {seed})")
    from relance.cli.data import demo_data

    demo_data(
        customers=customers,
        seed=seed,
        orders_per_customer=4.0,
        out=Path("demo-data"),
        as_of=None,
        no_import=False,
    )

    _step("2. Validate the campaigns")
    from relance.cli.campaigns import validate_cmd

    paths = sorted(Path(settings.campaigns_dir).glob("*.yaml"))
    try:
        validate_cmd(files=paths, strict=False)
    except typer.Exit as exc:
        if exc.exit_code:
            fail("the sample campaigns do not validate")

    now = last_sms_slot(datetime.now(PARIS))
    from core.spec_loader import load_campaign
    from delivery.ledger import get_run
    from flows.run_campaign import run_campaign
    from relance.cli.campaigns import plan_cmd
    from relance.cli.demo_journey import run_demo_journey
    from relance.cli.prefect_server import prefect_api

    journeys = [p for p in paths if load_campaign(p).is_journey]
    runs: list[tuple[str, int]] = []
    with prefect_api():  # one local Prefect API for the whole demo, gone with the command even on kill -9
        for path in (p for p in paths if p not in journeys):
            _step(f"3. Plan and run {path.name} (as of {now:%a %d %b %Y %H:%M}, Paris)")
            plan_cmd(campaign_file=path, now=now.isoformat(), explain_id=None, output=None, as_json=False)
            summary = run_campaign(str(path), now=now.isoformat())
            with engine.connect() as conn:
                run = get_run(conn, summary["key"])
            runs.append((summary["campaign"], run["id"]))
        journey_names = []
        for path in journeys:
            _step(f"4. Journey {path.stem}: 10 simulated days (a demo clock)")
            journey_names.append(run_demo_journey(engine, path, now, seed))

    _step("5. Simulated responses to the campaigns through the tracking endpoints")
    from tracking.attribution import attribute
    from tracking.simulate import Rates, simulate_responses

    for i, (campaign, run_id) in enumerate(runs):
        rates = Rates(lift=DEMO_LIFT[campaign]) if campaign in DEMO_LIFT else None
        counts = simulate_responses(run_id, seed=seed + i, rates=rates)
        console().print(f"{campaign}: {counts}")
    with engine.begin() as conn:
        attribute(conn)

    _step("6. Reports")
    from relance.cli.reports import report

    for campaign in [c for c, _ in runs] + journey_names:
        try:
            report(campaign=campaign, run=None, since=None, all_=False, out=None)
        except typer.Exit as exc:
            if exc.exit_code not in (0, 3):  # 3 = an alert crossed: shown, not a demo failure
                raise
    report(campaign=None, run=None, since=None, all_=True, out=None)

    console().rule("[bold green]Demo complete")
    outbox, reports = settings.outbox_dir.resolve(), settings.reports_dir.resolve()
    console().print(f"outbox:  [bold]{outbox}[/bold] (e-mails as .eml, SMS and push as JSON lines)")
    console().print(f"reports: [bold]{reports}[/bold] (open the .html files in a browser)")
    console().print(f"database: {settings.database_url}  ·  {time.perf_counter() - started:.0f} s in all")
