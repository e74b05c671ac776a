"""recording baselines: where rebuild resumes a recording whose events were pruned

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

`recording_baselines`, one row per recording whose events `trackhook prune` removed: the
recording's state as those events left it (the state columns of `recordings`), the number
of events removed, and when. `trackhook rebuild` starts each such recording from its
baseline and folds the events that remain after it. A new table: the previous release never
reads it, and nothing prunes until a release that knows it runs `trackhook prune`.

The foreign key to `recordings` is `ON DELETE RESTRICT`: a rebuild of a release before this
one would find pruned recordings explained by no event and its `--repair` would delete
them; the key makes that repair fail (and roll back) instead.

Downgrading drops the table, and with it the only record of what the pruned events made of
their recordings: it refuses while any baseline exists.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "recording_baselines",
        sa.Column("recording_id", BigId, autoincrement=False, nullable=False),
        sa.Column("meeting_id", sa.String(255), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
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
        sa.Column("events_pruned", sa.Integer(), nullable=False),
        sa.Column("pruned_at", Timestamp, nullable=False),
        sa.ForeignKeyConstraint(
            ["recording_id"],
            ["recordings.id"],
            name=op.f("fk_recording_baselines_recording_id_recordings"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("recording_id", name=op.f("pk_recording_baselines")),
    )


def downgrade() -> None:
    kept = op.get_bind().execute(sa.text("SELECT count(*) FROM recording_baselines")).scalar()
    if kept:
        raise RuntimeError(
            f"recording_baselines holds {kept} baseline(s) of pruned recordings: without them "
            "the log no longer explains those recordings. Restore a backup taken before the "
            "prune, or empty the table yourself if you mean to lose them."
        )
    op.drop_table("recording_baselines")
