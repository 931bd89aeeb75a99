"""One sample of the machine and of sctk's own processes, read with psutil.

Rates (CPU percentages, network bytes per second) are differences between two calls, so a
sampler keeps the previous counters; it is primed when made, and its first sample covers the
time since then. It keeps its own counters rather than psutil's module-level ones
(`psutil.cpu_percent()`), so other code calling psutil does not disturb its figures.

Metric names are flat strings: cpu_percent, memory_percent, disk_percent (the first path;
the others disk_percent:/path), net_sent_bytes_per_s, net_recv_bytes_per_s, sctk_cpu_percent,
sctk_rss_bytes (this process and its children), load1.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import psutil

Sample = dict[str, float]
Sampler = Callable[[], Sample]

BASE_METRICS = (
    "cpu_percent",
    "memory_percent",
    "net_sent_bytes_per_s",
    "net_recv_bytes_per_s",
    "sctk_cpu_percent",
    "sctk_rss_bytes",
    "load1",
)
# finding children walks every process of the machine (~2 ms): done now and then, not each second
CHILDREN_REFRESH_SECONDS = 30.0


def disk_metric_names(paths: Sequence[str | Path]) -> list[str]:
    """disk_percent for the first path, disk_percent:<path> for the others."""
    return ["disk_percent" if i == 0 else f"disk_percent:{p}" for i, p in enumerate(paths)]


def metric_names(disk_paths: Sequence[str | Path]) -> list[str]:
    """Every metric a SystemSampler over DISK_PATHS produces, in a stable order."""
    names = list(BASE_METRICS)
    names[2:2] = disk_metric_names(disk_paths)
    return names


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _busy_seconds(t) -> tuple[float, float]:
    """(busy, total) CPU seconds of a psutil cpu_times record (guest time is inside user)."""
    total = sum(t) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
    idle = t.idle + getattr(t, "iowait", 0.0)
    return total - idle, total


class SystemSampler:
    """A callable returning one Sample; see the module docstring for the names."""

    def __init__(
        self,
        disk_paths: Sequence[str | Path],
        pid: int | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ):
        self.disk_paths = [Path(p) for p in disk_paths]
        self.disk_names = disk_metric_names(self.disk_paths)
        self._monotonic = monotonic
        self._proc = psutil.Process(pid)
        self._children: dict[int, psutil.Process] = {}
        self._children_at = float("-inf")
        self._last_t = monotonic()
        self._last_cpu = _busy_seconds(psutil.cpu_times())
        net = psutil.net_io_counters()
        self._last_net = (net.bytes_sent, net.bytes_recv) if net else (0, 0)
        self._last_proc_cpu: dict[int, float] = {}
        self._own_cpu()  # primes the per-process counters

    def _refresh_children(self, now: float) -> None:
        if now - self._children_at < CHILDREN_REFRESH_SECONDS:
            return
        self._children_at = now
        try:
            found = self._proc.children(recursive=True)
        except psutil.Error:
            return
        # keep the Process objects already known: their identity check survives pid reuse
        self._children = {p.pid: self._children.get(p.pid, p) for p in found}

    def _own_cpu(self) -> tuple[float, float]:
        """(CPU seconds used since the previous call, RSS bytes) of this process and children."""
        used = 0.0
        rss = 0.0
        seen: dict[int, float] = {}
        procs = [self._proc, *self._children.values()]
        for proc in procs:
            try:
                with proc.oneshot():
                    t = proc.cpu_times()
                    mem = proc.memory_info().rss
            except psutil.Error:
                self._children.pop(proc.pid, None)
                continue
            cpu = t.user + t.system
            if proc is self._proc:
                # children that ended and were waited for are counted here
                cpu += t.children_user + t.children_system
            seen[proc.pid] = cpu
            before = self._last_proc_cpu.get(proc.pid)
            if before is not None:
                used += max(0.0, cpu - before)
            rss += mem
        self._last_proc_cpu = seen
        return used, rss

    def __call__(self) -> Sample:
        now = self._monotonic()
        dt = max(now - self._last_t, 1e-6)
        self._last_t = now
        sample: Sample = {}

        busy, total = _busy_seconds(psutil.cpu_times())
        d_busy, d_total = busy - self._last_cpu[0], total - self._last_cpu[1]
        self._last_cpu = (busy, total)
        sample["cpu_percent"] = round(100.0 * d_busy / d_total, 2) if d_total > 0 else 0.0
        sample["memory_percent"] = float(psutil.virtual_memory().percent)
        for name, path in zip(self.disk_names, self.disk_paths, strict=True):
            try:
                sample[name] = float(psutil.disk_usage(str(_nearest_existing(path))).percent)
            except OSError:
                continue  # an unmounted path: the series has a gap rather than a false value
        net = psutil.net_io_counters()
        if net:
            sent, recv = net.bytes_sent, net.bytes_recv
            # counters can wrap or reset (an interface going away): never a negative rate
            sample["net_sent_bytes_per_s"] = round(max(0, sent - self._last_net[0]) / dt, 1)
            sample["net_recv_bytes_per_s"] = round(max(0, recv - self._last_net[1]) / dt, 1)
            self._last_net = (sent, recv)
        self._refresh_children(now)
        used, rss = self._own_cpu()
        sample["sctk_cpu_percent"] = round(100.0 * used / dt, 2)
        sample["sctk_rss_bytes"] = float(rss)
        sample["load1"] = round(os.getloadavg()[0], 2)
        return sample


def sample_once(disk_paths: Sequence[str | Path], over_seconds: float = 0.25) -> Sample:
    """One sample whose rates cover OVER_SECONDS from now (for `sctk monitor status`)."""
    sampler = SystemSampler(disk_paths)
    time.sleep(over_seconds)  # the rates need two readings this far apart
    return sampler()
