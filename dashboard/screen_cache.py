"""The big screen's answer cache: one computation per (data version, period, area, screen, …) for every screen.

A command centre runs several walls and a few laptops on the same page, each refreshing every N seconds;
they ask the same question, so the answer is computed once and shared — in this process (a bounded LRU) and,
when ``settings.redis_url`` is set, in Redis for every worker and host.  Keys carry the data version
(``core.data_version``, bumped by each load), so a load is never answered from before it, and nothing needs
invalidating.  Concurrent misses on one key in a process wait for the first computation (single flight).

Redis failures never fail a refresh: the in-process cache carries on and a warning is logged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final, TypeVar

log = logging.getLogger(__name__)

#: Entries kept per process: a few areas x periods x screens x languages, each a few hundred kB at most.
LOCAL_ENTRIES: Final = 64
#: Seconds an answer lives in Redis (the data version in the key already makes it exact; this bounds memory).
REDIS_SECONDS: Final = 3600
KEY_PREFIX: Final = "citygrid:bigscreen:"

T = TypeVar("T")


class ScreenCache:
    """get-or-compute by key, in a bounded in-process LRU and optionally in Redis."""

    def __init__(self, redis_url: str | None = None, entries: int = LOCAL_ENTRIES) -> None:
        self._entries = entries
        self._local: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._flights: dict[str, threading.Lock] = {}
        self._redis: Any = None
        if redis_url:
            import redis

            self._redis = redis.Redis.from_url(redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)

    @staticmethod
    def key(what: str, *parts: Any) -> str:
        """A fixed-length key for ``what`` and its parts (any JSON-able values)."""
        blob = json.dumps([what, *parts], sort_keys=True, default=str, ensure_ascii=False)
        return KEY_PREFIX + what + ":" + hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]

    def get_or_compute(self, key: str, compute: Callable[[], T]) -> T:
        """The answer stored under ``key``, else ``compute()`` once (other callers of the key wait for it)."""
        found, value = self._get(key)
        if found:
            return value  # type: ignore[no-any-return]
        with self._lock:
            flight = self._flights.setdefault(key, threading.Lock())
        with flight:
            found, value = self._get(key)
            if not found:
                value = compute()
                self._set(key, value)
        with self._lock:
            self._flights.pop(key, None)
        return value  # type: ignore[no-any-return]

    def clear(self) -> None:
        """Forget every answer of this process (Redis keeps its own; the data version in keys moves on)."""
        with self._lock:
            self._local.clear()

    def __len__(self) -> int:
        return len(self._local)

    def _get(self, key: str) -> tuple[bool, Any]:
        with self._lock:
            if key in self._local:
                self._local.move_to_end(key)
                return True, self._local[key]
        if self._redis is not None:
            try:
                raw = self._redis.get(key)
            except Exception:  # a cache outage must never stop the wall
                log.warning("redis unavailable; the big screen uses its in-process cache", exc_info=True)
                return False, None
            if raw is not None:
                value = pickle.loads(raw)  # written by this class only, into our own Redis
                self._remember(key, value)
                return True, value
        return False, None

    def _set(self, key: str, value: Any) -> None:
        self._remember(key, value)
        if self._redis is not None:
            try:
                self._redis.set(key, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL), ex=REDIS_SECONDS)
            except Exception:
                log.warning("redis unavailable; the big screen uses its in-process cache", exc_info=True)

    def _remember(self, key: str, value: Any) -> None:
        with self._lock:
            self._local[key] = value
            self._local.move_to_end(key)
            while len(self._local) > self._entries:
                self._local.popitem(last=False)
