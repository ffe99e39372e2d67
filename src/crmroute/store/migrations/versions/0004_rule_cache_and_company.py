"""rules: value cache TTL and what the caller hears while the CRM is asked

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("rules") as batch_op:
        batch_op.add_column(sa.Column("cache_ttl_s", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("keep_company", sa.String(length=8), nullable=False, server_default="none"))
        batch_op.add_column(sa.Column("moh_class", sa.String(length=64), nullable=False, server_default="default"))


def downgrade() -> None:
    with op.batch_alter_table("rules") as batch_op:
        batch_op.drop_column("moh_class")
        batch_op.drop_column("keep_company")
        batch_op.drop_column("cache_ttl_s")
