"""`relance preview`: render a campaign's message for sample customers on every channel.

Imports are inside the command so that `relance --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from relance.cli.app import app
from relance.cli.common import console

SAMPLE_CUSTOMERS: list[dict[str, Any]] = [
    {"id": 0, "external_id": "sample-fr", "first_name": "Hélène", "last_name": "Lefèvre", "locale": "fr_FR",
     "email": "helene.lefevre@example.com", "phone": "+33612345678", "city": "Besançon"},
    {"id": 0, "external_id": "sample-en", "first_name": "John", "last_name": "Smith", "locale": "en_GB",
     "email": "john.smith@example.com", "phone": "+447700900123", "city": "London"},
    {"id": 0, "external_id": "sample-noname", "first_name": None, "last_name": None, "locale": "fr_FR",
     "email": "client@example.com", "phone": "+33698765432", "city": None},
]  # fmt: skip


SAMPLE_RECOMMENDATIONS: list[dict[str, Any]] = [
    {"item": "the-vert", "name": "Thé vert Sencha", "price": 8.9, "url": "https://maison.example/p/the-vert"},
    {"item": "miel", "name": "Miel de lavande", "price": 12.5, "url": "https://maison.example/p/miel"},
    {"item": "biscuits", "name": "Sablés bretons", "price": 4.2, "url": "https://maison.example/p/biscuits"},
]


def _load_campaign(path: Path):
    """The campaign model, through B1's loader when present (line numbers in errors)."""
    try:
        from core.spec_loader import load_campaign  # type: ignore[attr-defined]

        return load_campaign(path)
    except ImportError:
        import yaml

        from core.spec import Campaign

        return Campaign.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))


def _customers_from_db(customer: str | None, sample: int) -> list[dict[str, Any]]:
    """Customers from the database when it has them; [] when it has none (or no schema yet)."""
    from sqlalchemy import func, select
    from sqlalchemy.exc import SQLAlchemyError

    from core.db import get_engine
    from core.models import Customer

    try:
        with get_engine().connect() as conn:
            query = select(Customer.__table__).where(Customer.__table__.c.erased_at.is_(None))
            if customer is not None:
                query = query.where(Customer.__table__.c.external_id == customer)
            else:
                query = query.order_by(func.random()).limit(sample)
            return [dict(row._mapping) for row in conn.execute(query)]
    except SQLAlchemyError:
        return []


def sample_contexts(campaign: Any, customers: list[dict[str, Any]]) -> list[tuple[str, str, Any]]:
    """(variant name, message folder, RenderContext) for each customer and variant."""
    from channels.render import RenderContext

    out = []
    for variant in campaign.effective_variants():
        offer = {**campaign.offer, **variant.offer}
        for customer in customers:
            ctx = RenderContext(
                customer=customer,
                offer=offer,
                variant=variant.name,
                campaign=campaign.name,
                recommendations=SAMPLE_RECOMMENDATIONS,  # until the recommendations issue fills them
            )
            out.append((variant.name, variant.message, ctx))
    return out


