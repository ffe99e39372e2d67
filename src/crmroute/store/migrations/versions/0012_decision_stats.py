"""decision stats: decision log counts per minute and hour for the dashboard

Revision ID: 0012
Revises: 0011
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Filled from the decision log on the dashboard's first visit (or by the decision writer): no backfill here.
    op.create_table(
        "decision_stats",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("metric", sa.String(length=16), nullable=False),
        sa.Column("span", sa.Integer(), nullable=False),
        sa.Column("bucket", sa.Integer(), nullable=False),
        sa.Column("k1", sa.String(length=128), nullable=False),
        sa.Column("k2", sa.String(length=64), nullable=False),
        sa.Column("k3", sa.String(length=16), nullable=False),
        sa.Column("calls", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("metric", "span", "bucket", "k1", "k2", "k3", name="uq_decision_stats_key"),
    )


def downgrade() -> None:
    op.drop_table("decision_stats")
