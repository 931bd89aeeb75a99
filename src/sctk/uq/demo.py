"""`sctk uq demo`: the whole engine on the shipped flow problem, in under a minute.

Generates seeded pairs (sctk.uq.flow: velocity at t = 0, the coarse physics prediction, the
accurate truth at t_end), stores them as three datasets (train, calibration, test: one
flattened field per row), trains a FieldHybridRegressor on the train part, calibrates it on
the calibration part, registers it as the next version of model 'flow-demo', and evaluates
it on the test part with the same report `sctk uq evaluate` writes. For comparison it scores
what a user without the hybrid has: the physics prediction alone with plain split-conformal
intervals from the same calibration fields.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from sctk.errors import SctkError
from sctk.uq import fields, metrics

MODEL_NAME = "flow-demo"
PHYSICS = "sctk.uq.flow:coarse_physics"
MIN_SAMPLES, MAX_SAMPLES = 12, 5000
MAX_EPOCHS = 1000
ALPHA = 0.1


def _parts(samples: int) -> dict[str, slice]:
    n_train = samples // 2
    n_cal = (samples - n_train) // 2
    return {
        "train": slice(0, n_train),
        "calibration": slice(n_train, n_train + n_cal),
        "test": slice(n_train + n_cal, samples),
    }


def check(samples: int, seed: int, epochs: int) -> None:
    if not MIN_SAMPLES <= samples <= MAX_SAMPLES:
        raise SctkError(
            f"--samples must lie between {MIN_SAMPLES} and {MAX_SAMPLES}; got {samples}."
        )
    if not 1 <= epochs <= MAX_EPOCHS:
        raise SctkError(f"--epochs must lie between 1 and {MAX_EPOCHS}; got {epochs}.")
    if not 0 <= seed < 2**32:
        raise SctkError(f"--seed must be a non-negative integer below 2**32; got {seed}.")


def physics_only(S_cal, Y_cal, S_test, Y_test, alpha: float = ALPHA) -> dict[str, float]:
    """The physics prediction alone with plain split-conformal intervals."""
    from sctk.uq.conformal import ConformalCalibrator

    cal = ConformalCalibrator(normalized=False).fit(Y_cal.reshape(-1), S_cal.reshape(-1))
    lower, upper = cal.interval(S_test, None, alpha)
    return {
        "coverage": metrics.coverage(Y_test, lower, upper),
        "mean_width": metrics.mean_width(lower, upper),
        "interval_score": metrics.interval_score(Y_test, lower, upper, alpha),
        "rmse": float(np.sqrt(np.mean((S_test - Y_test) ** 2))),
    }


def run(
    session: Session,
    home: Path,
    samples: int = 200,
    seed: int = 0,
    epochs: int = 20,
    width: int = 32,
    owner: str = "demo",
    progress=None,
) -> dict[str, Any]:
    """Generate, train, calibrate, register and evaluate; a summary of what was done."""
    from sctk.uq import evaluation, field_training, registry
    from sctk.uq.flow import FlowProblem

    check(samples, seed, epochs)
    say = progress or (lambda fraction, message: None)
    started = time.perf_counter()
    problem = FlowProblem()
    parts = _parts(samples)
    base = f"flow-demo-s{seed}-n{samples}"
    generator = {
        "function": "sctk.uq.flow:make_pairs",
        "samples": samples,
        "seed": seed,
        "problem": asdict(problem),
    }
    stored, X, S, Y = _flows(session, home, problem, parts, base, generator, owner, say)
    generated = time.perf_counter()
    tr, ca, te = parts["train"], parts["calibration"], parts["test"]
    # the very path `sctk uq train --config` takes with kind = "field", physics = "coarse"
    model = field_training.make_model(
        {
            "physics": PHYSICS,
            "dx": 2 * math.pi / problem.n,
            "width": width,
            "epochs": epochs,
            "seed": seed,
        }
    )
    field_training.fit(model, X[tr], Y[tr], X[ca], Y[ca], say, start=0.1, end=0.9)
    trained = time.perf_counter()
    out = model.predict_interval(X[te], alpha=ALPHA)
    scores = {
        **evaluation.calibration_metrics(Y[te], out, Y[ca].size),
        "n_train_fields": int(Y[tr].shape[0]),
        "n_calibration_fields": int(Y[ca].shape[0]),
        "n_test_fields": int(Y[te].shape[0]),
        "measured_on": "test",
        "epochs_run": len(model.history_),
    }
    calibration = {"dataset": stored["calibration"].name, "sha256": stored["calibration"].sha256}
    lineage = field_training.lineage(stored["train"], calibration, X, fields.INPUT, fields.TARGET)
    lineage["generator"] = generator
    row = registry.save(
        session, home, model, MODEL_NAME, metrics=scores, lineage=lineage, owner=owner
    )
    say(0.95, f"stored model '{row.name}' v{row.version}; writing its report")
    evaluated = evaluation.evaluate(session, home, row.id, stored["test"].name, ALPHA)
    baseline = physics_only(S[ca], Y[ca], S[te], Y[te])
    hybrid_rmse = float(np.sqrt(np.mean((out["mean"] - Y[te]) ** 2)))
    say(1.0, "done")
    finished = time.perf_counter()
    return {
        "model": {"id": row.id, "name": row.name, "version": row.version},
        "datasets": {part: ds.name for part, ds in stored.items()},
        "alpha": ALPHA,
        "hybrid": {
            "coverage": evaluated["coverage"],
            "mean_width": evaluated["mean_width"],
            "median_width": float(np.median(out["upper"] - out["lower"])),
            "interval_score": evaluated["interval_score"],
            "coverage_noisiest": evaluated["coverage_noisiest"],
            "rmse": hybrid_rmse,
            "alpha_physics_share": float(model.alpha_),
        },
        "physics_only": baseline,
        "psi": evaluated["psi"],
        "report": evaluated["report"],
        "seconds": {
            "generate": round(generated - started, 2),
            "train": round(trained - generated, 2),
            "total": round(finished - started, 2),
        },
    }


def _flows(session: Session, home: Path, problem, parts, base: str, generator, owner, say):
    """The demo's datasets (by part) and its flows X, coarse physics S and truths Y: read back
    when an earlier run with the same generator stored them, else solved and stored."""
    from sctk.pipeline import arrays, store
    from sctk.uq.flow import coarse_physics, make_pairs

    samples = generator["samples"]
    stored = _stored_parts(session, home, base, parts, generator)
    if stored is not None:  # a rerun: the seeded flows are stored and verified already
        say(0.0, f"reading the {samples} stored flows")
        shape = (2, problem.n, problem.n)
        X = np.concatenate(
            [fields.from_frame(store.read(home, d), "x", shape, d.name) for d in stored.values()]
        )
        Y = np.concatenate(
            [fields.from_frame(store.read(home, d), "y", shape, d.name) for d in stored.values()]
        )
        return stored, X, coarse_physics(X, problem), Y
    say(0.0, f"solving {samples} seeded flows ({problem.fine}^2 truth, {problem.n}^2 physics)")
    X, S, Y = make_pairs(samples, generator["seed"], problem)
    per_row = [int(v) for v in X.shape[1:]]
    shapes = arrays.entry({fields.INPUT: per_row, fields.TARGET: per_row})
    outputs = [
        store.Output(
            f"{base}-{part}",
            fields.to_frame(x=X[cut], y=Y[cut]),
            "parquet",
            {
                "generator": generator,
                "part": part,
                arrays.FIELDS: shapes,
                "versions": store.versions(),
            },
        )
        for part, cut in parts.items()
    ]
    written = store.store(session, home, outputs, "uq.demo", owner)
    stored = {part: w.dataset for part, w in zip(parts, written, strict=True)}
    return stored, X, S, Y


def _stored_parts(session: Session, home: Path, base: str, parts, generator) -> dict | None:
    """The datasets of an earlier run with the same generator, when all are intact."""
    from sctk.pipeline import store

    found = {part: store.find(session, f"{base}-{part}") for part in parts}
    for ds in found.values():
        if ds is None or (ds.lineage or {}).get("generator") != generator:
            return None
        if store.verify(home, ds).status != "ok":
            return None
    return found
