"""A dataset file written a batch at a time as batches are handed to it (pushed), where
store.write_partitions pulls them from one iterator: a pipeline's split feeds three outputs
from one pass over its input.

The rows are cut again into row groups of a fixed number of rows (as store.row_groups
does), so that the bytes depend on the rows alone and not on the batches they came in.
Memory holds about one row group per open sink.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from sctk import crashpoints
from sctk.errors import SctkError
from sctk.fsutil import make_temp, space_errors
from sctk.pipeline import store


class PartitionSink:
    """Parquet rows for dataset NAME, appended with add() and finished with close()."""

    def __init__(self, home: Path, name: str, partition_rows: int = store.PARTITION_ROWS):
        if partition_rows < 1:
            raise SctkError(f"A partition holds at least one row, not {partition_rows}.")
        self.home = home
        self.name = name
        self.rows_per_group = partition_rows
        self.directory = store.data_dir(home)
        self.tmp: Path | None = None
        self._fh: Any = None
        self._writer: Any = None
        self._schema: Any = None
        self._empty: pd.DataFrame | None = None  # the first frame's columns, for an empty file
        self._held: list[Any] = []
        self._held_rows = 0
        self.rows = 0

    def add(self, frame: pd.DataFrame) -> None:
        """Append FRAME's rows; a frame of no rows adds nothing but its columns' types."""
        if self._empty is None:
            self._empty = frame.iloc[:0]
        if not len(frame):
            return
        if self._schema is None:
            # from the first rows seen: an empty frame's object columns have no type yet
            self._schema = store._arrow_schema(frame)
        self._held.append(store._arrow_table(frame, self._schema))
        self._held_rows += len(frame)
        self.rows += len(frame)
        if self._held_rows >= self.rows_per_group:
            self._flush(whole_groups_only=True)

    def _open(self, schema: Any) -> None:
        import pyarrow.parquet as pq

        with space_errors(self.directory, f"dataset {self.name}"):
            fd, tmp = make_temp(self.directory, self.name)
        self.tmp = Path(tmp)
        self._fh = os.fdopen(fd, "wb")
        self._writer = pq.ParquetWriter(self._fh, schema, **store.PARQUET_OPTIONS)

    def _flush(self, whole_groups_only: bool) -> None:
        import pyarrow as pa

        if not self._held:
            return
        whole = pa.concat_tables(self._held)
        if self._writer is None:
            self._open(whole.schema)
        size = self.rows_per_group
        with space_errors(self.directory, f"dataset {self.name}"):
            while whole.num_rows >= size or (not whole_groups_only and whole.num_rows):
                part = whole.slice(0, size).combine_chunks()
                whole = whole.slice(part.num_rows)
                self._writer.write_table(part, row_group_size=size)
        self._held = [whole] if whole.num_rows else []
        self._held_rows = whole.num_rows

    def close(self) -> store.Written:
        """Write what is held and finish the file: fsynced, hashed, waiting for its row."""
        try:
            self._flush(whole_groups_only=False)
            if self._writer is None:  # no rows at all: a file of the columns alone
                empty = self._empty if self._empty is not None else pd.DataFrame()
                self._open(store._arrow_schema(empty))
            columns = store.column_types(self._empty if self._empty is not None else pd.DataFrame())
            with space_errors(self.directory, f"dataset {self.name}"):
                self._writer.close()
                self._fh.flush()
                os.fsync(self._fh.fileno())
                self._fh.close()
            crashpoints.reached("import.written")
            assert self.tmp is not None
            os.chmod(self.tmp, 0o640)
            pending = store.Pending(
                self.tmp,
                self.directory / f"{self.name}.parquet",
                store.file_sha256(self.tmp),
                self.tmp.stat().st_size,
            )
            return store.Written(pending, self.rows, columns)
        except BaseException:
            self.discard()
            raise

    def discard(self) -> None:
        """Drop the temporary file (a run that failed, or whose rows were stored)."""
        if self._fh is not None and not self._fh.closed:
            try:
                if self._writer is not None:
                    self._writer.close()
            except Exception:  # already failing; the file goes anyway
                pass
            self._fh.close()
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)
