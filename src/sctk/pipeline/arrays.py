"""Array columns: a column holding one flattened array (a field) per row.

An .npz array of more than one dimension, [N, *shape], is stored as such a column: row i
holds array[i] flattened to numbers (a Parquet list column), and the dataset's lineage
records the per-row shape under "fields" -- {"columns": {name: shape}, "shape": the shape
all array columns share, if they do} -- so that a field model can fold the rows back. This is
the one path `sctk data import`, POST /api/v1/datasets and `sctk uq train --data FILE.npz`
take; pipelines carry the recorded shapes through to their outputs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from sctk.errors import SctkError

FIELDS = "fields"  # the lineage key
_KINDS = {
    "b": "true/false",
    "c": "complex",
    "U": "text",
    "S": "bytes",
    "M": "date/time",
    "m": "time-span",
    "V": "structured",
    "O": "Python object",
}


def to_frame(arrays: dict[str, np.ndarray], what: str) -> tuple[pd.DataFrame, dict[str, list]]:
    """ARRAYS (name -> array, one row per entry of the first dimension) as a frame, and the
    per-row shape of each array of more than one dimension; WHAT names the data in sentences.

    One-dimensional arrays are plain columns; the others become array columns of float64.
    """
    shapes: dict[str, list[int]] = {}
    for key, value in arrays.items():
        if value.ndim == 0:
            raise SctkError(
                f"{what}: array '{key}' is a single value, not a column; save one value per "
                "row (a one-dimensional array) or one array per row ([N, ...])."
            )
        if value.ndim == 1:
            continue
        if value.shape[0] == 0:
            raise SctkError(
                f"{what}: array '{key}' has no rows (shape {list(value.shape)}); there is "
                "nothing to import."
            )
        if value.dtype.kind not in "iuf":
            kind = _KINDS.get(value.dtype.kind, str(value.dtype))
            raise SctkError(
                f"{what}: array '{key}' of shape {list(value.shape)} holds {kind} values; "
                "an array of more than one dimension must hold numbers (integers or floats)."
            )
        if value.size == 0:
            raise SctkError(
                f"{what}: array '{key}' has shape {list(value.shape)}, so each row is empty; "
                "give every row at least one number."
            )
        shapes[key] = [int(v) for v in value.shape[1:]]
    check_lengths({k: int(v.shape[0]) for k, v in arrays.items()}, bool(shapes), what)
    columns: dict[str, Any] = {}
    for key, value in arrays.items():
        if key in shapes:
            columns[key] = list(np.asarray(value, dtype=np.float64).reshape(len(value), -1))
        else:
            columns[key] = value
    return pd.DataFrame(columns), shapes


def check_lengths(rows: dict[str, int], fields: bool, what: str) -> None:
    """Refuse arrays of different lengths (ROWS: name -> first dimension); FIELDS says some
    have more than one dimension, which the sentence then explains."""
    if len(set(rows.values())) > 1:
        shown = ", ".join(f"'{k}' {n}" for k, n in rows.items())
        if not fields:
            raise SctkError(
                f"{what}: the arrays have different lengths ({shown}); each array is a column "
                "and all must have one value per row."
            )
        raise SctkError(
            f"{what}: the arrays have different numbers of rows (first dimension: {shown}); "
            "each array is a column with one row per entry of its first dimension, so all "
            "must have the same number."
        )


def entry(shapes: dict[str, list], **extra: Any) -> dict[str, Any] | None:
    """The lineage's "fields" record of SHAPES (column -> per-row shape), or None if empty."""
    if not shapes:
        return None
    out: dict[str, Any] = {"columns": {k: [int(v) for v in s] for k, s in shapes.items()}}
    distinct = {tuple(s) for s in shapes.values()}
    if len(distinct) == 1:
        out["shape"] = list(distinct.pop())
    return {**out, **extra}


def recorded(lineage: dict[str, Any] | None, columns: Iterable[str]) -> dict[str, list]:
    """The per-row shapes LINEAGE records for COLUMNS (those it knows).

    Older records hold one "shape" for the columns "input" and "target" (or for all)."""
    info = (lineage or {}).get(FIELDS) or {}
    by_column = info.get("columns")
    if isinstance(by_column, dict):
        return {c: list(by_column[c]) for c in columns if c in by_column}
    shape = info.get("shape")
    if not shape:
        return {}
    named = [info[k] for k in ("input", "target") if info.get(k)]
    return {c: list(shape) for c in columns if not named or c in named}


def is_array_column(col: pd.Series) -> bool:
    """Whether COL holds an array (or list) per row rather than single values."""
    if col.dtype != object:
        return False
    first = col.first_valid_index()
    return first is not None and isinstance(col.loc[first], np.ndarray | list | tuple)


def array_columns(df: pd.DataFrame) -> list[str]:
    return [str(c) for c in df.columns if is_array_column(df[c])]


def stacked(name: str, col: pd.Series) -> np.ndarray:
    """An array column as one [N, values] float64 array (an .npz member), or one sentence."""
    try:
        rows = [np.asarray(v, dtype=np.float64).reshape(-1) for v in col]
        if rows and len({r.size for r in rows}) == 1 and rows[0].size:
            return np.stack(rows)
    except (TypeError, ValueError):
        pass
    raise SctkError(
        f"Column '{name}' holds arrays that are not all numbers of one non-zero length (or "
        "no rows at all), which .npz cannot hold; store the dataset as parquet instead."
    )


def carried(
    inputs: list[tuple[dict[str, Any] | None, pd.DataFrame]],
    records: list[dict[str, Any]],
    frame: pd.DataFrame,
) -> dict[str, list]:
    """The per-row shapes of FRAME's array columns, followed from the INPUTS (lineage, frame)
    through the pipeline steps RECORDS; a column whose inputs disagree is left out."""
    known: dict[str, list | None] = {}
    for lineage, df in inputs:
        for col, shape in recorded(lineage, array_columns(df)).items():
            known[col] = shape if known.get(col, shape) == shape else None
    for record in records:
        if record.get("op") == "rename":
            mapping = record.get("columns") or {}
            known = {mapping.get(c, c): s for c, s in known.items()}
        elif record.get("op") == "derive":
            known.pop(record.get("column"), None)
    wanted = set(array_columns(frame))
    return {c: s for c, s in known.items() if c in wanted and s is not None}
