"""Migrations upgrade a database that already holds data: rows survive, the revision reaches head."""

from datetime import UTC, date, datetime

from alembic.script import ScriptDirectory
from sqlalchemy import text

from core.db import alembic_config, current_revision, get_engine, migrate


def test_upgrade_from_0001_keeps_the_data(db_url):
    # the fixture migrated to head; rebuild the database at 0001 (dropping is simpler than downgrades)
    engine = get_engine(db_url)
    _reset(engine)
    migrate(db_url, "0001")
    assert current_revision(db_url) == "0001"
    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO customer (id, external_id, email, locale, timezone, signup_date, created_at, "
                "updated_at) "
                "VALUES (1, 'C1', 'a@example.fr', 'fr_FR', 'Europe/Paris', :d, :now, :now)"
            ),
            {"d": date(2024, 1, 2), "now": now},
        )
        conn.execute(
            text(
                "INSERT INTO orders (id, external_id, customer_id, ordered_at, amount_cents, currency) "
                "VALUES (1, 'O1', 1, :now, 1234, 'EUR')"
            ),
            {"now": now},
        )
        conn.execute(
            text(
                "INSERT INTO consent (customer_id, channel, status, updated_at, source) "
                "VALUES (1, 'email', 'granted', :now, 'import')"
            ),
            {"now": now},
        )
    migrate(db_url)
    heads = ScriptDirectory.from_config(alembic_config(db_url)).get_heads()
    assert current_revision(db_url) == heads[0]
    with engine.connect() as conn:
        assert conn.execute(text("SELECT external_id, email FROM customer")).all() == [("C1", "a@example.fr")]
        assert conn.execute(text("SELECT amount_cents FROM orders")).scalar_one() == 1234
        assert conn.execute(text("SELECT status FROM consent")).scalar_one() == "granted"
        # 0006 filled customer_reach from the rows already there, 0010 moved the flags into customer
        reach = text("SELECT consent_email, consent_sms, suppressed_email FROM customer WHERE id = 1")
        assert conn.execute(reach).one() == (1, 0, 0)


def _reset(engine) -> None:
    """Drop every table (and PostgreSQL's trigger functions) to rebuild the database at an older revision."""
    from sqlalchemy import MetaData

    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        return
    meta = MetaData()
    meta.reflect(engine)
    with engine.begin() as conn:
        meta.drop_all(conn)
