"""Dashboard rollups (filled by the rollups work of issue #4).

Reserved in the revision chain so that parallel work on separate issues keeps one linear history; it changes
nothing until its issue fills it.

Revision ID: 0003
"""

from __future__ import annotations

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing yet."""


def downgrade() -> None:
    """Nothing yet."""
