"""Journeys: an entry per customer pass, its step history, and the ledger's link to them.

``journey_entry`` holds where each customer is in a journey and when their step
acts; ``journey_step`` the history (one row per step done, unique per entry and
move); ``ledger.entry_id`` / ``ledger.step`` and ``campaign_run.step`` tie the
messages of a send step to the entry and the step (null for campaigns).

Revision ID: 0011
Revises: 0010
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "journey_entry",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("journey", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("entry_key", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("step", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("due_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("since", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("moves", sa.Integer(), nullable=False),
        sa.Column("in_control", sa.Boolean(), nullable=False),
        sa.Column("exit_reason", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("entered_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["customer_id"], ["customer.id"], ondelete="CASCADE"),
        sa.UniqueConstraint("journey", "customer_id", "entry_key", name="uq_journey_entry_key"),
    )
    op.create_index("ix_journey_entry_step_due", "journey_entry", ["journey", "step", "status", "due_at"])
    op.create_index("ix_journey_entry_status_due", "journey_entry", ["status", "due_at"])
    op.create_table(
        "journey_step",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("entry_id", sa.Integer(), nullable=False),
        sa.Column("move", sa.Integer(), nullable=False),
        sa.Column("journey", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("step", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
        sa.Column("outcome", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["entry_id"], ["journey_entry.id"], ondelete="CASCADE"),
        sa.UniqueConstraint("entry_id", "move", name="uq_journey_step_entry_move"),
    )
    op.create_index("ix_journey_step_journey", "journey_step", ["journey"])
    with op.batch_alter_table("ledger") as batch:
        batch.add_column(sa.Column("entry_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("step", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))
    op.create_index("ix_ledger_entry_id", "ledger", ["entry_id"])
    with op.batch_alter_table("campaign_run") as batch:
        batch.add_column(sa.Column("step", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("campaign_run") as batch:
        batch.drop_column("step")
    op.drop_index("ix_ledger_entry_id", table_name="ledger")
    with op.batch_alter_table("ledger") as batch:
        batch.drop_column("step")
        batch.drop_column("entry_id")
    op.drop_index("ix_journey_step_journey", table_name="journey_step")
    op.drop_table("journey_step")
    op.drop_index("ix_journey_entry_status_due", table_name="journey_entry")
    op.drop_index("ix_journey_entry_step_due", table_name="journey_entry")
    op.drop_table("journey_entry")
