"""CSV that a spreadsheet opens as data: no cell of it runs as a formula.

A text cell (or a column name) starting with `=`, `+`, `-` or `@` (or a tab or carriage
return, which some spreadsheets skip before one of those) is read by Excel, LibreOffice and
Google Sheets as a formula, which can fetch URLs or run commands when the file is opened.
Every CSV sctk writes for a user goes through `escape_frame` / `escape_cell`, which put a
single quote before such text, the escape those programs show as the text itself. Numbers
are left as they are: -1.5 is a value, not a formula.
"""

from __future__ import annotations

from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def escape_cell(value: Any) -> Any:
    """VALUE with a leading quote if it is text a spreadsheet would run as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def escape_frame(frame):
    """A copy of the DataFrame FRAME whose column names and text cells are escaped."""
    import pandas as pd

    out = frame.rename(columns=lambda c: escape_cell(str(c)))
    for i in range(out.shape[1]):
        series = out.iloc[:, i]  # by position: two names may now be equal
        if series.dtype == object or pd.api.types.is_string_dtype(series.dtype):
            out.iloc[:, i] = series.map(escape_cell, na_action="ignore")
    return out
