"""Alembic environment: runs migrations on the URL given by core.db.migrate."""

from alembic import context

from core.db import make_engine

config = context.config


def _target_metadata():
    # Imported lazily: only autogenerate needs the models.
    from sqlmodel import SQLModel

    import core.models  # noqa: F401

    return SQLModel.metadata


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    engine = make_engine(url, one_off=True)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=_target_metadata(),
            render_as_batch=connection.dialect.name == "sqlite",  # SQLite ALTERs need batch mode
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("relance migrations run online only: use `relance db upgrade`.")
run_migrations_online()
