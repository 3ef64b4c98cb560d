"""Cases (issue #4): the community index only for cases outside every unit grid.

A community's cases were found by ``(community_code, reported_at)``, an index on every case.  But a grid's
code starts with its community's (a CHECK on cases and on admin units), so the grid index
``(grid_code, reported_at)`` already holds a community's gridded cases as one range of codes; only cases
that no grid contains (communities outside the gridded core) need an index of their own.  The full
index was the dearest build of a fresh month: its 12-digit codes share their first eight bytes, so sorting
compares whole codes and then times on nearly every step -- measured on 1,000,000 cases, 1.6 s of the
server's CPU, against ~0 for a partial index on the few grid-less cases.  The case list
(``geodata.planner.case_page``) reads a community as the grid range OR its grid-less cases.

Revision ID: 0009
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Swap the full community index for the partial one (built on every partition)."""
    op.execute("DROP INDEX IF EXISTS core.case_record_community")
    op.execute("CREATE INDEX case_record_gridless ON core.case_record (community_code, reported_at)"
               " WHERE grid_code IS NULL")


def downgrade() -> None:
    """The full community index again."""
    op.execute("DROP INDEX IF EXISTS core.case_record_gridless")
    op.execute("CREATE INDEX case_record_community ON core.case_record (community_code, reported_at)")
