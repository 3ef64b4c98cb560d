"""Errors of the store that end as one clear message naming the fix (the CLI prints them without a traceback)."""

from __future__ import annotations


class CityGridError(RuntimeError):
    """Base of every error CityGrid reports to a person as a message rather than a traceback."""


class StoreError(CityGridError):
    """The database cannot be reached, lacks PostGIS, or is at the wrong schema revision."""
