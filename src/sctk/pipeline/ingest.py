"""Import a local file of any size: read in bounded batches, stored as partitioned Parquet.

`sctk data import` reads the user's own file from disk, so memory, not the HTTP upload
limit, is what must not grow with it. The file is read twice, a batch of rows at a time:

1. the first pass checks every batch against the schema (counting violations over the
   whole file, a unique column across batches) and profiles each column's types;
2. the second pass puts each batch into the types decided over all of them
   (sctk.pipeline.settle) and appends it to a Parquet file cut into row groups of a fixed
   number of rows (store.write_partitions).

Nothing is stored unless both passes succeed. The stored bytes depend on the file and the
partition size only, not on the batch size: a file read in a thousand batches and the same
file read in one give the same SHA-256.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy.orm import Session

from sctk.errors import Conflict, InsufficientStorage, SctkError
from sctk.pipeline import readers, store
from sctk.pipeline.limits import TooLarge
from sctk.pipeline.schema import (
    Report,
    Schema,
    SchemaViolations,
    Violation,
    _coerce,
    _shown,
    validate,
)
from sctk.pipeline.settle import Profile, apply
from sctk.pipeline.store import Batching

log = logging.getLogger(__name__)
Progress = Callable[[float, str], None]


class _Validation:
    """A schema checked batch by batch, as `validate` checks a whole frame."""

    def __init__(self, schema: Schema, max_listed: int):
        self.schema = schema
        # uniqueness spans batches, so it is checked here with the values seen so far
        self.unique = [n for n, spec in schema.columns.items() if spec.unique]
        plain = {n: replace(spec, unique=False) for n, spec in schema.columns.items()}
        self.per_batch = replace(schema, columns=plain)
        self.max_listed = max_listed
        self.seen: dict[str, dict[Any, int]] = {n: {} for n in self.unique}
        self.report: Report | None = None
        self.listed: list[tuple[int, int, Violation]] = []
        self.total = 0
        self.rows = 0

    def add(self, df: pd.DataFrame) -> None:
        report = validate(df, self.per_batch, self.max_listed)
        order = {str(c): i for i, c in enumerate(df.columns)}
        if self.report is None:
            self.report = report  # whole-column problems are the same in every batch
            for v in report.violations:
                if v.row is None:
                    self.listed.append((-1, order.get(v.column, -1), v))
            self.total += sum(1 for v in report.violations if v.row is None)
        found = [v for v in report.violations if v.row is not None]
        whole = sum(1 for v in report.violations if v.row is None)
        self.total += report.total - whole
        for v in found:
            self._list(Violation(v.row + self.rows, v.column, v.problem), order)
        for name in self.unique:
            if name in df.columns:
                self._unique(name, df[name], order)
        self.rows += len(df)

    def _list(self, v: Violation, order: dict[str, int]) -> None:
        self.listed.append((v.row or 0, order.get(v.column, -1), v))

    def _unique(self, name: str, raw: pd.Series, order: dict[str, int]) -> None:
        values, bad, _why = _coerce(raw, self.schema.columns[name])
        valid = ~bad & raw.notna().to_numpy()
        seen = self.seen[name]
        for pos in np.flatnonzero(valid):
            value = values.iloc[pos]
            row = self.rows + int(pos) + 1
            first = seen.setdefault(value, row)
            if first != row:
                self.total += 1
                problem = f"{_shown(value)} repeats row {first}, and the column is unique"
                self._list(Violation(row, name, problem), order)

    def result(self) -> Report:
        assert self.report is not None
        self.listed.sort(key=lambda item: (item[0], item[1]))
        out = Report(
            rows=self.rows,
            violations=[v for _, _, v in self.listed[: self.max_listed]],
            total=self.total,
            extra_columns=self.report.extra_columns,
            extra_policy=self.report.extra_policy,
        )
        return out


def _check_space(home: Path, path: Path, size: int) -> None:
    """Refuse an import the data directory's disk cannot hold (the stored file is about as
    large as the source at most; compressed Parquet is usually smaller)."""
    directory = store.data_dir(home)
    free = shutil.disk_usage(directory).free
    if size > free:
        raise InsufficientStorage(
            f"No space left on the device holding {directory} for {path.name} ({size:,} "
            f"bytes, {free:,} free), so nothing was kept; free some space and try again."
        )


def import_local(
    session: Session,
    home: Path,
    path: Path,
    *,
    name: str | None = None,
    schema: Schema | None = None,
    owner: str = "system",
    max_bytes: int | None = None,
    max_violations: int = 20,
    batching: Batching = Batching(),
    progress: Progress | None = None,
):
    """Import the local file PATH as dataset NAME in bounded memory (see the module's note).

    MAX_BYTES (data.max_import_bytes) is the largest file taken; None takes any size the
    disk can hold. Returns service.ImportResult."""
    from sctk.pipeline.service import ImportResult, import_lineage

    report_progress = progress or (lambda _f, _m: None)
    filename = path.name
    name = store.check_name(name) if name else store.name_from_file(filename)
    if store.find(session, name) is not None:
        raise Conflict(
            f"A dataset named '{name}' already exists; choose another name with --name or "
            "delete it first."
        )
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise SctkError(f"The file {filename} does not exist; check the path.") from None
    if path.is_dir():
        raise SctkError(f"{filename} is a directory; name a file.")
    if max_bytes is not None and size > max_bytes:
        raise TooLarge(
            f"{filename} is {size} bytes, over the local import limit of {max_bytes} bytes "
            "(data.max_import_bytes)."
        )
    _check_space(home, path, size)
    text = schema.columns if schema else ()
    typed = set(schema.columns) if schema else set()

    def batches(text_columns) -> Iterator[readers.Table]:
        return readers.iter_batches(path, filename, text_columns, batching.batch_rows)

    # pass 1: the schema over every row, and each column's types
    profile = Profile(filename)
    check = _Validation(schema, max_violations) if schema else None
    shapes: dict[str, list] = {}
    rows = 0
    for table in batches(text):
        if check is not None:
            check.add(table.frame)
        profile.add(table.frame, typed)
        shapes = table.shapes or shapes
        rows += len(table.frame)
        report_progress(0.45 * _share(rows, size, table.frame), f"checked {rows:,} rows")
    report = check.result() if check else None
    if report is not None and not report.ok:
        raise SchemaViolations(report.summary(filename), report)
    targets = profile.targets(typed)
    columns = list(profile.columns)
    # CSV reads a column with any text as text throughout, as pandas does for a whole file
    as_text = set(text)
    if readers.file_format(filename) == "csv":
        as_text |= profile.text_wins() - typed

    # pass 2: each batch in the decided types, appended to the partitioned file
    def settled() -> Iterator[pd.DataFrame]:
        done = 0
        for table in batches(as_text):
            df = table.frame
            if schema is not None:
                df = validate(df, check.per_batch, 1).frame  # type: ignore[union-attr]
            df = apply(df, targets, columns)
            done += len(df)
            report_progress(0.45 + 0.5 * done / max(rows, 1), f"stored {done:,} of {rows:,} rows")
            yield df

    source_sha = store.file_sha256(path)
    written = store.write_partitions(home, name, settled(), batching.partition_rows)
    lineage = import_lineage(filename, source_sha, size, schema, report, shapes)
    lineage["partition_rows"] = batching.partition_rows
    output = store.Output(name, None, "parquet", lineage, written=written)
    try:
        [stored] = store.store(session, home, [output], "import", owner)
    finally:
        written.pending.discard()
    report_progress(1.0, f"stored {rows:,} rows")
    log.info("imported %s as dataset %s", filename, name, extra={"dataset": name})
    notes = report.notes() if report else []
    return ImportResult(stored.dataset, report, stored.unchanged, notes)


def _share(rows: int, size: int, frame: pd.DataFrame) -> float:
    """A rough fraction of the file read after ROWS rows: the first pass cannot know the total
    rows of a text file, so it estimates them from the bytes a row takes in memory."""
    if frame.empty or size <= 0:
        return 0.0
    per_row = max(float(frame.memory_usage(deep=False, index=False).sum()) / len(frame), 1.0)
    return min(rows * per_row / size, 1.0)
