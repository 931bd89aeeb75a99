"""The shapes the API answers with, as typed dictionaries (the JSON as it comes, typed)."""

from __future__ import annotations

from typing import Any, TypedDict


class DatasetInfo(TypedDict):
    name: str
    origin: str
    path: str
    format: str
    sha256: str
    size_bytes: int
    rows: int
    columns: dict[str, str]
    owner: str
    created_at: str | None
    lineage: dict[str, Any] | None


class ImportResult(TypedDict):
    dataset: DatasetInfo
    report: dict[str, Any] | None  # the schema check, when a schema was given
    notes: list[str]


class ModelInfo(TypedDict):
    id: int
    name: str
    version: int
    kind: str  # "tabular" or "field"
    path: str
    sha256: str
    config: dict[str, Any]
    metrics: dict[str, Any]  # coverage, width, ... on the calibration set
    lineage: dict[str, Any]  # dataset, target, features, ...
    owner: str
    created_at: str | None


class JobInfo(TypedDict):
    id: int
    kind: str
    status: str  # queued, running, succeeded, failed, cancelled, dead
    params: dict[str, Any]
    owner: str
    attempts: int
    max_attempts: int
    progress: float  # 0 to 1
    message: str
    cancel_requested: bool
    worker: str | None
    created_at: str
    updated_at: str
    run_after: str
    started_at: str | None
    heartbeat_at: str | None
    finished_at: str | None
    result: dict[str, Any] | None
    error: str | None


class Evaluation(TypedDict, total=False):
    model: dict[str, Any]
    data: dict[str, Any]
    alpha: float
    n: int
    coverage: float  # the share of targets inside their interval (aim: 1 - alpha)
    mean_width: float
    interval_score: float
    gaussian_nll: float | None
    crps: float | None
    calibration: dict[str, Any] | None  # levels, observed coverage, miscalibration area
    coverage_noisiest: float | None
    coverage_quietest: float | None
    calibration_curve_source: str
    psi: dict[str, float]  # mean, min, median, max of the confidence score
    report: dict[str, str]  # the report's files on the server, by name


class BackupCatalog(TypedDict):
    snapshots: list[dict[str, Any]]  # newest first
    runs: list[dict[str, Any]]  # the last backup runs
    configured: bool  # False: no backup passphrase, so no backup is taken
    problem: str | None
