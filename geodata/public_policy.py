"""The public policy (delay, window, k) kept in core.public_policy, which the open_data views enforce.

The settings (``CITYGRID_PUBLIC_DELAY_HOURS``, ``_WINDOW_DAYS``, ``_MIN_CASES``) are the operator's word;
the database row is what the views read, so the public role cannot be configured into showing more.
``citygrid serve --public`` writes the settings into the row with the writer before serving.
"""

from __future__ import annotations

from sqlalchemy import Engine, text

from geodata.settings import Settings


def apply_public_policy(engine: Engine, settings: Settings) -> tuple[int, int, int]:
    """Store the settings' delay, window and k as the policy; return (delay_hours, window_days, min_cases)."""
    with engine.begin() as conn:
        row = conn.execute(
            text("UPDATE core.public_policy SET delay_hours = :delay, window_days = :window, min_cases = :k"
                 " WHERE id = 1 RETURNING delay_hours, window_days, min_cases"),
            {"delay": settings.public_delay_hours, "window": settings.public_window_days,
             "k": settings.public_min_cases},
        ).one()
    return int(row[0]), int(row[1]), int(row[2])
