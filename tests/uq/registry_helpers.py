"""Shared pieces of the model registry tests: small CSV datasets and tiny, fast models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from sctk.pipeline.service import import_file
from sctk.storage.engine import make_engine, session_scope
from sctk.uq.flow import FlowProblem

# a small flow problem (16 x 16 grid) for the field model tests: seconds, not minutes
SMALL_FLOW = FlowProblem(n=16, fine=32, fine_steps=32)

TINY = {"epochs": 3, "hidden": [8], "patience": 2, "batch_size": 64}


def flip_byte(path: Path, offset: int = -20) -> None:
    """Change one byte of PATH in place, as damage or tampering on disk would."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def frame(n: int = 120, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a = rng.uniform(-2, 2, n)
    b = rng.uniform(-1, 1, n)
    y = np.sin(a) + 0.5 * b + rng.normal(0, 0.1, n)
    return pd.DataFrame({"a": a, "b": b, "label": ["p"] * n, "y": y})


def import_csv(settings, df: pd.DataFrame, name: str) -> str:
    """Import DF as a CSV file under dataset NAME, the way `sctk data import` does."""
    path = Path(settings.home) / "tmp" / f"{name}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)
    engine = make_engine(settings)
    try:
        with session_scope(engine) as session:
            import_file(session, settings.home, path, name=name)
    finally:
        engine.dispose()
    return name


def train_params(dataset: str = "runs", **extra) -> dict:
    # an explicit fraction: a held-out split (without one, small data is calibrated by CV+)
    params = {
        "dataset": dataset,
        "target": "y",
        "config": dict(TINY),
        "name": "drag",
        "calibration": 0.25,
    }
    params.update(extra)
    return params
