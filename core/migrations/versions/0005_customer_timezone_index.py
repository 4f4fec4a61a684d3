"""Selection: an index on customer.timezone, to list the base's time zones without reading the table.

Every plan and run decides in Python which time zones are open per channel, so
it first needs the distinct zone names of the base. A GROUP BY reads the whole
customer table (0.4 s for 1M customers on SQLite); with this index the names are
read by a few index seeks (audiences.selection.customer_timezones).

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_customer_timezone", "customer", ["timezone"])


def downgrade() -> None:
    op.drop_index("ix_customer_timezone", table_name="customer")
