"""indexes fitted to the query API: covering timeline index, no kind-only index

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21

- `ix_webhook_events_recording_id` also carries the columns a recording's timeline shows,
  so `GET /v1/recordings/{id}` reads its events from the index alone (PostgreSQL, on
  all-visible pages) instead of one heap page per event spread over the log.
- `ix_recordings_kind_updated` goes: `kind` has four values, so `?kind=...` alone is served
  well enough by `ix_recordings_updated`, and with any other filter by that filter's index;
  every recording write paid for it.

On a large log, CREATE INDEX blocks writes to webhook_events while it builds; see
docs/PERFORMANCE.md for building it CONCURRENTLY by hand first.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMELINE_COLUMNS = ["webhook_type", "received_at", "outcome"]


def upgrade() -> None:
    op.drop_index("ix_recordings_kind_updated", table_name="recordings")
    op.drop_index("ix_webhook_events_recording_id", table_name="webhook_events")
    op.create_index(
        "ix_webhook_events_recording_id",
        "webhook_events",
        ["recording_id", "id"],
        postgresql_include=TIMELINE_COLUMNS,
    )


def downgrade() -> None:
    op.drop_index("ix_webhook_events_recording_id", table_name="webhook_events")
    op.create_index("ix_webhook_events_recording_id", "webhook_events", ["recording_id", "id"])
    op.create_index("ix_recordings_kind_updated", "recordings", ["kind", "updated_at", "id"])
