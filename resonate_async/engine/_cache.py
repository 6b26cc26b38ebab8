"""A cache of decoded settled promise records, bounded by bytes.

A settled promise never changes, so a kept record is never stale and evicting one only costs
a decode later. The bound is on the sum of the records' sizes (their encoded length plus a
fixed per-record overhead for the Python objects), so a few huge values cannot make the
process grow: with 1 MB step results a count bound of 100,000 records would mean 100 GB.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

from resonate_async.protocol import Promise

DEFAULT_CACHE_BYTES: Final = 32 * 2**20
# What a decoded record costs beyond its encoded bytes (the Struct, its two values, the tags
# dict and its strings): about 500 bytes, measured on a step's record (tracemalloc).
RECORD_OVERHEAD: Final = 512


class SettledCache:
    """Decoded settled records by id, least recently used evicted first, within ``max_bytes``.

    A record whose size alone is over a quarter of the bound is not kept (it would evict a
    large part of the cache for one read); ``max_bytes=0`` keeps nothing.
    """

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise ValueError(f"cache_bytes must be an int >= 0 (bytes of decoded settled "
                             f"records to keep in memory; 0 keeps none), got {max_bytes!r}")
        self.max_bytes = max_bytes
        self.bytes = 0
        self._records: OrderedDict[str, tuple[Promise, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._records)

    def get(self, promise_id: str) -> Promise | None:
        """The kept record of ``promise_id`` (now the most recently used), or ``None``."""
        entry = self._records.get(promise_id)
        if entry is None:
            return None
        self._records.move_to_end(promise_id)
        return entry[0]

    def put(self, promise: Promise, encoded_size: int) -> None:
        """Keep a settled ``promise`` whose encoded record is ``encoded_size`` bytes long."""
        size = encoded_size + RECORD_OVERHEAD
        records = self._records
        old = records.pop(promise.id, None)
        if old is not None:
            self.bytes -= old[1]
        if size * 4 > self.max_bytes:
            return
        records[promise.id] = (promise, size)
        self.bytes += size
        while self.bytes > self.max_bytes:
            self.bytes -= records.popitem(last=False)[1][1]

    def clear(self) -> None:
        self._records.clear()
        self.bytes = 0
