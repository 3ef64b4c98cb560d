"""Cases (issue #4): no spatial index on ``core.case_record.geom``.

Nothing asks the store for cases by geometry: every case is located by the ETL (unit grid, community,
street, district, H3 r7-r10) when it is stored, and every reader selects by those codes -- the planner
pages through the facts files and rollups, the case lists by ``(grid_code, reported_at)``, the public views
by grid and H3 rollups, track checks by case number.  The GiST index was built on every month of every
load all the same: measured on 1,000,000 cases over ten months, 0.17 s of server time per 100,000 rows
(a third of the month's index builds) and about 2.5 of the load's ~16 server CPU-seconds.  An analyst who
wants spatial SQL over raw cases can still build one by hand (``CREATE INDEX ... USING gist (geom)``) on
the partitions they query.

Revision ID: 0008
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Drop the partitioned GiST index (its partitions' indexes go with it)."""
    op.execute("DROP INDEX IF EXISTS core.case_record_geom")


def downgrade() -> None:
    """Build it again on every partition."""
    op.execute("CREATE INDEX case_record_geom ON core.case_record USING gist (geom)")
