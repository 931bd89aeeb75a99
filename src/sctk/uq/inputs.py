"""The data a registered model is asked about: a stored dataset, or (field models) an .npz.

`load_inputs` turns the user's `--data` into the model's inputs X and, when asked, the
targets y, checking them against the model (columns, shapes, finite values) with one
sentence for whatever does not fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy.orm import Session

from sctk.storage.models import UqModel


@dataclass
class Inputs:
    X: np.ndarray
    y: np.ndarray | None
    what: str  # "Dataset 'runs'" or "flow.npz": how sentences name the data
    source: dict[str, Any]  # lineage: the dataset or file and its sha256
    frame: pd.DataFrame | None = None


def is_file(data: str) -> bool:
    return data.lower().endswith(".npz")


def load_inputs(
    session: Session, home: Path, row: UqModel, data: str, need_target: bool = False
) -> Inputs:
    """X (and y when NEED_TARGET) for model ROW from DATA: a dataset's name or an .npz file
    (which only a kind that reads files takes)."""
    from sctk.pipeline import store
    from sctk.uq.model_kind import kind_of

    kind = kind_of(row)
    if is_file(data):
        path = Path(data).expanduser()
        X, y = kind.read_file(row, path, need_target)
        source = {"file": str(path.resolve()), "sha256": store.file_sha256(path)}
        return Inputs(X, y, path.name, source)
    ds = store.get(session, data)
    frame = store.read(home, ds)
    what = f"Dataset '{ds.name}'"
    source = {"dataset": ds.name, "sha256": ds.sha256}
    X = kind.inputs(row, frame, what)
    y = kind.targets(row, frame, what) if need_target else None
    return Inputs(X, y, what, source, frame)
