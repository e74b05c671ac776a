"""recordings and the webhook event log

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "recordings",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("meeting_id", sa.String(255), nullable=False),
        sa.Column("session_id", sa.String(255), nullable=False),
        sa.Column("participant_id", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("is_latest", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("starting_at", Timestamp, nullable=True),
        sa.Column("started_at", Timestamp, nullable=True),
        sa.Column("stopping_at", Timestamp, nullable=True),
        sa.Column("stopped_at", Timestamp, nullable=True),
        sa.Column("failed_at", Timestamp, nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        sa.Column("files", sa.JSON(), nullable=False),
        sa.Column("event_fingerprints", sa.JSON(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "kind IN ('audio', 'video', 'screen_audio', 'screen_video')",
            name=op.f("ck_recordings_kind"),
        ),
        sa.CheckConstraint(
            "status IN ('starting', 'started', 'stopping', 'stopped', 'failed')",
            name=op.f("ck_recordings_status"),
        ),
        sa.CheckConstraint("sequence >= 1", name=op.f("ck_recordings_sequence_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recordings")),
        sa.UniqueConstraint(
            "session_id",
            "participant_id",
            "kind",
            "sequence",
            name=op.f("uq_recordings_session_id_participant_id_kind_sequence"),
        ),
    )
    op.create_index(
        "uq_recordings_latest_per_key",
        "recordings",
        ["session_id", "participant_id", "kind"],
        unique=True,
        postgresql_where=sa.text("is_latest"),
        sqlite_where=sa.text("is_latest"),
    )
    op.create_index("ix_recordings_updated", "recordings", ["updated_at", "id"])
    for column in ("meeting_id", "session_id", "participant_id", "status", "kind"):
        name = column.removesuffix("_id")
        op.create_index(f"ix_recordings_{name}_updated", "recordings", [column, "updated_at", "id"])

    op.create_table(
        "webhook_events",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("received_at", Timestamp, nullable=False),
        sa.Column("webhook_type", sa.String(255), nullable=False),
        sa.Column("meeting_id", sa.String(255), nullable=True),
        sa.Column("session_id", sa.String(255), nullable=True),
        sa.Column("participant_id", sa.String(255), nullable=True),
        sa.Column("kind", sa.String(255), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("recording_id", BigId, nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.CheckConstraint(
            "outcome IN ('applied', 'duplicate', 'ignored', 'rejected')",
            name=op.f("ck_webhook_events_outcome"),
        ),
        sa.ForeignKeyConstraint(
            ["recording_id"],
            ["recordings.id"],
            name=op.f("fk_webhook_events_recording_id_recordings"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_events")),
    )
    for column in ("session_id", "webhook_type", "outcome", "recording_id"):
        op.create_index(f"ix_webhook_events_{column}", "webhook_events", [column, "id"])


def downgrade() -> None:
    op.drop_table("webhook_events")
    op.drop_table("recordings")
