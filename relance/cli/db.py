"""`relance db ...`: schema migrations."""

import typer
from rich import print as rprint

from core.db import current_revision, migrate
from relance.cli.app import app

db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def upgrade(revision: str = typer.Argument("head", help="Target revision")) -> None:
    """Create or upgrade the schema of RELANCE_DATABASE_URL."""
    migrate(revision=revision)
    rprint(f"schema at revision [bold]{current_revision()}[/bold]")


@db_app.command("current")
def current() -> None:
    """Print the schema revision of the database."""
    rprint(current_revision() or "(empty database)")
