"""Helpers shared by the CLI modules: a ready database, and refusing with a clear message."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from sqlalchemy import Engine


def console() -> Console:
    """A console sized from the environment at call time (COLUMNS, the terminal), not at import."""
    return Console()


def err_console() -> Console:
    """The standard-error console, sized like `console()`."""
    return Console(stderr=True)


def ensure_db(url: str | None = None) -> Engine:
    """The engine of the configured database, migrated to head first (idempotent, once per process)."""
    from core.db import ready_engine

    return ready_engine(url)


def fail(message: str) -> NoReturn:
    """Print ``message`` in red on stderr and exit with status 1."""
    err_console().print(f"[bold red]error:[/bold red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)
