"""One type per column, decided over every batch of a file before any batch is stored.

A file read whole gives pandas one look at each column; a file read in batches gives it one
look per batch, and the looks can disagree (a column of whole numbers gains a missing value
in batch 7 and becomes float there; a JSON-lines column holds true/false in one batch and
nothing in the next). A `Profile` gathers what each batch showed, and `targets` decides the
one type each column is stored in, the type the whole file would have had, so that the
stored bytes do not depend on the batch size. A column that mixes numbers, text or
true/false is refused with one sentence, as it is for a file read whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from sctk.pipeline import arrays
from sctk.pipeline.readers import UnreadableFile


def _category(s: pd.Series) -> str:
    """What a batch's column holds, by its dtype: int, float, bool, text, object, array, ..."""
    if arrays.is_array_column(s):
        return "array"
    if pd.api.types.is_bool_dtype(s):
        return "bool"
    if pd.api.types.is_integer_dtype(s):
        return "int"
    if pd.api.types.is_float_dtype(s):
        return "float"
    if s.dtype == object:
        return "object"
    if pd.api.types.is_string_dtype(s):
        return "text"
    return f"other:{s.dtype}"


_KIND_OF_CATEGORY = {"int": "number", "float": "number", "bool": "true/false", "text": "text"}


@dataclass
class _Column:
    first_dtype: object = None
    categories: set[str] = field(default_factory=set)  # of batches with a value in the column
    kinds: set[str] = field(default_factory=set)  # number / text / true/false seen
    nulls: bool = False
    fractions: bool = False  # a number that is not whole was seen (or a float column)


@dataclass
class Profile:
    """What the batches of one file showed of each column (columns in order of appearance)."""

    name: str
    columns: dict[str, _Column] = field(default_factory=dict)

    def add(self, df: pd.DataFrame, skip: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        for col in df.columns:
            info = self.columns.setdefault(str(col), _Column(df[col].dtype))
            if col in skip:
                continue
            s = df[col]
            present = s.dropna()
            if len(present) < len(s):
                info.nulls = True
            if present.empty:
                continue
            category = _category(s)
            info.categories.add(category)
            if category == "object":
                for value in present:
                    if isinstance(value, str):
                        info.kinds.add("text")
                    elif isinstance(value, bool):
                        info.kinds.add("true/false")
                    else:
                        info.kinds.add("number")
                        if isinstance(value, float):  # 1.0 too: pandas keeps it a float
                            info.fractions = True
            elif category in _KIND_OF_CATEGORY:
                info.kinds.add(_KIND_OF_CATEGORY[category])
                if category == "float":
                    info.fractions = True

    def text_wins(self) -> set[str]:
        """Columns that hold text somewhere: CSV reads them as text throughout, as pandas
        does for a whole file (a number there is text like the rest)."""
        return {c for c, info in self.columns.items() if "text" in info.kinds}

    def targets(self, skip: set[str] = frozenset()) -> dict[str, str]:  # type: ignore[assignment]
        """The dtype each column is stored in (columns left as read are not named)."""
        out: dict[str, str] = {}
        for col, info in self.columns.items():
            if col in skip or not info.categories or "array" in info.categories:
                continue
            if len(info.kinds) > 1:
                raise UnreadableFile(
                    f"{self.name}: column '{col}' mixes {' and '.join(sorted(info.kinds))}; "
                    'declare its type in a schema (e.g. dtype = "str") or clean the file.'
                )
            plain = info.categories - {"object"}
            if len(plain) > 1 and not plain <= {"int", "float"}:
                shown = " and ".join(sorted(plain))
                raise UnreadableFile(
                    f"{self.name}: column '{col}' holds {shown} values in different rows; "
                    "declare its type in a schema or clean the file."
                )
            kind = next(iter(info.kinds), None)
            if kind == "text":
                out[col] = "str"
            elif kind == "true/false":
                if info.nulls or "object" in info.categories:
                    out[col] = "boolean"
            elif kind == "number":
                # a column of one numeric dtype is left as read (float32 stays float32)
                if info.categories == {"float"} or (info.categories == {"int"} and not info.nulls):
                    continue
                out[col] = "float64" if info.fractions or info.nulls else "int64"
        return out


def apply(
    df: pd.DataFrame, targets: dict[str, str], columns: list[str] | None = None
) -> pd.DataFrame:
    """DF with its COLUMNS (in that order, missing ones empty) in the TARGETS' dtypes."""
    if columns is not None and list(df.columns) != columns:
        df = df.reindex(columns=columns)
    for col, dtype in targets.items():
        if col not in df.columns:
            continue
        if dtype in ("float64", "int64"):
            df[col] = pd.to_numeric(df[col]).astype(dtype)
        else:
            df[col] = df[col].astype(dtype)
    return df


def settle(df: pd.DataFrame, name: str, skip: set[str]) -> pd.DataFrame:
    """DF (a whole file) with each column not in SKIP in one type; see the module's note."""
    profile = Profile(name)
    profile.add(df, skip)
    return apply(df, profile.targets(skip))
