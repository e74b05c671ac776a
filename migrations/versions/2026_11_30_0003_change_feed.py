"""the change feed: each recording's last writing transaction; SQLite's feed clock

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30

- `recordings.change_txn`: the number of the transaction that last changed the recording.
  On PostgreSQL the writers store `pg_current_xact_id()`; the feed serves a change only once
  every transaction older than the reader's snapshot horizon has finished, so a change that
  commits late is never skipped. Existing rows get 0: the feed's first walk includes them.
  On PostgreSQL the column's default is the inserting transaction's id, so a replica of the
  previous release inserting during a rolling deploy still stamps its rows.
- `ix_recordings_change (change_txn, id)`: the feed's order (built CONCURRENTLY on
  PostgreSQL, like 0002).
- `feed_clock`: one row counting SQLite's write transactions (SQLite serialises writers, so a
  counter bumped in the write transaction is commit order). PostgreSQL never uses it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CURRENT_TXN = "(pg_current_xact_id()::text::bigint)"


def _on_postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    postgresql = _on_postgresql()
    with op.batch_alter_table("recordings") as batch:
        batch.add_column(
            sa.Column("change_txn", sa.BigInteger(), nullable=False, server_default="0")
        )
    if postgresql:
        op.alter_column("recordings", "change_txn", server_default=sa.text(CURRENT_TXN))
    else:
        with op.batch_alter_table("recordings") as batch:
            batch.alter_column("change_txn", server_default=None)
    op.create_table(
        "feed_clock",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("txn", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_feed_clock_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feed_clock")),
    )
    op.execute("INSERT INTO feed_clock (id, txn) VALUES (1, 0)")
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_recordings_change",
            "recordings",
            ["change_txn", "id"],
            postgresql_concurrently=postgresql,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(
            "ix_recordings_change",
            table_name="recordings",
            postgresql_concurrently=_on_postgresql(),
        )
    op.drop_table("feed_clock")
    with op.batch_alter_table("recordings") as batch:
        batch.drop_column("change_txn")
