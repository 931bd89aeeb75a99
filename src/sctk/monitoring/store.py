"""The metric store: 1-minute aggregates in the database, merged, queried and pruned."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, delete, func, select
from sqlalchemy.orm import Session

from sctk.storage.engine import session_scope
from sctk.storage.models import MetricAggregate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Aggregate:
    """One metric over one bucket (a minute): avg, min, max of COUNT samples."""

    metric: str
    bucket_start: datetime
    avg: float
    min: float
    max: float
    count: int

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["bucket_start"] = self.bucket_start.isoformat()
        return data


def _upsert(dialect: str):
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert

        return insert, func.least, func.greatest
    from sqlalchemy.dialects.sqlite import insert

    # SQLite's min()/max() with two arguments are the scalar functions
    return insert, func.min, func.max


def save(engine: Engine, aggregates: Iterable[Aggregate]) -> int:
    """Store AGGREGATES; a row already there for the same metric and minute (another process,
    or this one before a restart) is merged with it: counts add, the average is weighted."""
    rows = [
        {
            "metric": a.metric,
            "bucket_start": a.bucket_start,
            "avg": a.avg,
            "min": a.min,
            "max": a.max,
            "count": a.count,
        }
        for a in aggregates
    ]
    if not rows:
        return 0
    insert, least, greatest = _upsert(engine.dialect.name)
    stmt = insert(MetricAggregate)
    new = stmt.excluded
    table = MetricAggregate.__table__.c
    stmt = stmt.on_conflict_do_update(
        index_elements=["metric", "bucket_start"],
        set_={
            "avg": (table.avg * table.count + new.avg * new.count) / (table.count + new.count),
            "min": least(table.min, new.min),
            "max": greatest(table.max, new.max),
            "count": table.count + new.count,
        },
    )
    with session_scope(engine) as session:
        session.execute(stmt, rows)
    return len(rows)


def prune(engine: Engine, before: datetime) -> int:
    """Delete the aggregates of buckets that started before BEFORE; how many went."""
    with session_scope(engine) as session:
        result = session.execute(
            delete(MetricAggregate).where(MetricAggregate.bucket_start < before)
        )
        return result.rowcount or 0


def _of(row: MetricAggregate) -> Aggregate:
    return Aggregate(row.metric, row.bucket_start, row.avg, row.min, row.max, row.count)


def history(
    session: Session, metric: str | None, since: datetime, until: datetime | None = None
) -> list[Aggregate]:
    """Aggregates of METRIC (None: every metric) from SINCE, oldest first."""
    query = select(MetricAggregate).where(MetricAggregate.bucket_start >= since)
    if metric is not None:
        query = query.where(MetricAggregate.metric == metric)
    if until is not None:
        query = query.where(MetricAggregate.bucket_start < until)
    query = query.order_by(MetricAggregate.bucket_start, MetricAggregate.metric)
    return [_of(r) for r in session.scalars(query)]


def stored_metrics(session: Session) -> list[str]:
    """Names of the metrics that have aggregates."""
    return list(session.scalars(select(MetricAggregate.metric).distinct()))


def has_metric(session: Session, metric: str) -> bool:
    """Whether METRIC has any aggregate (an index lookup, not a scan)."""
    found = session.scalar(
        select(MetricAggregate.id).where(MetricAggregate.metric == metric).limit(1)
    )
    return found is not None


def summary(session: Session, since: datetime) -> dict[str, dict[str, Any]]:
    """Per metric since SINCE: average (weighted by samples), minimum, maximum, samples, and
    the newest bucket's average as 'current'."""
    rows = session.execute(
        select(
            MetricAggregate.metric,
            func.sum(MetricAggregate.avg * MetricAggregate.count),
            func.min(MetricAggregate.min),
            func.max(MetricAggregate.max),
            func.sum(MetricAggregate.count),
            func.max(MetricAggregate.bucket_start),
        )
        .where(MetricAggregate.bucket_start >= since)
        .group_by(MetricAggregate.metric)
    ).all()
    out: dict[str, dict[str, Any]] = {}
    for metric, weighted, lo, hi, count, newest in rows:
        last = session.scalar(
            select(MetricAggregate.avg).where(
                MetricAggregate.metric == metric, MetricAggregate.bucket_start == newest
            )
        )
        out[metric] = {
            "current": last,
            # sum(avg * count) / count can round a hair outside [minimum, maximum]
            "average": min(max(float(weighted) / int(count), lo), hi) if count else None,
            "maximum": hi,
            "minimum": lo,
            "points": int(count or 0),
        }
    return out


def bucket_of(now: datetime, seconds: int = 60) -> datetime:
    """The start of the bucket of SECONDS that NOW falls in (UTC)."""
    epoch = int(now.timestamp())
    return datetime.fromtimestamp(epoch - epoch % seconds, UTC)
