"""rules and integrations: name_key, the name compared ignoring case, spacing and Unicode forms

Names that collide once compared that way keep the oldest row's name (lowest id); each later one is
renamed "<name> (2)", "<name> (3)", ... so no row is lost and every reference (by id) still holds.

Revision ID: 0011
Revises: 0010
"""

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from crmroute.names import name_key

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

logger = logging.getLogger(__name__)
NAME_LENGTH = 128
TABLES = ("rules", "integrations")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch_op:
            batch_op.add_column(sa.Column("name_key", sa.Text(), nullable=True))
        fill_keys(op.get_bind(), table)
        with op.batch_alter_table(table) as batch_op:
            batch_op.alter_column("name_key", existing_type=sa.Text(), nullable=False)
            batch_op.create_unique_constraint(f"uq_{table}_name_key", ["name_key"])


def fill_keys(connection: sa.Connection, table: str) -> None:
    rows = sa.table(table, sa.column("id", sa.Integer), sa.column("name", sa.String), sa.column("name_key", sa.Text))
    stored = connection.execute(sa.select(rows.c.id, rows.c.name).order_by(rows.c.id)).all()
    taken = {name_key(name) for _, name in stored}  # a rename must not take a name a later row has
    seen: set[str] = set()
    for row_id, name in stored:
        key = name_key(name)
        if key in seen:
            new = renamed(name, taken)
            logger.warning("%s %d: %r is the same name as an older one ignoring case and spacing; renamed %r",
                           table, row_id, name, new)  # fmt: skip
            name, key = new, name_key(new)
            taken.add(key)
        seen.add(key)
        connection.execute(sa.update(rows).where(rows.c.id == row_id).values(name=name, name_key=key))


def renamed(name: str, taken: set[str]) -> str:
    number = 2
    while True:
        suffix = f" ({number})"
        candidate = name[: NAME_LENGTH - len(suffix)] + suffix
        if name_key(candidate) not in taken:
            return candidate
        number += 1


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch_op:
            batch_op.drop_constraint(f"uq_{table}_name_key", type_="unique")
            batch_op.drop_column("name_key")
