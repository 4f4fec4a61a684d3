"""Customer events: what customers did (sent by the shop, imported, or derived by relance).

``customer_event`` keeps one row per event, unique by the sender's ``event_id`` (idempotent
ingestion). ``customer_id`` is null while the customer is not in the base yet; the customer
import attaches such events by ``external_id``, then by normalized ``email``. ``properties``
is JSON (sqlalchemy JSON: TEXT on SQLite, json on PostgreSQL), typed by audiences/events.yaml.

Revision ID: 0012
Revises: 0011
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "customer_event",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("event_id", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("type", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=True),
        sa.Column("external_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("email", sqlmodel.sql.sqltypes.AutoString(length=254), nullable=True),
        sa.Column("occurred_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("received_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("properties", sa.JSON(), nullable=True),
        sa.Column("source", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
        sa.ForeignKeyConstraint(["customer_id"], ["customer.id"], ondelete="CASCADE"),
        sa.UniqueConstraint("event_id", name="uq_customer_event_event_id"),
    )
    op.create_index("ix_customer_event_type_occurred", "customer_event", ["type", "occurred_at"])
    op.create_index(
        "ix_customer_event_customer_type_occurred", "customer_event", ["customer_id", "type", "occurred_at"]
    )
    op.create_index("ix_customer_event_external_id", "customer_event", ["external_id"])
    op.create_index("ix_customer_event_email", "customer_event", ["email"])


def downgrade() -> None:
    op.drop_index("ix_customer_event_email", table_name="customer_event")
    op.drop_index("ix_customer_event_external_id", table_name="customer_event")
    op.drop_index("ix_customer_event_customer_type_occurred", table_name="customer_event")
    op.drop_index("ix_customer_event_type_occurred", table_name="customer_event")
    op.drop_table("customer_event")
