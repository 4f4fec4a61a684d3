"""Shared fixtures: real SQLite and PostgreSQL databases, settings in a temp dir, Prefect.

PostgreSQL tests use the server on 127.0.0.1:5432 (user postgres, trust auth),
one fresh database per test. In CI (CI=true) an unreachable server fails the
test; elsewhere it is skipped with a message.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_ADMIN_URL = os.environ.get("RELANCE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REPO = Path(__file__).resolve().parent.parent


def _pg_admin():
    import psycopg

    return psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)


def postgres_or_skip():
    """A connection to the admin database, or skip (fail in CI) if unreachable."""
    try:
        return _pg_admin()
    except Exception as exc:  # noqa: BLE001 - any connection failure means "no server"
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL on 127.0.0.1:5432 is unreachable in CI: {exc}")
        pytest.skip(f"PostgreSQL on 127.0.0.1:5432 unreachable ({exc}); these tests run in CI")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test."""
    admin = postgres_or_skip()
    name = f"relance_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        from core.db import reset_engines

        reset_engines()
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'relance.db'}"


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sqlite_url: str):
    """Settings pointing every directory and the database into tmp_path (SQLite)."""
    from core.db import reset_engines
    from core.settings import get_settings

    monkeypatch.setenv("RELANCE_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("RELANCE_OUTBOX_DIR", str(tmp_path / "outbox"))
    monkeypatch.setenv("RELANCE_REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.setenv("RELANCE_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("RELANCE_CAMPAIGNS_DIR", str(REPO / "campaigns"))
    monkeypatch.setenv("RELANCE_TEMPLATES_DIR", str(REPO / "templates"))
    monkeypatch.setenv("RELANCE_SEGMENTS_FILE", str(REPO / "audiences" / "segments.yaml"))
    monkeypatch.setenv("RELANCE_SECRET_KEY", "test-secret")
    get_settings.cache_clear()
    reset_engines()
    yield get_settings()
    reset_engines()
    get_settings.cache_clear()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, settings, monkeypatch: pytest.MonkeyPatch) -> str:
    """A migrated database: each test using it runs on SQLite and on PostgreSQL."""
    from core.db import migrate, reset_engines
    from core.settings import get_settings

    url = settings.database_url if request.param == "sqlite" else request.getfixturevalue("pg_url")
    monkeypatch.setenv("RELANCE_DATABASE_URL", url)
    get_settings.cache_clear()
    reset_engines()
    migrate(url)
    return url


@pytest.fixture
def engine(db_url: str):
    from core.db import get_engine

    return get_engine(db_url)


@pytest.fixture
def sqlite_engine(settings):
    """A migrated SQLite database only (for tests that need no PostgreSQL variant)."""
    from core.db import get_engine, migrate

    migrate(settings.database_url)
    return get_engine(settings.database_url)


@pytest.fixture(scope="session")
def prefect_harness():
    """The real Prefect engine with a temporary API server, started once per session.

    The server's telemetry is off: tests must not call out (this machine has no
    internet; the failed attempt logged an error and held the server's database).
    """
    from prefect.testing.utilities import prefect_test_harness

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

    with prefect_test_harness(server_startup_timeout=120):
        yield


# --- fake provider servers (issue 5): sendgrid_fake, twilio_fake, fcm_fake and *_env fixtures ---
from tests.fakes import (  # noqa: E402, F401 - pytest fixtures, registered by being imported here
    fcm_env,
    fcm_fake,
    sendgrid_env,
    sendgrid_fake,
    twilio_env,
    twilio_fake,
)
