"""an index of the runs still open, for stuck recordings

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30

`ix_recordings_open_updated (updated_at, id) WHERE status IN ('starting', 'started',
'stopping')`: `GET /v1/recordings?stuck=true` and the stuck-recordings gauge read the old
end of it. Open runs are a small share of all recordings, so it stays small. Built
CONCURRENTLY on PostgreSQL (as 0002); an interrupted build leaves an INVALID index: drop it
(`DROP INDEX CONCURRENTLY ix_recordings_open_updated`) and migrate again.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN_RUNS = "status IN ('starting', 'started', 'stopping')"


def upgrade() -> None:
    concurrently = op.get_bind().dialect.name == "postgresql"
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_recordings_open_updated",
            "recordings",
            ["updated_at", "id"],
            postgresql_where=sa.text(OPEN_RUNS),
            sqlite_where=sa.text(OPEN_RUNS),
            postgresql_concurrently=concurrently,
        )


def downgrade() -> None:
    concurrently = op.get_bind().dialect.name == "postgresql"
    with op.get_context().autocommit_block():
        op.drop_index(
            "ix_recordings_open_updated",
            table_name="recordings",
            postgresql_concurrently=concurrently,
        )
