"""Selection: a covering index for frequency caps (ledger rows sent within a window).

The caps of a plan/run count each customer's messages with ``sent_at`` in the
last N days: ``GROUP BY customer_id`` over ``WHERE sent_at BETWEEN ...``. With
(sent_at, customer_id, channel, status) that scan reads the window's index
entries only, however long the ledger's history grows
(ix_ledger_customer_sent leads with customer_id and cannot serve a range on sent_at).

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_ledger_sent_customer", "ledger", ["sent_at", "customer_id", "channel", "status"])


def downgrade() -> None:
    op.drop_index("ix_ledger_sent_customer", table_name="ledger")
