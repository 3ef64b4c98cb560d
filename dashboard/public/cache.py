"""Answers cached by (what, parameters, data version, hour): shared in Redis when set, else in the process.

The data version (open_data.data_version) is bumped by every ETL run, so a new load never meets a stale
answer; the hour is in the key because the public views slide with time (a case becomes visible when its
delay has passed), so an answer lives at most until the next hour starts.  The version itself is read at
most every ``VERSION_SECONDS`` per process: one tiny query instead of one per request.

Redis errors never fail a request: the answer is computed and the in-process cache used instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import Any, Final, TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, text

log = logging.getLogger(__name__)

VERSION_SECONDS: Final = 5.0
ANSWER_SECONDS: Final = 3600
LOCAL_ENTRIES: Final = 512
KEY_PREFIX: Final = "citygrid:public:"
_TZ: Final = ZoneInfo("Asia/Shanghai")

T = TypeVar("T")


class AnswerCache:
    """get-or-compute by key, in Redis (``redis_url``) or in a bounded in-process LRU."""

    def __init__(self, engine: Callable[[], Engine], redis_url: str | None = None) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self._local: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        self._counts: dict[str, tuple[float, int]] = {}
        self._computing: dict[str, threading.Lock] = {}
        self._version: tuple[float, int] | None = None
        self._redis: Any = None
        if redis_url:
            import redis

            self._redis = redis.Redis.from_url(redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)

    def data_version(self) -> int:
        """open_data.data_version, re-read at most every VERSION_SECONDS."""
        now = time.monotonic()
        cached = self._version
        if cached is not None and now - cached[0] < VERSION_SECONDS:
            return cached[1]
        with self._engine().connect() as conn:
            version = int(conn.execute(text("SELECT version FROM open_data.data_version")).scalar_one())
        self._version = (now, version)
        return version

    def key(self, what: str, params: Any) -> str:
        """The cache key of ``what`` for ``params`` under the current data version and hour."""
        hour = datetime.now(_TZ).strftime("%Y%m%d%H")
        blob = json.dumps([what, params, self.data_version(), hour], sort_keys=True, default=str)
        return KEY_PREFIX + hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def get_or_compute(self, what: str, params: Any, compute: Callable[[], T]) -> T:
        """The cached answer of ``what`` for ``params``, computed (and stored) when missing."""
        key = self.key(what, params)
        found, value = self._get(key)
        if found:
            return value  # type: ignore[no-any-return]
        # One computation per key per process: threads asking the same question wait for the first answer
        # instead of all querying the database at once (a cold cache under load).
        with self._lock:
            key_lock = self._computing.setdefault(key, threading.Lock())
        with key_lock:
            found, value = self._get(key)
            if not found:
                value = compute()
                self._set(key, value)
        with self._lock:
            self._computing.pop(key, None)
        return value  # type: ignore[no-any-return]

    def _get(self, key: str) -> tuple[bool, Any]:
        if self._redis is not None:
            try:
                raw = self._redis.get(key)
                if raw is not None:
                    # Written by this class only; Redis is trusted like the database (never exposed to clients).
                    return True, pickle.loads(raw)
            except Exception:  # a cache outage must never fail a page
                log.warning("redis unavailable; using the in-process cache", exc_info=True)
        with self._lock:
            entry = self._local.get(key)
            if entry is not None and entry[0] > time.monotonic():
                self._local.move_to_end(key)
                return True, entry[1]
        return False, None

    def _set(self, key: str, value: Any) -> None:
        if self._redis is not None:
            try:
                self._redis.set(key, pickle.dumps(value), ex=ANSWER_SECONDS)
                return
            except Exception:
                log.warning("redis unavailable; using the in-process cache", exc_info=True)
        with self._lock:
            self._local[key] = (time.monotonic() + ANSWER_SECONDS, value)
            self._local.move_to_end(key)
            while len(self._local) > LOCAL_ENTRIES:
                self._local.popitem(last=False)

    def incr_window(self, key: str, window_seconds: int) -> int:
        """Count one hit on ``key`` in the current fixed window; the count so far (for the rate limit)."""
        bucket = int(time.time() // window_seconds)
        full = f"{KEY_PREFIX}rate:{key}:{bucket}"
        if self._redis is not None:
            try:
                pipe = self._redis.pipeline()
                pipe.incr(full)
                pipe.expire(full, window_seconds + 1)
                return int(pipe.execute()[0])
            except Exception:
                log.warning("redis unavailable; rate limit counted in-process", exc_info=True)
        with self._lock:
            now = time.monotonic()
            if len(self._counts) > 50_000:  # many clients: forget the finished windows
                self._counts = {k: v for k, v in self._counts.items() if v[0] > now}
            expiry, count = self._counts.get(full, (0.0, 0))
            count = (count if expiry > now else 0) + 1
            self._counts[full] = (now + window_seconds + 1, count)
            return count
