"""Reading chunks from remote storage in blocks: one request per few MiB, not per chunk.

A restore asks for one chunk (~0.5 MiB) at a time, and a first backup's chunks lie in its
packs in about the order they are read back; on an object store every ranged GET costs a
round trip (and some servers read the whole object to serve a range). So a range is served
from aligned blocks of BLOCK bytes, fetched once each, and the last few blocks are kept:
a few requests per pack instead of dozens. Packs are immutable (named by their hash), so a
kept block never goes stale. Threads asking for a block being fetched wait for that fetch.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future

BLOCK = 4 * 1024 * 1024  # a random one-chunk read costs at most this much more transfer
KEPT = 6  # blocks kept (memory: KEPT * BLOCK)


class BlockReader:
    """read(name, offset, length) through FETCH(name, start, end) of whole aligned blocks."""

    def __init__(self, fetch: Callable[[str, int, int], bytes], block: int = BLOCK):
        self.fetch = fetch
        self.block = block
        self._lock = threading.Lock()
        self._blocks: OrderedDict[tuple[str, int], Future] = OrderedDict()

    def read(self, name: str, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        first, last = offset // self.block, (offset + length - 1) // self.block
        parts = [self._get(name, i) for i in range(first, last + 1)]
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        start = offset - first * self.block
        return bytes(memoryview(data)[start : start + length])

    def _get(self, name: str, index: int) -> bytes:
        key = (name, index)
        with self._lock:
            fut = self._blocks.get(key)
            owner = fut is None
            if owner:
                fut = self._blocks[key] = Future()
            else:
                self._blocks.move_to_end(key)
            # forget the oldest finished blocks (one being fetched stays: others wait on it)
            for old in [k for k, f in self._blocks.items() if f.done()][: -KEPT or None]:
                if len(self._blocks) <= KEPT:
                    break
                del self._blocks[old]
        if owner:
            try:
                start = index * self.block
                fut.set_result(self.fetch(name, start, start + self.block))
            except BaseException as exc:
                with self._lock:
                    self._blocks.pop(key, None)  # a failed fetch is tried again next time
                fut.set_exception(exc)
                raise
        return fut.result()
