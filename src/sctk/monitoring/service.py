"""What the API and the CLI ask of monitoring: current values, history, summary, export.

Recent history comes from the running collector's in-memory window (raw samples); anything
longer, or any question asked where no collector runs (the CLI), from the 1-minute
aggregates in the database. Every answer says which it used.
"""

from __future__ import annotations

import csv
import io
import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from sctk.config import Settings
from sctk.errors import SctkError
from sctk.fsutil import atomic_write
from sctk.monitoring import store
from sctk.monitoring.collector import Collector, disk_paths
from sctk.monitoring.sampler import metric_names, sample_once
from sctk.security.spreadsheet import escape_cell

FORMATS = ("json", "csv")
MAX_POINTS = 2000  # points one history answer holds at most
# the steps long spans are cut into: whole minutes that divide hours and days
STEPS_MINUTES = (1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440)


def _now() -> datetime:
    return datetime.now(UTC)


def max_hours(settings: Settings) -> float:
    return settings.monitor.retention_days * 24.0


def check_hours(settings: Settings, hours: float) -> float:
    """HOURS if it is a span the store can answer; else one sentence naming the bounds."""
    limit = max_hours(settings)
    if not isinstance(hours, int | float) or not math.isfinite(hours) or not 0 < hours <= limit:
        raise SctkError(
            f"hours must be more than 0 and at most {limit:g} (the retention period of "
            f"{settings.monitor.retention_days} days), not {hours}; pass a number in that range."
        )
    return float(hours)


def known_metrics(
    settings: Settings, session: Session | None = None, collector: Collector | None = None
) -> list[str]:
    """The metrics this installation collects, plus any still held in the window or store."""
    names = metric_names(disk_paths(settings))
    extra: list[str] = []
    if collector is not None:
        extra += collector.window.names()
    if session is not None:
        extra += store.stored_metrics(session)
    return names + sorted(set(extra) - set(names))


def check_metric(
    settings: Settings, metric: str, session: Session | None, collector: Collector | None
) -> str:
    """METRIC if it is collected, held in the window or stored; else one sentence listing
    the known metrics."""
    if metric in metric_names(disk_paths(settings)):
        return metric
    if collector is not None and metric in collector.window.names():
        return metric
    if session is not None and store.has_metric(session, metric):
        return metric
    known = known_metrics(settings, session, collector)
    raise SctkError(f"Unknown metric '{metric[:200]}'; choose one of: {', '.join(known)}.")


def current(settings: Settings, collector: Collector | None = None) -> dict[str, Any]:
    """The newest value of every metric: from the running collector, else sampled now."""
    if collector is not None and collector.is_running:
        latest = collector.window.latest()
        if latest:
            t = max(t for t, _ in latest.values())
            return {
                "time": datetime.fromtimestamp(t, UTC).isoformat(),
                "source": "collector",
                "metrics": {name: value for name, (_, value) in latest.items()},
            }
    at = _now()
    sample = sample_once(disk_paths(settings))
    return {"time": at.isoformat(), "source": "sample", "metrics": sample}


def _use_window(settings: Settings, hours: float, collector: Collector | None) -> bool:
    return (
        collector is not None
        and collector.is_running
        and hours * 3600.0 <= collector.window.window_seconds
    )


def history(
    settings: Settings,
    session: Session,
    metric: str,
    hours: float,
    collector: Collector | None = None,
) -> dict[str, Any]:
    """Points of METRIC over the last HOURS: raw samples from the window when it spans them,
    else 1-minute aggregates. Each point: time, avg, min, max, count (count 1 when raw)."""
    hours = check_hours(settings, hours)
    check_metric(settings, metric, session, collector)
    since = _now() - timedelta(hours=hours)
    if _use_window(settings, hours, collector):
        assert collector is not None
        times, values = collector.window.series(metric, since.timestamp())
        points = [
            {
                "time": datetime.fromtimestamp(t, UTC).isoformat(),
                "avg": v,
                "min": v,
                "max": v,
                "count": 1,
            }
            for t, v in zip(times.tolist(), values.tolist(), strict=True)
        ]
        source, step_seconds = "window", collector.interval
    else:
        # long spans are merged into coarser steps: at most MAX_POINTS points an answer
        needed = hours * 60 / MAX_POINTS
        step = next((m for m in STEPS_MINUTES if m >= needed), STEPS_MINUTES[-1])
        points = [
            {
                "time": a.bucket_start.isoformat(),
                "avg": a.avg,
                "min": a.min,
                "max": a.max,
                "count": a.count,
            }
            for a in coarsen(store.history(session, metric, since), step)
        ]
        source, step_seconds = "aggregates", step * 60
    return {
        "metric": metric,
        "hours": hours,
        "source": source,
        "step_seconds": step_seconds,
        "points": points,
    }


