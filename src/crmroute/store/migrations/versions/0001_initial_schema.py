"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-26 02:10:27.657432

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0001'
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""

    op.create_table('decisions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('source', sa.String(length=8), nullable=False),
    sa.Column('call_id', sa.String(length=64), nullable=False),
    sa.Column('channel', sa.String(length=128), nullable=False),
    sa.Column('caller', sa.String(length=64), nullable=False),
    sa.Column('did', sa.String(length=64), nullable=False),
    sa.Column('ivr', sa.String(length=64), nullable=False),
    sa.Column('rule', sa.String(length=128), nullable=False),
    sa.Column('lookup_key', sa.String(length=128), nullable=False),
    sa.Column('key_source', sa.String(length=16), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.Column('row', sa.Integer(), nullable=True),
    sa.Column('dest_type', sa.String(length=16), nullable=False),
    sa.Column('dest', sa.String(length=128), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.String(length=64), nullable=False),
    sa.Column('error', sa.Text(), nullable=False),
    sa.Column('crm_ms', sa.Float(), nullable=True),
    sa.Column('total_ms', sa.Float(), nullable=False),
    sa.Column('trace', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('decisions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_decisions_call_id'), ['call_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_decisions_caller'), ['caller'], unique=False)
        batch_op.create_index(batch_op.f('ix_decisions_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_decisions_rule'), ['rule'], unique=False)
        batch_op.create_index(batch_op.f('ix_decisions_status'), ['status'], unique=False)

    op.create_table('destinations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('type', sa.String(length=16), nullable=False),
    sa.Column('ref', sa.String(length=128), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('voicemail', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('type', 'ref', name='uq_destinations_type_ref')
    )
    op.create_table('integrations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('settings', sa.JSON(), nullable=False),
    sa.Column('secrets_enc', sa.Text(), nullable=False),
    sa.Column('log_options', sa.JSON(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('licenses',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('installed_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('meta',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )
    op.create_table('users',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('password_hash', sa.Text(), nullable=False),
    sa.Column('is_active', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('username')
    )
    op.create_table('api_tokens',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('token_hash', sa.String(length=128), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('token_hash')
    )
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_tokens_user_id'), ['user_id'], unique=False)

    op.create_table('rules',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('crm_field', sa.String(length=255), nullable=False),
    sa.Column('location', sa.String(length=8), nullable=False),
    sa.Column('greeting', sa.String(length=255), nullable=False),
    sa.Column('dtmf_timeout_ms', sa.Integer(), nullable=False),
    sa.Column('dtmf_max_digits', sa.Integer(), nullable=False),
    sa.Column('crm_source', sa.String(length=16), nullable=False),
    sa.Column('integration_id', sa.Integer(), nullable=True),
    sa.Column('crm_module', sa.String(length=16), nullable=False),
    sa.Column('crm_username', sa.String(length=255), nullable=False),
    sa.Column('crm_password_enc', sa.Text(), nullable=False),
    sa.Column('custom_url', sa.Text(), nullable=False),
    sa.Column('custom_post', sa.Boolean(), nullable=False),
    sa.Column('custom_headers_enc', sa.Text(), nullable=False),
    sa.Column('default_destination', sa.String(length=64), nullable=False),
    sa.Column('default_voicemail', sa.String(length=8), nullable=False),
    sa.Column('deadline_ms', sa.Integer(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['integration_id'], ['integrations.id'], ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('dids',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('number', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('rule_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['rule_id'], ['rules.id'], ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('number')
    )
    op.create_table('ivrs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('number', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('rule_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['rule_id'], ['rules.id'], ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('number')
    )
    op.create_table('rule_rows',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('rule_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('operator', sa.String(length=16), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.Column('destination', sa.String(length=16), nullable=False),
    sa.Column('option', sa.String(length=128), nullable=False),
    sa.ForeignKeyConstraint(['rule_id'], ['rules.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('rule_rows', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_rule_rows_rule_id'), ['rule_id'], unique=False)




def downgrade() -> None:
    """Downgrade schema."""

    with op.batch_alter_table('rule_rows', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_rule_rows_rule_id'))

    op.drop_table('rule_rows')
    op.drop_table('ivrs')
    op.drop_table('dids')
    op.drop_table('rules')
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_tokens_user_id'))

    op.drop_table('api_tokens')
    op.drop_table('users')
    op.drop_table('meta')
    op.drop_table('licenses')
    op.drop_table('integrations')
    op.drop_table('destinations')
    with op.batch_alter_table('decisions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_decisions_status'))
        batch_op.drop_index(batch_op.f('ix_decisions_rule'))
        batch_op.drop_index(batch_op.f('ix_decisions_created_at'))
        batch_op.drop_index(batch_op.f('ix_decisions_caller'))
        batch_op.drop_index(batch_op.f('ix_decisions_call_id'))

    op.drop_table('decisions')

