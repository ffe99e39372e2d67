"""rules: how owner / last_agent destinations pick an agent, and the default's agent

Revision ID: 0016
Revises: 0015
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | Sequence[str] | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("rules") as batch_op:
        batch_op.add_column(sa.Column("default_agent", sa.String(16), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("check_availability", sa.Boolean(), nullable=False, server_default=sa.true()))
        batch_op.add_column(sa.Column("last_agent_days", sa.Integer(), nullable=False, server_default="30"))
        batch_op.add_column(sa.Column("last_agent_outbound", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column("last_agent_min_talk_s", sa.Integer(), nullable=False, server_default="5"))


def downgrade() -> None:
    with op.batch_alter_table("rules") as batch_op:
        for name in ("last_agent_min_talk_s", "last_agent_outbound", "last_agent_days", "check_availability",
                     "default_agent"):  # fmt: skip
            batch_op.drop_column(name)
