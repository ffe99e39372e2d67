"""agents: extensions, the devices that tell their state, and who they are in each CRM

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "agents",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("extension", sa.String(length=64), nullable=False),
        sa.Column("devices", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
        sa.UniqueConstraint("extension"),
    )
    op.create_table(
        "agent_identities",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("agent_id", sa.Integer(), nullable=False),
        sa.Column("integration_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("email", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["integration_id"], ["integrations.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("agent_id", "integration_id", name="uq_agent_identities_agent_integration"),
    )
    op.create_index("ix_agent_identities_agent_id", "agent_identities", ["agent_id"])
    op.create_index("ix_agent_identities_integration_id", "agent_identities", ["integration_id"])


def downgrade() -> None:
    op.drop_index("ix_agent_identities_integration_id", table_name="agent_identities")
    op.drop_index("ix_agent_identities_agent_id", table_name="agent_identities")
    op.drop_table("agent_identities")
    op.drop_table("agents")
