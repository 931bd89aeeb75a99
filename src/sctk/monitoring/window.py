"""The in-memory window of raw samples: one fixed-size numpy ring buffer per series.

Memory is bounded by construction: each series holds at most `capacity` (time, value) pairs
(16 bytes each), allocated once when the series first appears; the window for one hour at
1 Hz is 3600 pairs, about 56 KiB per series.
"""

from __future__ import annotations

import math
import threading

import numpy as np


class _Ring:
    __slots__ = ("times", "values", "next", "size")

    def __init__(self, capacity: int):
        self.times = np.zeros(capacity, dtype=np.float64)  # epoch seconds
        self.values = np.zeros(capacity, dtype=np.float64)
        self.next = 0
        self.size = 0

    def add(self, t: float, value: float) -> None:
        self.times[self.next] = t
        self.values[self.next] = value
        self.next = (self.next + 1) % len(self.times)
        self.size = min(self.size + 1, len(self.times))

    def ordered(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the stored pairs, oldest first."""
        if self.size < len(self.times):
            return self.times[: self.size].copy(), self.values[: self.size].copy()
        idx = np.r_[self.next : len(self.times), 0 : self.next]
        return self.times[idx], self.values[idx]


class Window:
    """The last WINDOW_SECONDS of samples taken every INTERVAL_SECONDS, per series name."""

    def __init__(self, window_seconds: float, interval_seconds: float):
        self.window_seconds = float(window_seconds)
        self.capacity = max(1, math.ceil(window_seconds / interval_seconds))
        self._rings: dict[str, _Ring] = {}
        self._lock = threading.Lock()

    def add(self, t: float, sample: dict[str, float]) -> None:
        """Append one sample (epoch seconds T; a value per series) to every series in it."""
        with self._lock:
            for name, value in sample.items():
                ring = self._rings.get(name)
                if ring is None:
                    ring = self._rings[name] = _Ring(self.capacity)
                ring.add(t, float(value))

    def names(self) -> list[str]:
        with self._lock:
            return list(self._rings)

    def series(self, name: str, since: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(times, values) of NAME, oldest first, at or after SINCE (epoch seconds); the
        points older than the window (a stalled sampler leaves some) are never returned."""
        with self._lock:
            ring = self._rings.get(name)
            if ring is None:
                return np.empty(0), np.empty(0)
            times, values = ring.ordered()
        if times.size == 0:
            return times, values
        floor = times[-1] - self.window_seconds
        if since is not None:
            floor = max(floor, since)
        keep = times > floor if since is None else times >= floor
        return times[keep], values[keep]

    def latest(self) -> dict[str, tuple[float, float]]:
        """The newest (time, value) of every series."""
        with self._lock:
            out = {}
            for name, ring in self._rings.items():
                if ring.size:
                    i = (ring.next - 1) % len(ring.times)
                    out[name] = (float(ring.times[i]), float(ring.values[i]))
            return out

    def nbytes(self) -> int:
        with self._lock:
            return sum(r.times.nbytes + r.values.nbytes for r in self._rings.values())
