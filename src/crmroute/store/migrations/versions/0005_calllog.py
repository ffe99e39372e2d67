"""call logger: the outbox of finished calls and their deliveries to each integration

Revision ID: 0005
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "calllog_calls",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("linked_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("direction", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("external_number", sa.String(length=64), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("decision", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("linked_id"),
    )
    with op.batch_alter_table("calllog_calls") as batch_op:
        batch_op.create_index(batch_op.f("ix_calllog_calls_created_at"), ["created_at"], unique=False)
    op.create_table(
        "calllog_deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("call_id", sa.Integer(), nullable=False),
        sa.Column("integration_id", sa.Integer(), nullable=False),
        sa.Column("linked_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("activity_id", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["call_id"], ["calllog_calls.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["integration_id"], ["integrations.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("integration_id", "linked_id", name="uq_calllog_deliveries_integration_call"),
    )
    with op.batch_alter_table("calllog_deliveries") as batch_op:
        batch_op.create_index(batch_op.f("ix_calllog_deliveries_call_id"), ["call_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_calllog_deliveries_integration_id"), ["integration_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_calllog_deliveries_next_attempt_at"), ["next_attempt_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_calllog_deliveries_status"), ["status"], unique=False)


def downgrade() -> None:
    op.drop_table("calllog_deliveries")
    op.drop_table("calllog_calls")
