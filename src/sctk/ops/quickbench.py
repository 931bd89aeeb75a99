"""The weekly quick benchmark: a few timings that catch a service grown slow, each compared
with the previous week's run of the same task."""

from __future__ import annotations

import time
from statistics import median

import numpy as np
from sqlalchemy import select, text

from sctk.config import Settings
from sctk.storage.engine import session_scope
from sctk.storage.models import MaintenanceRun

SLOWER = 2.0  # a figure this many times last week's is reported


def _ms(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return median(times)


def measure(settings: Settings, engine) -> tuple[dict[str, float], dict[str, str]]:
    """The figures (ms) and notes saying what they were measured on or why one is missing."""
    from sctk.jobs import queue

    def ping() -> None:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def job_cycle() -> None:
        # submit, claim and finish one no-op job in one transaction that is rolled back,
        # so the benchmark leaves no rows behind
        with engine.connect() as conn, conn.begin() as tx:
            from sqlalchemy.orm import Session

            s = Session(bind=conn)
            job = queue.submit(s, "noop", {}, owner="quick-benchmark")
            s.flush()
            for claimed in queue.claim(s, "quick-benchmark", 1):
                queue.finish(s, claimed.id, {}, "quick-benchmark")
            tx.rollback()
            del job

    rng = np.random.default_rng(0)
    a = rng.standard_normal((256, 256))
    figures = {
        "db_ping_ms": _ms(ping),
        "job_cycle_ms": _ms(job_cycle),
        "matmul_256_ms": _ms(lambda: a @ a),
    }
    timed, notes = _prediction(settings, engine)
    figures |= timed
    return {k: round(v, 3) for k, v in figures.items()}, notes


def _prediction(settings: Settings, engine) -> tuple[dict[str, float], dict[str, str]]:
    """The time of a 1,000-row prediction of the newest tabular model on a sample of its own
    calibration inputs, and notes; a model that cannot predict is a note of this task, not an
    exception that ends it."""
    from sctk.errors import SctkError
    from sctk.storage.models import UqModel
    from sctk.uq import registry
    from sctk.uq.tabular_inputs import calibration_sample
    from sctk.uq.tabular_kind import KIND

    with session_scope(engine) as s:
        row = s.scalar(
            select(UqModel).where(UqModel.kind == KIND).order_by(UqModel.id.desc()).limit(1)
        )
        if row is None:
            return {}, {}
        label = registry.label(row)
        try:
            model = registry.load(settings.home, row)
            X, source = calibration_sample(s, settings.home, row, model, 1000)
            figure = _ms(lambda: model.predict_interval(X, 0.1))
        except Exception as exc:  # the benchmark reports it, the group goes on
            why = exc.message if isinstance(exc, SctkError) else f"{type(exc).__name__}: {exc}"
            return {}, {"prediction": f"model {label} could not predict: {why}"}
    return {"predict_1000_rows_ms": figure}, {"prediction": f"model {label} on {source}"}


def previous(engine) -> dict[str, float]:
    with session_scope(engine) as s:
        row = s.scalar(
            select(MaintenanceRun)
            .where(MaintenanceRun.task == "quick_benchmark", MaintenanceRun.status != "running")
            .order_by(MaintenanceRun.id.desc())
            .limit(1)
        )
        return dict((row.details or {}).get("figures", {})) if row else {}


def regressions(now: dict[str, float], before: dict[str, float]) -> list[str]:
    return [
        f"{k} {now[k]:.2f} ms (was {before[k]:.2f})"
        for k in now
        if before.get(k) and now[k] > SLOWER * before[k] and now[k] - before[k] > 1.0
    ]
