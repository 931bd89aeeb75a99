"""Trained UQ models: the registry's rows; the model files live under <home>/results/models.

Beside them, the true values observed for a model's predictions in production
(`uq_observations`, sctk.uq.observations) and the state of a model's adaptive conformal
mode (`uq_adaptive`, sctk.uq.adaptive_alpha)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from sctk.storage.models.base import Base, utcnow


class UqModel(Base):
    __tablename__ = "uq_models"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_uq_models_name_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(120), index=True)
    version: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))  # "tabular"
    path: Mapped[str] = mapped_column(String(500))  # relative to the data directory
    sha256: Mapped[str] = mapped_column(String(64))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    lineage: Mapped[dict[str, Any]] = mapped_column(default=dict)
    owner: Mapped[str] = mapped_column(String(64), default="system")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class UqObservation(Base):
    """One true value seen for a row a model predicts, with the interval it was given then.

    mean and sigma are kept so that the model can be recalibrated from its observations
    (the conformal score needs them); alpha is the miscoverage asked, alpha_used the one the
    interval was built at (they differ in adaptive mode)."""

    __tablename__ = "uq_observations"
    __table_args__ = (Index("ix_uq_observations_model_id_id", "model_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("uq_models.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(default=utcnow)
    y: Mapped[float] = mapped_column(Float)
    mean: Mapped[float] = mapped_column(Float)
    sigma: Mapped[float] = mapped_column(Float)
    lower: Mapped[float] = mapped_column(Float)
    upper: Mapped[float] = mapped_column(Float)
    alpha: Mapped[float] = mapped_column(Float)
    alpha_used: Mapped[float] = mapped_column(Float)
    covered: Mapped[bool] = mapped_column(Boolean)
    # the model file's sha256 when observed: the rolling coverage counts the observations of
    # the calibration the model has now, not of one a recalibration replaced
    sha256: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(64), default="system")


class UqAdaptive(Base):
    """A model's adaptive conformal mode (Gibbs and Candes 2021): on, its target alpha, its
    step gamma, and alpha_t, the miscoverage its next intervals are built at."""

    __tablename__ = "uq_adaptive"

    model_id: Mapped[int] = mapped_column(
        ForeignKey("uq_models.id", ondelete="CASCADE"), primary_key=True
    )
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    alpha: Mapped[float] = mapped_column(Float)
    gamma: Mapped[float] = mapped_column(Float)
    alpha_t: Mapped[float] = mapped_column(Float)
    steps: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
