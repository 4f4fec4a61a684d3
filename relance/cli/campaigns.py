"""`relance plan`, `validate` and `schema`: what a campaign would do, and whether it is written right."""

from pathlib import Path as _Path
from typing import Optional as _Optional  # noqa: UP035

import typer as _typer

from relance.cli.app import app as _app
from relance.cli.common import console

# --------------------------------------------------------------------------
# Selection (issue 3): plan
# --------------------------------------------------------------------------


def _load_campaign_for_plan(path: _Path):
    """The campaign of ``path`` via core.spec_loader (line numbers), else plain YAML + pydantic."""
    from relance.cli.common import fail

    if not path.is_file():
        fail(f"{path}: no such campaign file; write its path, e.g. campaigns/winback.yaml")
    try:
        from core.spec_loader import load_campaign
    except ImportError:
        import yaml

        from core.spec import Campaign

        def load_campaign(p):  # noqa: ANN001, ANN202 - fallback until the loader exists
            return Campaign.model_validate(yaml.safe_load(_Path(p).read_text(encoding="utf-8")))

    try:
        return load_campaign(path)
    except Exception as exc:  # noqa: BLE001 - shown to the marketer with the file name
        fail(f"{path}: {exc}")


def _sms_sampler(engine, campaign):  # noqa: ANN001, ANN202
    """Segments of the rendered SMS of one sample customer (channels.render), for the cost estimate."""
    from sqlalchemy import select

    from channels.render import RenderContext, Renderer
    from channels.tracking_links import MemoryLinkRegistry
    from core.models import Customer, CustomerFeatures

    renderer = Renderer(links=MemoryLinkRegistry())  # short SMS links, as sent: right segment count
    variants = {v.message: v for v in campaign.effective_variants()}

    def segments(message: str, customer_id: int) -> int | None:
        with engine.connect() as conn:
            ctab, ftab = Customer.__table__, CustomerFeatures.__table__
            cust = conn.execute(select(ctab).where(ctab.c.id == customer_id))
            feats = conn.execute(select(ftab).where(ftab.c.customer_id == customer_id))
            customer, features = dict(cust.mappings().one()), dict(feats.mappings().first() or {})
        variant = variants.get(message)
        offer = {**campaign.offer, **(variant.offer if variant else {})}
        ctx = RenderContext(
            customer=customer, features=features, offer=offer, campaign=campaign.name,
            variant=variant.name if variant else "default",
        )  # fmt: skip
        return renderer.render(message, "sms", ctx).segments

    return segments


def _print_funnel(funnel: dict) -> None:
    from rich.table import Table

    table = Table(title=f"plan {funnel['campaign']} at {funnel['now']}")
    for col, just in (("step", "left"), ("customers", "right"), ("removed", "right"), ("why", "left")):
        table.add_column(col, justify=just)
    for step in funnel["steps"]:
        removed = f"-{step['removed']:,}" if step["step"] != "base" else ""
        why = step["why"] if step["step"] != "base" else ""
        table.add_row(step["step"], f"{step['count']:,}", removed, why)
    ctl = funnel["control"]
    table.add_row(
        "control group", f"{funnel['recipients']['customers']:,}", f"-{ctl['held_out_customers']:,}",
        f"{ctl['percent']}% held out (stable hash), not sent",
    )  # fmt: skip
    console().print(table)
    rows = Table(title=f"recipients (strategy {funnel['strategy']})")
    for col in ("variant", "channel", "messages", "held out"):
        rows.add_column(col, justify="right" if col in ("messages", "held out") else "left")
    grouped: dict[tuple, list[int]] = {}
    for r in funnel["rows"]:
        grouped.setdefault((r["variant"], r["channel"]), [0, 0])[1 if r["in_control"] else 0] += r["messages"]
    for (variant, channel), (sent, held) in sorted(grouped.items()):
        rows.add_row(variant, channel, f"{sent:,}", f"{held:,}")
    console().print(rows)
    win = funnel["window"]
    if win["deferred_customers"]:
        n = win["deferred_customers"]
        console().print(f"[yellow]{n:,} customer(s) outside their window now[/yellow]:")
        for z in win["by_timezone"][:10]:
            reasons = "; ".join(z["reasons"].values())
            console().print(f"  {z['timezone']}: {z['customers']:,} ({reasons}); opens {z['next_open']}")
    cost = funnel["cost"]
    console().print(
        f"estimated cost: {cost['total_euros']:.2f} EUR (SMS {cost['sms_messages']:,} x "
        f"{cost['sms_segments_per_message']} segment(s) x {cost['sms_price_per_segment']} = "
        f"{cost['sms_euros']:.2f} EUR; {cost['note']})"
    )


def _write_plan_csv(engine, campaign, now, path: _Path) -> int:  # noqa: ANN001
    """Stream the planned recipients (the run's exact rows) into a CSV file."""
    import csv

    from sqlalchemy import select

    from audiences.selection import build_selection
    from core.models import Customer

    cust = Customer.__table__
    sel = build_selection(campaign, now, bind=engine).subquery("sel")
    query = (
        select(sel.c.customer_id, cust.c.external_id, sel.c.channel, sel.c.variant, sel.c.message)
        .add_columns(sel.c.in_control)
        .join_from(sel, cust, cust.c.id == sel.c.customer_id)
        .order_by(sel.c.customer_id, sel.c.channel)
    )
    n = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh, engine.connect() as conn:
        writer = csv.writer(fh)
        writer.writerow(["customer_id", "external_id", "channel", "variant", "message", "in_control"])
        for row in conn.execution_options(yield_per=20_000).execute(query):
            writer.writerow([*row[:5], int(bool(row[5]))])
            n += 1
    return n


