"""Monitoring records: 1-minute aggregates of the collected system metrics."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from sctk.storage.models.base import Base


class MetricAggregate(Base):
    """One metric over one minute: average, minimum, maximum and the number of samples.

    (metric, bucket_start) is unique: a second writer for the same minute (another API
    process, a restart within the minute) merges its samples into the row.
    """

    __tablename__ = "metric_aggregates"
    __table_args__ = (
        UniqueConstraint("metric", "bucket_start", name="uq_metric_aggregates_metric_bucket"),
        # retention deletes by time alone
        Index("ix_metric_aggregates_bucket_start", "bucket_start"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    metric: Mapped[str] = mapped_column(String(200))
    bucket_start: Mapped[datetime] = mapped_column()
    avg: Mapped[float] = mapped_column(Float)
    min: Mapped[float] = mapped_column(Float)
    max: Mapped[float] = mapped_column(Float)
    count: Mapped[int] = mapped_column(Integer)
