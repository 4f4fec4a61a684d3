"""Targeting models: scores keyed by a small integer per (model, version).

Scoring 1M customers wrote a million ``customer_score`` rows whose table, primary
key and ``(model, version, score)`` index all began with the model and version
names: the write was 7.4-10.6 s of the 21.5-23.2 s that response and uplift took
on the 1M bench (target 20 s). Now ``score_version`` holds one row per scored
(model, version) with its ``scored_at``, and ``customer_score`` is keyed by
``(version_id, customer_id)`` (WITHOUT ROWID on SQLite: the primary key is the
table) with an index on ``(version_id, score)`` for ``top`` and ``score`` rules.
Measured in an isolated SQLite file, 1M rows per version: 10.5-12.3 s -> 6.8-7.4 s.
Existing scores are copied over in key order.

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCORE_COLUMNS = "score, score_email, score_sms, score_push"


def _set_aside(table: str, aside: str) -> None:
    """Rename ``table`` (and, on PostgreSQL, its primary key index, whose name the new table takes)."""
    op.rename_table(table, aside)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER INDEX {table}_pkey RENAME TO {aside}_pkey")


def upgrade() -> None:
    op.create_table(
        "score_version",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("model", sa.String(length=32), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("scored_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.UniqueConstraint("model", "version", name="uq_score_version_model_version"),
    )
    op.execute(
        "INSERT INTO score_version (model, version, scored_at) "
        "SELECT model, version, MAX(scored_at) FROM customer_score GROUP BY model, version ORDER BY 3, 2"
    )
    op.drop_index("ix_customer_score_model_version_score", table_name="customer_score")
    _set_aside("customer_score", "customer_score_0008")
    op.create_table(
        "customer_score",
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("score_email", sa.Float(), nullable=True),
        sa.Column("score_sms", sa.Float(), nullable=True),
        sa.Column("score_push", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["version_id"], ["score_version.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["customer_id"], ["customer.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("version_id", "customer_id"),
        sqlite_with_rowid=False,
    )
    op.execute(
        f"INSERT INTO customer_score (version_id, customer_id, {SCORE_COLUMNS}) "
        f"SELECT v.id, s.customer_id, {_prefixed('s')} FROM customer_score_0008 s "
        "JOIN score_version v ON v.model = s.model AND v.version = s.version ORDER BY v.id, s.customer_id"
    )
    op.drop_table("customer_score_0008")
    op.create_index("ix_customer_score_version_score", "customer_score", ["version_id", "score"])


def downgrade() -> None:
    op.drop_index("ix_customer_score_version_score", table_name="customer_score")
    _set_aside("customer_score", "customer_score_0009")
    op.create_table(
        "customer_score",
        sa.Column("model", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("version", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("scored_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("score_email", sa.Float(), nullable=True),
        sa.Column("score_sms", sa.Float(), nullable=True),
        sa.Column("score_push", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["customer_id"], ["customer.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("model", "version", "customer_id"),
    )
    op.execute(
        f"INSERT INTO customer_score (model, version, customer_id, scored_at, {SCORE_COLUMNS}) "
        f"SELECT v.model, v.version, s.customer_id, v.scored_at, {_prefixed('s')} "
        "FROM customer_score_0009 s JOIN score_version v ON v.id = s.version_id"
    )
    op.drop_table("customer_score_0009")
    op.drop_table("score_version")
    op.create_index("ix_customer_score_model_version_score", "customer_score", ["model", "version", "score"])


def _prefixed(alias: str) -> str:
    return ", ".join(f"{alias}.{c}" for c in SCORE_COLUMNS.split(", "))
