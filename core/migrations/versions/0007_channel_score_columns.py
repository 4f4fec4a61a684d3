"""Targeting models: the response model's per-channel scores as columns of the customer's score row.

`relance score response` wrote one ``customer_score`` row per channel
(``model = 'response.<channel>'``; only the response model has channels) next
to the ``response`` row: three million rows for a million customers and two
channels, each through the table and its two indexes, which made scoring 1M
customers take 26 s (target: 20 s). The per-channel scores now live in nullable
columns ``score_email``, ``score_sms`` and ``score_push`` of the ``response``
row (NULL for the other models), read by the `best` channel strategy
(audiences/learning/choose.py). Existing per-channel rows are moved into those
columns, so versions scored before keep their channel scores.

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHANNELS = ("email", "sms", "push")


def upgrade() -> None:
    with op.batch_alter_table("customer_score", schema=None) as batch_op:
        for ch in CHANNELS:
            batch_op.add_column(sa.Column(f"score_{ch}", sa.Float(), nullable=True))
    for ch in CHANNELS:
        op.execute(
            f"UPDATE customer_score SET score_{ch} = (SELECT s.score FROM customer_score s"
            f" WHERE s.model = 'response.{ch}' AND s.version = customer_score.version"
            " AND s.customer_id = customer_score.customer_id) WHERE model = 'response'"
        )
        op.execute(f"DELETE FROM customer_score WHERE model = 'response.{ch}'")


def downgrade() -> None:
    for ch in CHANNELS:
        op.execute(
            "INSERT INTO customer_score (model, version, customer_id, score, scored_at)"
            f" SELECT 'response.{ch}', version, customer_id, score_{ch}, scored_at FROM customer_score"
            f" WHERE model = 'response' AND score_{ch} IS NOT NULL"
        )
    with op.batch_alter_table("customer_score", schema=None) as batch_op:
        for ch in reversed(CHANNELS):
            batch_op.drop_column(f"score_{ch}")