def coarsen(aggregates: list[store.Aggregate], minutes: int) -> list[store.Aggregate]:
    """Merge consecutive 1-minute aggregates of one metric into buckets of MINUTES."""
    if minutes <= 1:
        return aggregates
    out: list[store.Aggregate] = []
    width = minutes * 60
    for a in aggregates:
        start = store.bucket_of(a.bucket_start, width)
        last = out[-1] if out else None
        if last is not None and last.bucket_start == start:
            n = last.count + a.count
            out[-1] = store.Aggregate(
                a.metric,
                start,
                (last.avg * last.count + a.avg * a.count) / n,
                min(last.min, a.min),
                max(last.max, a.max),
                n,
            )
        else:
            out.append(store.Aggregate(a.metric, start, a.avg, a.min, a.max, a.count))
    return out


def summary(
    settings: Settings, session: Session, hours: float, collector: Collector | None = None
) -> dict[str, Any]:
    """Per metric over the last HOURS: current, average, maximum, minimum and points (the
    number of samples summarised), as the maintenance guide's performance summary."""
    hours = check_hours(settings, hours)
    since = _now() - timedelta(hours=hours)
    metrics: dict[str, dict[str, Any]] = {}
    if _use_window(settings, hours, collector):
        assert collector is not None
        for name in collector.window.names():
            _, values = collector.window.series(name, since.timestamp())
            if values.size:
                lo, hi = float(np.min(values)), float(np.max(values))
                metrics[name] = {
                    "current": float(values[-1]),
                    # a sum's rounding can put the mean of equal values a hair outside them
                    "average": min(max(float(np.mean(values)), lo), hi),
                    "maximum": hi,
                    "minimum": lo,
                    "points": int(values.size),
                }
        source = "window"
    else:
        metrics = store.summary(session, since)
        source = "aggregates"
        if collector is not None and collector.is_running:
            # the stored newest minute is up to a minute old; the window has the value now
            for name, (_, value) in collector.window.latest().items():
                if name in metrics:
                    metrics[name]["current"] = value
    return {"hours": hours, "source": source, "since": since.isoformat(), "metrics": metrics}


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise SctkError(f"Unknown export format '{fmt}'; choose one of: {', '.join(FORMATS)}.")
    return fmt


def export(
    settings: Settings,
    session: Session,
    path: Path,
    fmt: str = "json",
    hours: float = 24.0,
    metrics: list[str] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write the stored aggregates of the last HOURS (of METRICS, default all) to PATH,
    atomically; an existing file is kept unless OVERWRITE."""
    check_format(fmt)
    hours = check_hours(settings, hours)
    for m in metrics or []:
        check_metric(settings, m, session, None)
    if path.exists() and not overwrite:
        raise SctkError(f"{path} already exists; choose another file or pass --force.")
    if not path.parent.is_dir():
        raise SctkError(f"The directory {path.parent} does not exist; create it first.")
    since = _now() - timedelta(hours=hours)
    rows = [a for a in store.history(session, None, since) if not metrics or a.metric in metrics]
    if fmt == "json":
        body = json.dumps(
            {
                "exported_at": _now().isoformat(),
                "hours": hours,
                "aggregates": [a.as_dict() for a in rows],
            },
            indent=2,
        ).encode()
    else:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["metric", "bucket_start", "avg", "min", "max", "count"])
        for a in rows:
            writer.writerow(
                [
                    escape_cell(a.metric),
                    a.bucket_start.isoformat(),
                    repr(a.avg),
                    repr(a.min),
                    repr(a.max),
                    a.count,
                ]
            )
        body = buf.getvalue().encode()
    atomic_write(path, body)
    return {"path": str(path), "format": fmt, "rows": len(rows), "hours": hours}
