"""How the writer compresses chunks: zstd level 3, zstd level 1, or not at all.

zstd is most of a backup's CPU, and level 3 costs nearly twice what level 1 does. On some
data the extra work buys nothing (on CSV text level 1 comes out even smaller); on data that
hardly compresses (noise-like numeric arrays, media, compressed or encrypted files) either
level saves a few percent for about a second of CPU per GiB written, and decompressing costs
again at every restore and verify. What pays off is a property of the data, and a file's data
tends to stay alike, so the writer learns it per file: one chunk in TRIAL_EVERY of a large
file, the first included, is compressed both ways, and the trial decides how the chunks after
it are stored:

- raw, when even the better level keeps more than RAW_ABOVE of the bytes;
- level 1, when its output is at most FAST_WITHIN times level 3's;
- level 3 otherwise.

A file's other chunks wait for its first trial (a few milliseconds); later trials change the
choice for the chunks processed after them, so a file whose content changes kind is followed.
Small files (read at once) are compressed at level 3. Whatever the choice, a chunk that
compression does not shrink is stored raw. Readers see only a chunk's flag (compressed or
not): the choice is the writer's alone, and repositories are unchanged by it.
"""

from __future__ import annotations

import threading

import zstandard

from sctk.backup.repo.formats import FLAG_ZSTD

STRONG_LEVEL = 3
FAST_LEVEL = 1
RAW_ABOVE = 0.95
FAST_WITHIN = 1.01
TRIAL_EVERY = 64  # chunks: about 32 MiB of a file between trials

RAW, FAST, STRONG = "raw", "fast", "strong"


def choose(size: int, fast: int, strong: int) -> str:
    """What a trial says for the chunks after it: SIZE bytes compressed to FAST bytes at the
    fast level and to STRONG bytes at the strong one."""
    if min(fast, strong) > RAW_ABOVE * size:
        return RAW
    if fast <= FAST_WITHIN * strong:
        return FAST
    return STRONG


class FilePolicy:
    """One file's choice: which of its chunks are trials, and what the newest finished trial
    chose. The reading thread calls next_is_trial() for each chunk in order; workers call
    compress() in any order."""

    __slots__ = ("count", "choice", "decided")

    def __init__(self, trials: bool):
        self.count = 0
        self.choice = STRONG
        # Set once the first trial has chosen; None for a file without trials (level 3).
        self.decided = threading.Event() if trials else None

    def next_is_trial(self) -> bool:
        trial = self.decided is not None and self.count % TRIAL_EVERY == 0
        self.count += 1
        return trial

    def current(self) -> str:
        if self.decided is not None:
            self.decided.wait()
        return self.choice

    def trial_done(self) -> None:
        """Called after every trial, even one that failed: no chunk may wait forever."""
        assert self.decided is not None
        self.decided.set()


# Files read at once: level 3, no trials (a shared instance, it never changes).
SMALL_FILES = FilePolicy(trials=False)


class Compressors:
    """One thread's zstd contexts (a context serves one thread; reusing it keeps its tables)."""

    def __init__(self) -> None:
        self.strong = zstandard.ZstdCompressor(level=STRONG_LEVEL)
        self.fast = zstandard.ZstdCompressor(level=FAST_LEVEL)

    def compress(self, data, policy: FilePolicy, trial: bool) -> tuple[object, int]:
        """(payload, flags) of one chunk of a file under POLICY; TRIAL: this chunk is one of
        its trials (stored as the better of the two levels makes it; the caller then calls
        policy.trial_done())."""
        if trial:
            comp = self._trial(data, policy)
        else:
            choice = policy.current()
            if choice == RAW:
                return data, 0
            comp = (self.fast if choice == FAST else self.strong).compress(data)
        # Any saving counts (repository size); what compression does not shrink stays raw.
        return (comp, FLAG_ZSTD) if len(comp) < len(data) else (data, 0)

    def _trial(self, data, policy: FilePolicy) -> bytes:
        fast = self.fast.compress(data)
        strong = self.strong.compress(data)
        policy.choice = choose(len(data), len(fast), len(strong))
        return fast if len(fast) <= len(strong) else strong
