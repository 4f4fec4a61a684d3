"""The schema is created by Alembic on SQLite and PostgreSQL alike."""

from sqlalchemy import inspect

from core.db import current_revision


def test_migrate_creates_every_table(engine, db_url):
    from sqlmodel import SQLModel

    import core.models  # noqa: F401

    tables = set(inspect(engine).get_table_names())
    assert set(SQLModel.metadata.tables) <= tables
    assert current_revision(db_url) is not None
