"""Answers kept while what they were made from stays the same.

Dashboards and CI ask the same few pages again and again. A run list answer is reused as long
as the index's version (testbed.results.index.Index.version, which every write changes,
whichever controller makes it) is the one it was computed at; a run's answers as long as its
record's files are unchanged (their sizes and modification times). Bounded: the least
recently used answer goes first.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Hashable


class VersionedCache:
    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._entries: OrderedDict[Hashable, tuple[Hashable, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, version: Hashable) -> bytes | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] != version:
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def put(self, key: Hashable, version: Hashable, body: bytes) -> None:
        with self._lock:
            self._entries[key] = (version, body)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)


def json_bytes(obj: object) -> bytes:
    """Strict, compact JSON, as Starlette's JSONResponse writes it."""
    return json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
