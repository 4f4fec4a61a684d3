"""Public entry points of the CSV import (the implementation is in audiences/csv_import/).

Every import is an idempotent upsert by external id, chunk by chunk: a file
refused as a whole raises ``FileRefused`` before anything is written; a wrong
row is rejected with its line number and the valid rows are kept.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine

from audiences.csv_import import FileRefused, ImportReport, run_import
from core.db import get_engine


def import_file(kind: str, path: Path | str, engine: Engine | None = None, **options) -> ImportReport:
    """Import ``path`` as ``kind`` (customers, orders, suppressions, devices, events)."""
    return run_import(kind, path, engine or get_engine(), **options)


def import_customers(path: Path | str, engine: Engine | None = None, **options) -> ImportReport:
    return import_file("customers", path, engine, **options)


def import_orders(path: Path | str, engine: Engine | None = None, **options) -> ImportReport:
    return import_file("orders", path, engine, **options)


def import_suppressions(path: Path | str, engine: Engine | None = None, **options) -> ImportReport:
    return import_file("suppressions", path, engine, **options)


def import_devices(path: Path | str, engine: Engine | None = None, **options) -> ImportReport:
    return import_file("devices", path, engine, **options)


def import_events(path: Path | str, engine: Engine | None = None, **options) -> ImportReport:
    return import_file("events", path, engine, **options)


__all__ = [
    "FileRefused",
    "ImportReport",
    "import_customers",
    "import_devices",
    "import_events",
    "import_file",
    "import_orders",
    "import_suppressions",
]
