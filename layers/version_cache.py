"""A small in-process cache for the planners' layers, keyed by the store's data version.

Why: geometry (simplified outlines, sectors, blind spots) and heavy derived answers (blind-spot counts, greedy
camera sites) change only when a load changes the store, and every load bumps ``core.data_version``.  Keys
carry that version, so nothing cached is ever stale and nothing needs invalidating; the version itself is
re-read at most once a second per database, so a burst of callbacks costs one tiny query.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Final, TypeVar

from sqlalchemy import Engine, text

#: Entries kept per process (figures of a few hundred kB each at most).
ENTRIES: Final = 256
#: Seconds a data version read is trusted before it is read again.
VERSION_SECONDS: Final = 1.0

T = TypeVar("T")

_lock = threading.Lock()
_entries: OrderedDict[Hashable, Any] = OrderedDict()
_versions: dict[str, tuple[float, int]] = {}


def _database(engine: Engine) -> str:
    url = engine.url
    return f"{url.host}:{url.port}/{url.database}"


def data_version(engine: Engine) -> int:
    """``core.data_version`` of the engine's database (cached for :data:`VERSION_SECONDS`)."""
    key = _database(engine)
    now = time.monotonic()
    held = _versions.get(key)
    if held is not None and now - held[0] < VERSION_SECONDS:
        return held[1]
    with engine.connect() as conn:
        version = int(conn.execute(text("SELECT version FROM core.data_version")).scalar_one())
    _versions[key] = (now, version)
    return version


def cached(engine: Engine, name: str, key: Hashable, compute: Callable[[], T]) -> T:
    """``compute()`` once per (database, data version, name, key); later calls get the same object."""
    full = (_database(engine), data_version(engine), name, key)
    with _lock:
        if full in _entries:
            _entries.move_to_end(full)
            return _entries[full]  # type: ignore[no-any-return]
    value = compute()
    with _lock:
        _entries[full] = value
        while len(_entries) > ENTRIES:
            _entries.popitem(last=False)
    return value
