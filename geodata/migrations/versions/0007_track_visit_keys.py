"""Track rollups (issue #9): no per-row foreign-key checks on ``core.track_grid_visit``.

A day of a district's fleet gives about 160,000 (device, day, grid) visits, and the ETL rewrites the
touched device-days' visits in every track load.  Each inserted row fired two foreign-key triggers, one
into ``core.admin_unit`` and one into ``core.device``, each a key-share row lock on the referenced row:
1.4 s of the 2.4 s the insert took for one day of 2,000 devices (EXPLAIN ANALYZE), more than the rollups'
arithmetic.  The table is written only by etl/tracks.py, in the load's transaction, from grid codes it has
just located in the stored admin units and from devices it has just upserted, so the keys hold by
construction; nothing deletes devices or admin units (a reload updates them in place).  The page's table,
``core.grid_patrol_day``, keeps its key into ``core.admin_unit``.

Revision ID: 0007
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Drop the two foreign keys of core.track_grid_visit."""
    op.execute("ALTER TABLE core.track_grid_visit DROP CONSTRAINT track_grid_visit_grid_code_fkey,"
               " DROP CONSTRAINT track_grid_visit_device_id_fkey")


def downgrade() -> None:
    """Put them back (validated against the rows present)."""
    op.execute("ALTER TABLE core.track_grid_visit"
               " ADD CONSTRAINT track_grid_visit_grid_code_fkey FOREIGN KEY (grid_code)"
               " REFERENCES core.admin_unit (code) ON DELETE CASCADE,"
               " ADD CONSTRAINT track_grid_visit_device_id_fkey FOREIGN KEY (device_id)"
               " REFERENCES core.device (device_id) ON DELETE CASCADE")
