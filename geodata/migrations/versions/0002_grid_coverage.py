"""Per-grid camera coverage: the share of each unit grid's area that outdoor cameras see, and its blind part.

Derived by the ETL (etl/assets.py) after cameras or grids are loaded, so pages read it instead of
intersecting sectors on every request.

Revision ID: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add core.grid_coverage."""
    op.execute("""
        CREATE TABLE core.grid_coverage (
            grid_code      text PRIMARY KEY REFERENCES core.admin_unit (code) ON DELETE CASCADE,
            area_m2        double precision NOT NULL CHECK (area_m2 > 0),
            covered_m2     double precision NOT NULL CHECK (covered_m2 >= 0),
            covered_share  double precision NOT NULL CHECK (covered_share BETWEEN 0 AND 1),
            camera_count   integer NOT NULL CHECK (camera_count >= 0),
            blind_geom     geometry(MultiPolygon, 4326),
            computed_at    timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX grid_coverage_blind ON core.grid_coverage USING gist (blind_geom);
        GRANT SELECT ON core.grid_coverage TO citygrid_reader;
    """)


def downgrade() -> None:
    """Drop core.grid_coverage."""
    op.execute("DROP TABLE core.grid_coverage")
