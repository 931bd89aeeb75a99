"""How much decoding a user's data may build: rows, columns, values and bytes ([data]).

A file's size says little about what it decodes to: a 0.3 MB Parquet file of one repeated
value can hold 30 million rows, an .npz member can declare any shape. The readers check the
counts a file declares about itself (the Parquet footer, the .npy headers) before reading,
count as they go where a format declares nothing (CSV, JSON lines), and refuse with
TooLarge (HTTP 413) and one sentence naming the limit and its setting.
"""

from __future__ import annotations

from dataclasses import dataclass

from sctk.config import DataSettings
from sctk.errors import SctkError

# What pandas spends beside a value's own bytes: a Python object per text value, an ndarray
# object per row of an array column. Counted so that the bound is on memory, not on bytes.
OBJECT_OVERHEAD = 56
ARRAY_OVERHEAD = 112


class TooLarge(SctkError):
    http_status = 413
    title = "Request too large"


@dataclass(frozen=True)
class DataLimits:
    """The [data] bounds one decoding must stay within."""

    rows: int = DataSettings.model_fields["max_rows"].default
    columns: int = DataSettings.model_fields["max_columns"].default
    cells: int = DataSettings.model_fields["max_cells"].default
    decoded_bytes: int = DataSettings.model_fields["max_decoded_bytes"].default

    @classmethod
    def of(cls, data: DataSettings) -> DataLimits:
        """The limits the [data] settings DATA name."""
        return cls(data.max_rows, data.max_columns, data.max_cells, data.max_decoded_bytes)

    def check_columns(self, what: str, columns: int) -> None:
        if columns > self.columns:
            raise TooLarge(
                f"{what} has {columns:,} columns, over the limit of {self.columns:,} "
                "(data.max_columns); drop the columns you do not need."
            )

    def check_rows(self, what: str, rows: int, columns: int = 1, at_least: bool = False) -> None:
        """ROWS of COLUMNS against the row and cell limits (AT_LEAST: counting stopped there)."""
        if rows > self.rows:
            raise TooLarge(_sentence(what, "holds", rows, self.rows, "rows", "max_rows", at_least))
        self.check_cells(what, rows * columns, at_least)

    def check_cells(self, what: str, cells: int, at_least: bool = False) -> None:
        if cells > self.cells:
            raise TooLarge(
                _sentence(what, "holds", cells, self.cells, "values", "max_cells", at_least)
            )

    def check_bytes(self, what: str, nbytes: int, at_least: bool = False) -> None:
        if nbytes > self.decoded_bytes:
            raise TooLarge(
                _sentence(
                    what,
                    "decodes to",
                    nbytes,
                    self.decoded_bytes,
                    "bytes",
                    "max_decoded_bytes",
                    at_least,
                )
            )


def _sentence(
    what: str, verb: str, count: int, limit: int, unit: str, setting: str, at_least: bool
) -> str:
    # a reader that stopped counting at the limit knows only that there is more
    amount = (
        f"more than the limit of {limit:,} {unit}"
        if at_least
        else f"{count:,} {unit}, over the limit of {limit:,}"
    )
    return f"{what} {verb} {amount} (data.{setting}); split it into smaller files."
