"""Database engine and schema migrations.

SQLite (the default, a file in the working directory) and PostgreSQL
(``RELANCE_DATABASE_URL=postgresql+psycopg://...``) are both first-class.
The schema is only ever created or upgraded by Alembic (``migrate``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.pool import NullPool
from sqlmodel import Session

from core.settings import get_settings

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets readers (reports, the tracking server) work while a run writes;
    # busy_timeout turns brief lock contention into waiting instead of errors.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def make_engine(url: str, one_off: bool = False) -> Engine:
    """A new engine for ``url`` with the pragmas and pool settings relance relies on.

    ``one_off`` engines keep no pooled connection (migrations, CLI one-shots).
    """
    pooling = {"poolclass": NullPool} if one_off else {}
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **pooling)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if not one_off:
        pooling = {"pool_pre_ping": True, "pool_size": 10, "max_overflow": 20}
    return create_engine(url, **pooling)


_engines: dict[str, Engine] = {}
_migrated: set[str] = set()  # URLs upgraded to head by this process


def get_engine(url: str | None = None) -> Engine:
    """The process-wide engine for ``url`` (default: the configured database)."""
    url = url or get_settings().database_url
    if url not in _engines:
        _engines[url] = make_engine(url)
    return _engines[url]


def reset_engines() -> None:
    """Dispose every cached engine (tests switch databases between cases; the demo recreates its file)."""
    for engine in _engines.values():
        engine.dispose()
    _engines.clear()
    _migrated.clear()


@contextmanager
def session_scope(engine: Engine | None = None) -> Iterator[Session]:
    """A session committed on success and rolled back on error."""
    with Session(engine or get_engine(), expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def alembic_config(url: str):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(url: str | None = None, revision: str = "head") -> None:
    """Create or upgrade the schema to ``revision`` with Alembic."""
    from alembic import command

    url = url or get_settings().database_url
    command.upgrade(alembic_config(url), revision)


def ready_engine(url: str | None = None) -> Engine:
    """The engine of ``url``, its schema upgraded to head first (idempotent, once per process).

    Every entry point (CLI commands, flow runs started by a Prefect worker) calls this, so a fresh
    database just works and a deployment never meets a schema older than its code.
    """
    url = url or get_settings().database_url
    if url not in _migrated:
        migrate(url)
        _migrated.add(url)
    return get_engine(url)


def current_revision(url: str | None = None) -> str | None:
    from alembic.runtime.migration import MigrationContext

    engine = get_engine(url)
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
