"""Public views for the public app and Open311 (issue #8).

Reserved in the revision chain so that parallel work on separate issues keeps one linear history; it changes
nothing until its issue fills it.

Revision ID: 0004
"""

from __future__ import annotations

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing yet."""


def downgrade() -> None:
    """Nothing yet."""
