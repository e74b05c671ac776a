"""the log keeps each body exactly as received, and its signature header

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30

Two nullable columns on `webhook_events` (rows logged before this migration have neither):
`body`, the bytes as received, and `signature`, the videosdk-signature header. With them the
log is an audit trail: `trackhook verify-log` checks every signature again. Adding nullable
columns is instant on both databases, and replicas of the previous release keep inserting
(without them) during a rolling deploy.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_events") as batch:
        batch.add_column(sa.Column("body", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("signature", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("webhook_events") as batch:
        batch.drop_column("signature")
        batch.drop_column("body")
