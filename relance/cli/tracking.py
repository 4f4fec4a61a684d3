"""`relance serve-tracking` (webhooks, links, conversions API) and `relance attribute`."""

from __future__ import annotations

from datetime import UTC, datetime

import typer

from relance.cli.app import app


@app.command("serve-tracking")
def serve_tracking(
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (0.0.0.0 behind a proxy)"),
    port: int = typer.Option(8800, "--port", help="TCP port"),
    public_base_url: str = typer.Option(
        None,
        "--public-base-url",
        help="The URL providers and readers reach us at (default: RELANCE_PUBLIC_BASE_URL); "
        "Twilio signs this URL, so it must match the webhook URL configured at Twilio",
    ),
    log_level: str = typer.Option("info", "--log-level"),
) -> None:
    """Serve the webhook and link endpoints under uvicorn until stopped (Ctrl-C)."""
    import uvicorn
    from rich import print as rprint

    from core.db import migrate
    from core.settings import get_settings
    from tracking.app import create_app

    settings = get_settings()
    if public_base_url:
        settings = settings.model_copy(update={"public_base_url": public_base_url})
    migrate(settings.database_url)
    if not settings.sendgrid_webhook_public_key:
        rprint("[yellow]RELANCE_SENDGRID_WEBHOOK_PUBLIC_KEY is not set: SendGrid webhooks will be refused[/]")
    if not settings.twilio_auth_token:
        rprint("[yellow]RELANCE_TWILIO_AUTH_TOKEN is not set: Twilio webhooks will be refused[/]")
    if not settings.conversions_api_key:
        rprint("[yellow]RELANCE_CONVERSIONS_API_KEY is not set: the conversions API is closed[/]")
    rprint(f"tracking server on http://{host}:{port} (public URL {settings.public_base_url})")
    uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level, proxy_headers=True)


@app.command("attribute")
def attribute_cmd(
    since: datetime = typer.Option(
        None,
        "--since",
        help="Only orders placed since this date (YYYY-MM-DD; default: since the first message)",
    ),
) -> None:
    """Attribute imported orders to the messages that led to them (and record control-group purchases)."""
    from rich import print as rprint

    from core.db import get_engine, migrate
    from tracking.attribution import attribute

    migrate()
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    with get_engine().begin() as conn:
        result = attribute(conn, since=since)
    rprint(
        f"{result.orders} orders examined: {result.attributed} newly attributed "
        f"({result.revenue_cents / 100:.2f} revenue), {result.control} control-group conversions recorded, "
        f"{result.window} other purchase(s) in a treated window (for the uplift)"
    )
