"""The ids of the chunks one writer has stored in this run, whole (32 bytes each) and found
by bytes.find in C, about 33 bytes an id from tens of thousands of ids up.

Chunk ids are keyed hashes, so their leading hex digits spread them evenly. The newest ids
wait in a set of their hex strings; every RECENT ids they are folded, as raw bytes, into one
of SLOTS byte strings chosen by the id's first three hex digits. A slot that holds more than
SLOT_IDS ids is split into a list of 16 byte strings by the fourth digit, so a search reads
at most a few KiB up to ~10^7 ids. A byte string costs ~40 bytes of object header and list
slot: one per id's first four digits (65,536 from the start, as this set was before) held
5.7 MiB for the 113,000 ids of a first backup of the reference data set at scale 16 (0.9
for the 7,100 at scale 1), where 4,096 slots of ~27 ids each hold 3.6 (0.35): RESULTS.md,
"Backup first-run growth". No numpy, whose import alone costs 12 MiB.

Thread-safe for one adding thread and any number of readers: a fold replaces each byte
string whole (a split slot's list is put in place complete), so a reader searches either
the old string or the new one, and empties the set only once every id in it is in its
string.
"""

from __future__ import annotations

ID_BYTES = 32


class StoredIds:
    # ids in the set before they are folded: 16,384 held ~2 MiB of hex strings and their
    # fold ~3 MiB more at once (peak 7.9 MiB for 88,000 ids, 4.9 with 1,024, and no slower
    # to add: RESULTS.md, "Backup, twelfth session"); a fold copies only the strings it
    # touches
    RECENT = 1_024
    SLOTS = 4_096  # by the first three hex digits: a 32 KiB list, made at the first fold
    SLOT_IDS = 64  # a slot past 2 KiB is split in 16 (~4 ids each then, 15 at 10^6 ids)

    def __init__(self):
        self.recent: set[str] = set()
        self.slots: list | None = None  # each a bytes, or a list of 16 (split)
        self.folded = 0

    def __len__(self) -> int:
        return self.folded + len(self.recent)

    def add(self, cid: str) -> None:
        self.recent.add(cid)
        if len(self.recent) >= self.RECENT:
            self._fold()

    def _fold(self) -> None:
        slots = self.slots
        if slots is None:
            slots = [b""] * self.SLOTS
        grouped: dict[int, list[bytes]] = {}
        for c in self.recent:
            grouped.setdefault(int(c[:3], 16), []).append(bytes.fromhex(c))
        for s, keys in grouped.items():
            cur = slots[s]
            if cur.__class__ is bytes:
                new = cur + b"".join(keys)
                slots[s] = new if len(new) <= self.SLOT_IDS * ID_BYTES else _split(new)
            else:
                for sub, part in _by_fourth_digit(keys).items():
                    cur[sub] = cur[sub] + part
        # The strings in place before the set is emptied: a reader always finds an id in one.
        self.slots = slots
        self.folded += len(self.recent)
        self.recent = set()

    def __contains__(self, cid: str) -> bool:
        if cid in self.recent:
            return True
        slots = self.slots
        if slots is None:
            return False
        p = int(cid[:4], 16)
        blob = slots[p >> 4]
        if blob.__class__ is not bytes:
            blob = blob[p & 15]
        key = bytes.fromhex(cid)
        i = blob.find(key)
        while i >= 0:
            if i % ID_BYTES == 0:
                return True
            i = blob.find(key, i + 1)  # matched across two ids: look further
        return False


def _by_fourth_digit(keys) -> dict[int, bytes]:
    parts: dict[int, list[bytes]] = {}
    for k in keys:
        parts.setdefault(k[1] & 15, []).append(k)
    return {sub: b"".join(ks) for sub, ks in parts.items()}


def _split(blob: bytes) -> list[bytes]:
    """A slot's ids in 16 byte strings by their fourth hex digit."""
    keys = [blob[j : j + ID_BYTES] for j in range(0, len(blob), ID_BYTES)]
    parts = _by_fourth_digit(keys)
    return [parts.get(sub, b"") for sub in range(16)]