@_app.command("plan")
def plan_cmd(
    campaign_file: _Path = _typer.Argument(..., help="The campaign YAML, e.g. campaigns/winback.yaml"),
    now: str = _typer.Option(None, "--now", help="Plan as if at this ISO date-time (default: now)"),
    explain_id: str = _typer.Option(None, "--explain", help="A customer id (the shop's): in or out, and why"),
    output: _Optional[tuple[str, _Path]] = _typer.Option(  # noqa: UP045
        None, "--output", help="`--output csv FILE`: write the planned recipients"
    ),
    as_json: bool = _typer.Option(False, "--json", help="Print the funnel as JSON"),
) -> None:
    """Show who a run would reach, before any send: the funnel step by step, the recipients, the cost."""
    import json

    from audiences.plan import explain, funnel
    from audiences.rules import RuleError
    from audiences.selection import SelectionError
    from core.models import utcnow
    from relance.cli.common import console, ensure_db, fail

    campaign = _load_campaign_for_plan(campaign_file)
    at = utcnow()
    if now:
        from datetime import UTC, datetime

        try:
            at = datetime.fromisoformat(now)
        except ValueError:
            fail(f"--now {now!r}: write an ISO date-time, e.g. 2026-11-24T10:00:00+01:00")
        at = at if at.tzinfo else at.replace(tzinfo=UTC)
    engine = ensure_db()
    if campaign.is_journey:  # issue 17: entry funnel, the tick now (rolled back), the projection
        from relance.cli.journeys import plan_journey_cmd

        plan_journey_cmd(engine, campaign, at, as_json=as_json, refused=explain_id or output)
        return
    try:
        with engine.connect() as conn:
            if explain_id:
                result = explain(conn, campaign, at, explain_id)
                if as_json:
                    console().print_json(json.dumps(result, default=str))
                    return
                verdict = "[green]IN[/green]" if result["in"] else "[red]OUT[/red]"
                console().print(f"customer {explain_id}: {verdict} (step {result['step']}): {result['why']}")
                for ch, state in result.get("channels", {}).items():
                    console().print(f"  {ch}: {state}")
                for msg in result.get("messages", []):
                    console().print(
                        f"  -> {msg['channel']} variant {msg['variant']} message {msg['message']}"
                    )
                return
            sampler = _sms_sampler(engine, campaign)
            result = funnel(conn, campaign, at, sms_segments=sampler)
    except (RuleError, SelectionError) as exc:
        fail(f"{campaign_file}: {exc}")
    if as_json:
        console().print_json(json.dumps(result, default=str))
    else:
        _print_funnel(result)
    if output:
        fmt, path = output
        if fmt != "csv":
            fail(f"--output {fmt}: only csv is supported; write `--output csv recipients.csv`")
        n = _write_plan_csv(engine, campaign, at, path)
        console().print(f"{path}: {n:,} planned row(s)")


# --------------------------------------------------------------------------
# Campaign language (issue 3): validate, schema
# --------------------------------------------------------------------------


@_app.command("validate")
def validate_cmd(
    files: list[_Path] = _typer.Argument(None, help="Campaign files (default: every campaigns/*.yaml)"),
    strict: bool = _typer.Option(False, "--strict", help="Warnings fail too (exit code 1)"),
) -> None:
    """Check campaigns before they run: YAML, schema, segments, templates, fields, and each rendering."""
    from core.settings import get_settings
    from relance.cli.validation import campaign_files, validate_files

    paths = list(files or campaign_files(_Path(get_settings().campaigns_dir)))
    if not paths:
        folder = get_settings().campaigns_dir
        _typer.echo(f"no campaign file in {folder}/: write one (see campaigns/README.md)")
        raise _typer.Exit(1)
    problems = validate_files(paths)
    for problem in problems:
        _typer.echo(str(problem))
    errors = sum(p.severity == "error" for p in problems)
    warnings = len(problems) - errors
    if not files and not errors and _Path("prefect.yaml").is_file():
        from flows.deploy import check_prefect_yaml  # schedules vs deployments (imports Prefect: slow)

        drift = check_prefect_yaml(_Path("prefect.yaml"), _Path(get_settings().campaigns_dir))
        for text in drift:
            _typer.echo(f"warning: {text}")
        warnings += len(drift)
    _typer.echo(f"{len(paths)} campaign file(s) checked: {errors} error(s), {warnings} warning(s)")
    if errors or (strict and warnings):
        raise _typer.Exit(1)


@_app.command("schema")
def schema_cmd(
    output: _Path = _typer.Option(None, "--output", "-o", help="Default: campaigns/schema.json"),
    check: bool = _typer.Option(False, "--check", help="Only report whether the file is up to date"),
) -> None:
    """Write the JSON Schema of campaign files, so that editors complete and check the YAML as you type."""
    from core.settings import get_settings
    from core.spec_loader import schema_text

    path = output or _Path(get_settings().campaigns_dir) / "schema.json"
    text = schema_text()
    if check:
        current = path.read_text(encoding="utf-8") if path.is_file() else None
        if current != text:
            _typer.echo(f"{path} is out of date with core/spec.py: run `relance schema`")
            raise _typer.Exit(1)
        _typer.echo(f"{path} is up to date")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    _typer.echo(f"{path}: JSON Schema of campaign files written")
