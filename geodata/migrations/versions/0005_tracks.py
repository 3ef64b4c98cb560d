"""Patrol and sanitation tracks and roads (issue #9).

Reserved in the revision chain so that parallel work on separate issues keeps one linear history; it changes
nothing until its issue fills it.

Revision ID: 0005
"""

from __future__ import annotations

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Nothing yet."""


def downgrade() -> None:
    """Nothing yet."""
