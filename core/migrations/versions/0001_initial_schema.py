"""Initial schema: customer base, consent, orders, features, runs, ledger, events.

Revision ID: 0001
Revises:
Create Date: 2026-11-23 00:53:04.045630
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "campaign_run",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("campaign", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("spec_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("paused_reason", sa.Text(), nullable=True),
        sa.Column("funnel", sa.Text(), nullable=True),
        sa.Column("models", sa.Text(), nullable=True),
        sa.Column("flow_run_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("started_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("finished_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key"),
    )
    with op.batch_alter_table("campaign_run", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_campaign_run_campaign"), ["campaign"], unique=False)

    op.create_table(
        "customer",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("external_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("first_name", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
        sa.Column("last_name", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
        sa.Column("email", sqlmodel.sql.sqltypes.AutoString(length=254), nullable=True),
        sa.Column("phone", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=True),
        sa.Column("locale", sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
        sa.Column("timezone", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("country", sqlmodel.sql.sqltypes.AutoString(length=2), nullable=True),
        sa.Column("city", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
        sa.Column("postcode", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
        sa.Column("gender", sqlmodel.sql.sqltypes.AutoString(length=1), nullable=True),
        sa.Column("birth_year", sa.Integer(), nullable=True),
        sa.Column("signup_date", sa.Date(), nullable=True),
        sa.Column("preferred_channel", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=True),
        sa.Column("preferred_payment_method", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("erased_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("customer", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_customer_email"), ["email"], unique=False)
        batch_op.create_index(batch_op.f("ix_customer_external_id"), ["external_id"], unique=True)
        batch_op.create_index(batch_op.f("ix_customer_phone"), ["phone"], unique=False)

    op.create_table(
        "suppression",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("channel", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
        sa.Column("address", sqlmodel.sql.sqltypes.AutoString(length=254), nullable=False),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("source", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("channel", "address", name="uq_suppression_channel_address"),
    )
    with op.batch_alter_table("suppression", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_suppression_address"), ["address"], unique=False)

    op.create_table(
        "consent",
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("channel", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("source", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("proof", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["customer_id"], ["customer.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("customer_id", "channel"),
    )
    op.create_table(
        "consent_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("channel", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("source", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("proof", sa.Text(), nullable=True),
        sa.Column("recorded_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["customer_id"], ["customer.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("consent_event", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_consent_event_customer_id"), ["customer_id"], unique=False)

    op.create_table(
        "customer_features",
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("first_order_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("last_order_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("recency_days", sa.Integer(), nullable=True),
        sa.Column("frequency", sa.Integer(), nullable=False),
        sa.Column("monetary_cents", sa.Integer(), nullable=False),
        sa.Column("avg_basket_cents", sa.Integer(), nullable=False),
        sa.Column("tenure_days", sa.Integer(), nullable=False),
        sa.Column("favourite_category", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("preferred_payment_method", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("computed_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["customer_id"], ["customer.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("customer_id"),
    )
    with op.batch_alter_table("customer_features", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_customer_features_last_order_at"), ["last_order_at"], unique=False
        )

    op.create_table(
        "customer_interest",
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("tag", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.ForeignKeyConstraint(["customer_id"], ["customer.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("customer_id", "tag"),
    )
    with op.batch_alter_table("customer_interest", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_customer_interest_tag"), ["tag"], unique=False)

    op.create_table(
        "customer_score",
        sa.Column("model", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("version", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("scored_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["customer_id"], ["customer.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("model", "version", "customer_id"),
    )
    with op.batch_alter_table("customer_score", schema=None) as batch_op:
        batch_op.create_index(
            "ix_customer_score_model_version_score", ["model", "version", "score"], unique=False
        )

    op.create_table(
        "device",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("token", sqlmodel.sql.sqltypes.AutoString(length=512), nullable=False),
        sa.Column("platform", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("last_seen_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["customer_id"], ["customer.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token"),
    )
    with op.batch_alter_table("device", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_device_customer_id"), ["customer_id"], unique=False)

    op.create_table(
        "ledger",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("campaign", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("channel", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
        sa.Column("variant", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("message", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("in_control", sa.Boolean(), nullable=False),
        sa.Column("batch", sa.Integer(), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("provider", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
        sa.Column("provider_message_id", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("cost_units", sa.Float(), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("sent_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customer.id"],
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["campaign_run.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("run_id", "customer_id", "channel", name="uq_ledger_run_customer_channel"),
    )
    with op.batch_alter_table("ledger", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ledger_campaign"), ["campaign"], unique=False)
        batch_op.create_index("ix_ledger_customer_sent", ["customer_id", "sent_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_ledger_provider_message_id"), ["provider_message_id"], unique=False
        )
        batch_op.create_index("ix_ledger_run_batch_status", ["run_id", "batch", "status"], unique=False)

    op.create_table(
        "orders",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("external_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("ordered_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("amount_cents", sa.Integer(), nullable=False),
        sa.Column("currency", sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
        sa.Column("category", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("product", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
        sa.Column("payment_method", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.ForeignKeyConstraint(["customer_id"], ["customer.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("external_id"),
    )
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.create_index("ix_orders_category_ordered", ["category", "ordered_at"], unique=False)
        batch_op.create_index("ix_orders_customer_ordered", ["customer_id", "ordered_at"], unique=False)

    op.create_table(
        "recommendation",
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("item", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("model_version", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.ForeignKeyConstraint(["customer_id"], ["customer.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("customer_id", "rank"),
    )
    op.create_table(
        "send_batch",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("batch", sa.Integer(), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("claimed_by", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("claimed_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("finished_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["campaign_run.id"],
        ),
        sa.PrimaryKeyConstraint("run_id", "batch"),
    )
    op.create_table(
        "event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ledger_id", sa.Integer(), nullable=True),
        sa.Column("customer_id", sa.Integer(), nullable=True),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("type", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("subtype", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("provider", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("provider_event_id", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
        sa.Column("occurred_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("received_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("machine", sa.Boolean(), nullable=False),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("revenue_cents", sa.Integer(), nullable=True),
        sa.Column("raw", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["ledger_id"],
            ["ledger.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("provider", "provider_event_id", name="uq_event_provider_event"),
    )
    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_event_customer_id"), ["customer_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_event_ledger_id"), ["ledger_id"], unique=False)
        batch_op.create_index("ix_event_run_type", ["run_id", "type"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.drop_index("ix_event_run_type")
        batch_op.drop_index(batch_op.f("ix_event_ledger_id"))
        batch_op.drop_index(batch_op.f("ix_event_customer_id"))

    op.drop_table("event")
    op.drop_table("send_batch")
    op.drop_table("recommendation")
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index("ix_orders_customer_ordered")
        batch_op.drop_index("ix_orders_category_ordered")

    op.drop_table("orders")
    with op.batch_alter_table("ledger", schema=None) as batch_op:
        batch_op.drop_index("ix_ledger_run_batch_status")
        batch_op.drop_index(batch_op.f("ix_ledger_provider_message_id"))
        batch_op.drop_index("ix_ledger_customer_sent")
        batch_op.drop_index(batch_op.f("ix_ledger_campaign"))

    op.drop_table("ledger")
    with op.batch_alter_table("device", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_device_customer_id"))

    op.drop_table("device")
    with op.batch_alter_table("customer_score", schema=None) as batch_op:
        batch_op.drop_index("ix_customer_score_model_version_score")

    op.drop_table("customer_score")
    with op.batch_alter_table("customer_interest", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_customer_interest_tag"))

    op.drop_table("customer_interest")
    with op.batch_alter_table("customer_features", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_customer_features_last_order_at"))

    op.drop_table("customer_features")
    with op.batch_alter_table("consent_event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_consent_event_customer_id"))

    op.drop_table("consent_event")
    op.drop_table("consent")
    with op.batch_alter_table("suppression", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_suppression_address"))

    op.drop_table("suppression")
    with op.batch_alter_table("customer", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_customer_phone"))
        batch_op.drop_index(batch_op.f("ix_customer_external_id"))
        batch_op.drop_index(batch_op.f("ix_customer_email"))

    op.drop_table("customer")
    with op.batch_alter_table("campaign_run", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_campaign_run_campaign"))

    op.drop_table("campaign_run")
