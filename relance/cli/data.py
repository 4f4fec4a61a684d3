"""`relance import ...`, `relance features ...`, `relance customers ...` and `relance demo-data`.

Heavy modules are imported inside the commands so that `relance --help` stays fast.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import typer
from rich.table import Table

from relance.cli.app import app
from relance.cli.common import console, ensure_db, fail

import_app = typer.Typer(
    help="Import CSV files into the customer base (idempotent upserts; see audiences/README.md).",
    no_args_is_help=True,
)
features_app = typer.Typer(
    help="Customer features (recency, frequency, monetary value...).", no_args_is_help=True
)
customers_app = typer.Typer(help="One customer's data: export it, or erase it.", no_args_is_help=True)
app.add_typer(import_app, name="import")
app.add_typer(features_app, name="features")
app.add_typer(customers_app, name="customers")
events_app = typer.Typer(help="Customer events relance derives and keeps (issue 18).", no_args_is_help=True)
app.add_typer(events_app, name="events")

SHOWN_PROBLEMS = 20
FileArg = typer.Argument(..., help="The CSV file (UTF-8, comma or semicolon separated, header on line 1).")
EncodingOpt = typer.Option(
    "utf-8", "--encoding", help="Encoding of the file, e.g. cp1252 for an old Excel export."
)
ProblemsOpt = typer.Option(
    None, "--problems", help="Where to write every rejected row and warning (default: FILE.problems.csv)."
)
FeaturesOpt = typer.Option(True, "--features/--no-features", help="Refresh changed customers' features.")
WorkersOpt = typer.Option(None, "--workers", help="Validation processes (default: automatic, 0 = none).")


def _run_import(kind: str, path: Path, encoding: str, problems: Path | None, workers: int | None):
    from audiences.importer import FileRefused, import_file

    engine = ensure_db()
    try:
        with console().status(f"importing {path} ...") as status:
            report = import_file(
                kind,
                path,
                engine,
                encoding=encoding,
                workers=workers,
                progress=lambda r: status.update(f"importing {path}: {r.rows:,} rows read"),
            )
    except FileRefused as exc:
        fail(str(exc))
    _print_report(report, problems or path.with_name(path.stem + ".problems.csv"))
    return report


def _print_report(report, problems_path: Path) -> None:
    table = Table(title=f"import {report.kind}: {report.path}", show_header=False)
    for label, value in (
        ("rows read", report.rows),
        ("inserted", report.inserted),
        ("updated", report.updated),
        ("unchanged", report.unchanged),
        ("rejected", len(report.rejected)),
        ("warnings", len(report.warnings)),
        ("seconds", f"{report.seconds:.1f}"),
    ):
        table.add_row(label, f"{value:,}" if isinstance(value, int) else value)
    console().print(table)
    for title, items, style in (("rejected", report.rejected, "red"), ("warning", report.warnings, "yellow")):
        for p in items[:SHOWN_PROBLEMS]:
            console().print(
                f"[{style}]{title}[/{style}] line {p.line} ({p.key}): {p.reason}", highlight=False
            )
        if len(items) > SHOWN_PROBLEMS:
            console().print(f"... and {len(items) - SHOWN_PROBLEMS:,} more {title} rows")
    if report.rejected or report.warnings:
        report.write_problems(problems_path)
        console().print(f"every rejected row and warning, with its line: [bold]{problems_path}[/bold]")


def _refresh_features(engine) -> None:
    from audiences.features import refresh

    result = refresh(engine)
    console().print(f"features refreshed for {result.customers:,} customers in {result.seconds:.1f} s")


@import_app.command("customers")
def import_customers(
    file: Path = FileArg,
    encoding: str = EncodingOpt,
    problems: Path | None = ProblemsOpt,
    workers: int | None = WorkersOpt,
    features: bool = FeaturesOpt,
) -> None:
    """Upsert customers by external_id: profile, interests (a|b|c) and consent per channel (yes/no/empty).

    Rows with an invalid e-mail, phone or value are rejected with their line number;
    the valid rows are kept. A wrong header or encoding refuses the whole file.
    """
    _run_import("customers", file, encoding, problems, workers)
    if features:
        _refresh_features(ensure_db())


@import_app.command("orders")
def import_orders(
    file: Path = FileArg,
    encoding: str = EncodingOpt,
    problems: Path | None = ProblemsOpt,
    workers: int | None = WorkersOpt,
    features: bool = FeaturesOpt,
    attribute: bool = typer.Option(
        True,
        "--attribute/--no-attribute",
        help="Attribute the purchases of the last 90 days to the messages that led to them "
        "(older backfills: `relance attribute --since DATE`).",
    ),
) -> None:
    """Upsert orders by external_id, attached to customers by customer_external_id (unknown: rejected)."""
    report = _run_import("orders", file, encoding, problems, workers)
    if features:
        _refresh_features(ensure_db())
    if attribute and report.accepted:
        _attribute_recent(ensure_db())


def _attribute_recent(engine) -> None:
    """Conversions from imported orders: no purchase older than the longest conversion window can
    match a message sent since, so a daily import only needs that span (attribution is idempotent)."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import select

    from core.models import LedgerEntry
    from tracking.attribution import MAX_WINDOW_DAYS, attribute

    with engine.begin() as conn:
        if conn.execute(select(LedgerEntry.id).limit(1)).first() is None:
            return  # no campaign has run yet: nothing to attribute to
        result = attribute(conn, since=datetime.now(UTC) - timedelta(days=MAX_WINDOW_DAYS))
    if result.orders:
        console().print(
            f"conversions: {result.attributed:,} purchase(s) attributed to a message "
            f"({result.revenue_cents / 100:,.2f} revenue), {result.control:,} control-group purchase(s), "
            f"{result.window:,} other purchase(s) in a treated window (for the uplift)"
        )


