"""indexes fitted to the query API: covering timeline index, no kind-only index

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21

- `ix_webhook_events_recording_timeline` replaces `ix_webhook_events_recording_id`: the
  same key, plus the columns a recording's timeline shows, so `GET /v1/recordings/{id}`
  reads its events from the index alone (PostgreSQL, on all-visible pages) instead of one
  heap page per event spread over the log.
- `ix_recordings_kind_updated` goes: `kind` has four values, so `?kind=...` alone is served
  well enough by `ix_recordings_updated`, and with any other filter by that filter's index;
  every recording write paid for it.

On PostgreSQL the indexes are built and dropped CONCURRENTLY, outside a transaction, so
intake keeps writing while a large log is indexed. If the build is interrupted it leaves
an INVALID index of the new name: drop it (`DROP INDEX CONCURRENTLY
ix_webhook_events_recording_timeline`) and run `trackhook migrate` again.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMELINE_COLUMNS = ["webhook_type", "received_at", "outcome"]


def _on_postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def upgrade() -> None:
    concurrently = _on_postgresql()
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_webhook_events_recording_timeline",
            "webhook_events",
            ["recording_id", "id"],
            postgresql_include=TIMELINE_COLUMNS,
            postgresql_concurrently=concurrently,
        )
        op.drop_index(
            "ix_webhook_events_recording_id",
            table_name="webhook_events",
            postgresql_concurrently=concurrently,
        )
        op.drop_index(
            "ix_recordings_kind_updated",
            table_name="recordings",
            postgresql_concurrently=concurrently,
        )


def downgrade() -> None:
    concurrently = _on_postgresql()
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_recordings_kind_updated",
            "recordings",
            ["kind", "updated_at", "id"],
            postgresql_concurrently=concurrently,
        )
        op.create_index(
            "ix_webhook_events_recording_id",
            "webhook_events",
            ["recording_id", "id"],
            postgresql_concurrently=concurrently,
        )
        op.drop_index(
            "ix_webhook_events_recording_timeline",
            table_name="webhook_events",
            postgresql_concurrently=concurrently,
        )