def preview_items(campaign: Any, customers: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """(step or None, variant, message, RenderContext, channels or None) to render.

    A campaign renders every channel of its message (channels None); a journey
    renders each `send` step as the campaign it sends (journeys.definition:
    journey offer + step offer, then the variant's) on its strategy's channels.
    """
    if not campaign.is_journey:
        return [(None, *item, None) for item in sample_contexts(campaign, customers)]
    from core.spec import kind_of
    from journeys.definition import send_campaign, step_channels

    out: list[tuple[Any, ...]] = []
    for step in campaign.steps:
        if kind_of(step) == "send":
            channels = step_channels(campaign, step)
            items = sample_contexts(send_campaign(campaign, step), customers)
            out += [(step.name, *item, channels) for item in items]
    return out


def _highlight_sms(text: str, bad: list[str]):
    from rich.text import Text

    rendered = Text()
    for ch in text:
        rendered.append(ch, style="bold white on red" if ch in bad else None)
    return rendered


@app.command("preview")
def preview(
    file: Path = typer.Argument(..., help="A campaign or journey YAML file, e.g. campaigns/winback.yaml"),
    customer: str | None = typer.Option(None, "--customer", help="External id of a customer in the database"),
    sample: int = typer.Option(3, "--sample", help="Number of random customers from the database"),
    channel: str | None = typer.Option(None, "--channel", help="Only this channel: email, sms or push"),
    html: Path | None = typer.Option(None, "--html", help="Write e-mails and an index page into this folder"),
) -> None:
    """Render the campaign's message(s) for sample customers: SMS, push card, e-mails as HTML files."""
    from rich.panel import Panel
    from rich.table import Table

    from channels import sms_encoding
    from channels.render import Renderer, RenderError
    from channels.tracking_links import MemoryLinkRegistry

    if not file.exists():
        console().print(f"[red]{file}: no such file[/red]")
        raise typer.Exit(2)
    try:
        campaign = _load_campaign(file)
    except Exception as exc:  # noqa: BLE001 - shown to the marketer as is
        console().print(f"[red]{file}: {exc}[/red]")
        raise typer.Exit(2) from None
    customers = _customers_from_db(customer, sample)
    source = "database"
    if not customers:
        if customer is not None:
            console().print(f"[yellow]customer {customer!r} not in the database: using sample customers[/]")
        customers, source = SAMPLE_CUSTOMERS, "built-in samples"
    console().print(f"[bold]{campaign.name}[/bold]: {len(customers)} customer(s) from {source}")
    renderer = Renderer(links=MemoryLinkRegistry())  # short SMS links as sent (not clickable here)
    out_dir = html or Path("previews") / campaign.name
    index: list[tuple[str, str]] = []
    failed = False
    reported: set[tuple[str, str]] = set()  # (step, message) whose missing channels were said
    for number, (step, variant, message, ctx, wanted) in enumerate(preview_items(campaign, customers), 1):
        try:
            channels = [c for c in renderer.channels_of(message) if channel is None or c == channel]
            if wanted is not None:  # a journey's send step: the channels of its strategy
                missing = [c for c in wanted if c not in channels and (channel is None or c == channel)]
                if missing and (step, message) not in reported:
                    reported.add((step, message))
                    console().print(
                        f"[red]step {step}: {message} has no {'/'.join(missing)} content: add it to "
                        f"templates/{message}/ or drop it from the step's channels[/red]"
                    )
                    failed = True
                channels = [c for c in wanted if c in channels]
            rendered = renderer.render_all(message, channels, ctx)
        except RenderError as exc:
            console().print(f"[red]{exc}[/red]")
            failed = True
            continue
        who = ctx.customer.get("first_name") or "(no first name)"
        heading = f"{message} · variant {variant} · {who} · {ctx.customer.get('locale')}"
        if step is None:
            console().rule(heading)
        else:  # a plain line below the rule: a long heading is wrapped, never cut
            console().rule()
            console().print(f"[bold]step {step}[/bold] · {heading}", highlight=False)
        if "email" in rendered:
            email = rendered["email"]
            out_dir.mkdir(parents=True, exist_ok=True)
            prefix = f"{variant}" if step is None else f"{step}-{variant}"
            name = f"{number:02d}-{prefix}-{ctx.customer.get('external_id', number)}.html"
            (out_dir / name).write_text(email.html, encoding="utf-8")
            where = variant if step is None else f"step {step}, {variant}"
            index.append((name, f"{email.subject} — {who} ({ctx.customer.get('locale')}, {where})"))
            table = Table(show_header=False, box=None)
            table.add_column(no_wrap=True)
            table.add_column(overflow="fold")  # a link or address is folded, never cut: it must be checkable
            table.add_row("Subject", email.subject)
            table.add_row("Preheader", email.preheader)
            table.add_row("HTML", str(out_dir / name))
            for key, value in email.headers.items():
                table.add_row(key, value)
            console().print(Panel(table, title="e-mail", expand=False))
        if "sms" in rendered:
            sms = rendered["sms"]
            cost = sms_encoding.cost(sms.segments)
            info = f"{sms.encoding}, {sms.segments} segment(s), ~{cost:.3f} €"
            if sms.ucs2_chars:
                info += f" — UCS-2 forced by: {' '.join(sms.ucs2_chars)}"
            body = _highlight_sms(sms.text, sms.ucs2_chars)
            console().print(Panel(body, title="SMS", subtitle=info, width=60))
        if "push" in rendered:
            push = rendered["push"]
            card = f"[bold]{push.title}[/bold]\n{push.body}\n[dim]→ {push.deep_link}[/dim]"
            problems = push.problems()
            console().print(
                Panel(card, title="📱 push", subtitle="; ".join(problems) if problems else "fits", width=44)
            )
    if index:
        out_dir.mkdir(parents=True, exist_ok=True)
        items = "\n".join(f'<li><a href="{n}">{_escape(label)}</a></li>' for n, label in index)
        (out_dir / "index.html").write_text(
            "<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<title>{_escape(campaign.name)} previews</title></head>"
            f"<body><h1>{_escape(campaign.name)}</h1><ul>{items}</ul></body></html>",
            encoding="utf-8",
        )
        console().print(f"e-mail previews: {out_dir / 'index.html'}")
    if failed:
        raise typer.Exit(1)


def _escape(text: str) -> str:
    import html

    return html.escape(text)