@import_app.command("suppressions")
def import_suppressions(
    file: Path = FileArg, encoding: str = EncodingOpt, problems: Path | None = ProblemsOpt
) -> None:
    """Add addresses never to contact (a previous tool's unsubscribes, bounces...) to the suppression list."""
    _run_import("suppressions", file, encoding, problems, 0)


@import_app.command("devices")
def import_devices(
    file: Path = FileArg, encoding: str = EncodingOpt, problems: Path | None = ProblemsOpt
) -> None:
    """Upsert push devices by token (customer_external_id, token, platform ios/android/web)."""
    _run_import("devices", file, encoding, problems, 0)


@import_app.command("events")
def import_events(
    file: Path = FileArg, encoding: str = EncodingOpt, problems: Path | None = ProblemsOpt
) -> None:
    """Backfill customer events: event_id, type, occurred_at, external_id and/or email, properties (JSON).

    Checked like POST /events against the declared types (RELANCE_EVENTS_FILE); events of customers
    not imported yet are kept and attached when they are. Re-running a file stores nothing twice.
    """
    from core.yaml_positions import SpecError

    try:
        _run_import("events", file, encoding, problems, 0)
    except SpecError as exc:
        fail(f"the event types file has errors, nothing was imported:\n{exc}")


@events_app.command("derive")
def events_derive(
    day: str | None = typer.Option(None, "--date", help="The UTC day YYYY-MM-DD (default: today)."),
) -> None:
    """Store the day's anniversaries and `lapsing` events (idempotent: a day run twice stores them once)."""
    from datetime import UTC, datetime

    from audiences.customer_events import derive_daily

    try:
        when = date.fromisoformat(day) if day else datetime.now(UTC).date()
    except ValueError:
        fail(f"--date {day!r} is not a date; write 2026-12-04")
    with ensure_db().begin() as conn:
        counts = derive_daily(conn, when)
    console().print(", ".join(f"{name}: {n:,}" for name, n in counts.items()) + f" (new events of {when})")


