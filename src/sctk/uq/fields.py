"""Velocity fields [B, C, H, W] in and out of datasets, .npz files and JSON.

A stored dataset holds fields one per row: each field column (the input `x`, the target `y`)
holds the field flattened to C*H*W numbers (a Parquet list column), and the model, which
knows its field shape, folds them back. An .npz file holds them as 4-D arrays under the same
names. JSON requests carry them as nested lists [B, C, H, W].
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sctk.errors import SctkError

INPUT = "x"
TARGET = "y"
MAX_VALUES = 4_000_000  # per request or file part: 8 bytes each, a few times over in memory


def to_frame(**columns: np.ndarray) -> pd.DataFrame:
    """A frame with one field per row in each named column (flattened float64 arrays)."""
    from sctk.pipeline import arrays

    return arrays.to_frame(columns, "The fields")[0]


def from_frame(frame: pd.DataFrame, column: str, shape: tuple[int, ...], what: str) -> np.ndarray:
    """FRAME's COLUMN as fields [B, *SHAPE], or one sentence saying what is wrong."""
    if column not in frame.columns:
        raise SctkError(
            f"{what} has no column '{column}'; a field model needs its fields there (one "
            f"flattened {'x'.join(map(str, shape))} field per row)."
        )
    if len(frame) == 0:
        raise SctkError(f"{what} has no rows; give at least one field.")
    size = int(np.prod(shape))
    out = np.empty((len(frame), size), dtype=np.float64)
    for i, cell in enumerate(frame[column]):
        try:
            values = np.asarray(cell, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            values = None
        if values is None or values.size != size:
            got = "no numbers" if values is None else f"{values.size} values"
            raise SctkError(
                f"{what}: row {i} of column '{column}' holds {got}, not a field of "
                f"{size} values (shape {list(shape)}) as the model needs."
            )
        out[i] = values
    return out.reshape(len(frame), *shape)


def from_json(value: Any, name: str = "fields") -> np.ndarray:
    """Nested lists [B, C, H, W] of numbers as an array, or one sentence."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise SctkError(
            f"'{name}' must be nested lists of numbers of shape [B, C, H, W], every inner list "
            "of the same length."
        ) from None
    if array.ndim != 4:
        raise SctkError(
            f"'{name}' must have 4 levels of nesting [B, C, H, W]; got shape {list(array.shape)}."
        )
    if array.size > MAX_VALUES:
        raise SctkError(
            f"'{name}' holds {array.size} values, more than the {MAX_VALUES} one request takes; "
            "send fewer fields per request."
        )
    return array


def read_npz(path: Path, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The arrays NAMES of the .npz file PATH (never unpickling anything)."""
    if path.suffix.lower() != ".npz":
        raise SctkError(f"{path.name} is not an .npz file; give a dataset's name or an .npz file.")
    from sctk.pipeline.limits import DataLimits
    from sctk.pipeline.readers import UnreadableFile, check_npz

    try:
        # the headers first: a member declaring a giant array is refused before numpy
        # allocates it
        check_npz(path, path.name, DataLimits())
    except FileNotFoundError:
        raise SctkError(f"The file {path} does not exist; check the path.") from None
    except UnreadableFile as exc:
        raise SctkError(exc.message) from None
    try:
        with np.load(path, allow_pickle=False) as archive:
            found = {n: np.asarray(archive[n]) for n in names if n in archive.files}
            present = list(archive.files)
    except FileNotFoundError:
        raise SctkError(f"The file {path} does not exist; check the path.") from None
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0].rstrip(".")
        raise SctkError(f"{path.name} is not a readable .npz file ({first}).") from None
    missing = [n for n in names if n not in found]
    if missing:
        raise SctkError(
            f"{path.name} has no array {', '.join(repr(m) for m in missing)}; it holds "
            f"{', '.join(present[:10]) or 'nothing'} (save the fields with numpy.savez(file, "
            f"{', '.join(f'{n}=...' for n in names)}))."
        )
    for n, array in found.items():
        if array.size > MAX_VALUES * 25:
            raise SctkError(f"{path.name}: array '{n}' is too large to predict at once; split it.")
    return found


def identity(velocity: np.ndarray) -> np.ndarray:
    """The physics "identity": S(x) = x, the input fields carried forward unchanged."""
    return np.asarray(velocity, dtype=np.float64)
