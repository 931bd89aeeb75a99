"""A detector: flags a value more than `k` median absolute deviations from the median of
the trailing window, once per episode."""

from __future__ import annotations

import statistics
from collections import deque

from sctk.monitoring.anomaly import Anomaly, Detector


class MadDetector(Detector):
    name = "example_mad"

    def __init__(self, window: int = 60, k: float = 6.0):
        self.window = window
        self.k = k
        self.reset()

    def reset(self) -> None:
        self.values: deque[float] = deque(maxlen=self.window)
        self.in_episode = False
        self.score = 0.0

    def update(self, t: float, x: float) -> Anomaly | None:
        found = None
        if len(self.values) >= self.window // 2:
            median = statistics.median(self.values)
            mad = statistics.median(abs(v - median) for v in self.values) or 1e-9
            deviations = abs(x - median) / (1.4826 * mad)
            # 0.5 at the threshold, towards 1 beyond, as the Detector contract asks
            self.score = deviations / (deviations + self.k)
            if deviations > self.k and not self.in_episode:
                found = self._anomaly(
                    start=t,
                    flagged=t,
                    value=x,
                    score=deviations,
                    kind="spike",
                    message=f"{x:g} is {deviations:.1f} MADs from the median {median:g}.",
                )
            self.in_episode = deviations > self.k
        self.values.append(x)
        return found