@events_app.command("purge")
def events_purge() -> None:
    """Delete events past their type's retention_days (RELANCE_EVENTS_FILE; built-in types: in code)."""
    from audiences.customer_events import purge_expired
    from core.yaml_positions import SpecError

    try:
        with ensure_db().begin() as conn:
            deleted = purge_expired(conn)
    except SpecError as exc:
        fail(f"the event types file has errors, nothing was deleted:\n{exc}")
    console().print(f"{deleted:,} event(s) past their retention deleted")


@features_app.command("refresh")
def features_refresh(
    all_: bool = typer.Option(
        False, "--all", help="Recompute every customer (moves recency and tenure forward)."
    ),
) -> None:
    """Recompute customer features in SQL: by default only customers changed by an import."""
    from audiences.features import refresh

    result = refresh(ensure_db(), full=all_)
    console().print(f"features computed for {result.customers:,} customers in {result.seconds:.1f} s")


@customers_app.command("export")
def customers_export(
    customer: str = typer.Argument(..., help="External id (or internal id) of the customer."),
    out: Path | None = typer.Option(None, "--out", help="Write the JSON to this file instead of stdout."),
) -> None:
    """Print as JSON everything stored about one customer (profile, consents, history, orders, messages)."""
    from audiences.privacy import UnknownCustomer, export, to_json

    try:
        data = to_json(export(customer, ensure_db()))
    except UnknownCustomer as exc:
        fail(str(exc))
    if out:
        out.write_text(data + "\n", encoding="utf-8")
        console().print(f"written to {out}")
    else:
        typer.echo(data)


@customers_app.command("forget")
def customers_forget(
    customer: str = typer.Argument(..., help="External id (or internal id) of the customer."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Erase one customer's personal data, withdraw every consent and suppress their addresses (hashed).

    Orders and sent-message rows stay, anonymous, for revenue and uplift figures.
    """
    from audiences.privacy import UnknownCustomer, forget

    if not yes:
        typer.confirm(f"Erase the personal data of customer {customer}? This cannot be undone", abort=True)
    try:
        done = forget(customer, ensure_db())
    except UnknownCustomer as exc:
        fail(str(exc))
    console().print(
        f"customer {done['external_id']} (id {done['customer_id']}) erased at "
        f"{done['erased_at']:%Y-%m-%d %H:%M} UTC; "
        f"removed {done['device']} device(s), {done['customer_interest']} interest(s)"
    )


@app.command("demo-data")
def demo_data(
    customers: int = typer.Option(10_000, "--customers", min=1, help="How many customers to generate."),
    seed: int = typer.Option(42, "--seed", help="Same seed (and --as-of) = same files, byte for byte."),
    orders_per_customer: float = typer.Option(4.0, "--orders-per-customer", min=0, help="Average orders."),
    out: Path = typer.Option(Path("demo-data"), "--out", help="Directory for the CSV files."),
    as_of: str | None = typer.Option(None, "--as-of", help="Reference date YYYY-MM-DD (default: today)."),
    no_import: bool = typer.Option(False, "--no-import", help="Only write the CSV files."),
) -> None:
    """Generate a realistic French customer base (customers, orders, devices, suppressions) and import it."""
    import time

    from audiences.demo_data import generate

    try:
        reference = date.fromisoformat(as_of) if as_of else None
    except ValueError:
        fail(f"--as-of {as_of!r} is not a date; write 2026-11-01")
    started = time.perf_counter()
    with console().status("generating ..."):
        files = generate(out, customers, seed=seed, orders_per_customer=orders_per_customer, as_of=reference)
    console().print(f"wrote {files.counts} to {out}/ in {time.perf_counter() - started:.1f} s")
    if no_import:
        return
    for kind, path in (
        ("customers", files.customers),
        ("orders", files.orders),
        ("devices", files.devices),
        ("suppressions", files.suppressions),
    ):
        _run_import(kind, path, "utf-8", None, None)
    _refresh_features(ensure_db())
