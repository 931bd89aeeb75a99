"""The data pipeline's two operations, shared by the CLI, the API and the job kind.

- `import_file`: read a file, check it against an optional schema, store it as a dataset.
- `run_pipeline`: run a pipeline file over one or more datasets and store its outputs.

Several inputs are stacked in the order given (their columns must match) and the pipeline
runs once over the result.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy.orm import Session

from sctk.errors import Conflict, SctkError
from sctk.pipeline import arrays, readers, store
from sctk.pipeline.limits import DataLimits, TooLarge
from sctk.pipeline.schema import Report, Schema, SchemaViolations, validate
from sctk.pipeline.settle import settle
from sctk.pipeline.sink import PartitionSink
from sctk.pipeline.transforms import SPLIT_PARTS, Pipeline
from sctk.pipeline.transforms import run_batches as run_steps

log = logging.getLogger(__name__)
Progress = Callable[[float, str], None]


def _now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class ImportResult:
    dataset: Any  # storage.models.Dataset
    report: Report | None
    unchanged: bool = False
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": store.as_dict(self.dataset),
            "report": self.report.to_dict() if self.report else None,
            "notes": self.notes,
        }


def import_file(
    session: Session,
    home: Path,
    path: Path,
    *,
    filename: str | None = None,
    name: str | None = None,
    schema: Schema | None = None,
    fmt: str = "parquet",
    owner: str = "system",
    max_bytes: int | None = None,
    max_violations: int = 20,
    limits: DataLimits | None = None,
) -> ImportResult:
    """Import the file at PATH (known to the user as FILENAME) as dataset NAME.

    Refused, with nothing stored, when the file is not what its extension says, cannot be
    parsed, holds more than LIMITS (default: the [data] defaults; TooLarge) or breaks SCHEMA
    (SchemaViolations carries the report).
    """
    filename = filename or path.name
    if fmt not in store.FORMATS:
        raise SctkError(f"Unknown format '{fmt}'; use parquet or npz.")
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
    if max_bytes is not None and size > max_bytes:
        raise TooLarge(
            f"{filename} is {size} bytes, over the import limit of {max_bytes} bytes "
            "(data.max_upload_bytes)."
        )
    source_sha = store.file_sha256(path)
    table = readers.read_file(
        path, filename, schema.columns if schema else (), limits or DataLimits()
    )
    df = table.frame
    report = None
    typed: set[str] = set()
    if schema is not None:
        report = validate(df, schema, max_violations)
        if not report.ok:
            raise SchemaViolations(report.summary(filename), report)
        df = report.frame
        typed = set(schema.columns)
    df = settle(df, filename, typed)
    lineage = import_lineage(filename, source_sha, size, schema, report, table.shapes)
    [stored] = store.store(session, home, [store.Output(name, df, fmt, lineage)], "import", owner)
    log.info("imported %s as dataset %s", filename, name, extra={"dataset": name})
    return ImportResult(stored.dataset, report, stored.unchanged, report.notes() if report else [])


def import_lineage(
    filename: str,
    source_sha: str,
    size: int,
    schema: Schema | None,
    report: Report | None,
    shapes: dict[str, list],
) -> dict[str, Any]:
    """The lineage of a dataset imported from FILENAME (its sha256 and size)."""
    lineage = {
        "origin": "import",
        "source": {
            "file": filename,
            "format": readers.file_format(filename),
            "sha256": source_sha,
            "size_bytes": size,
        },
        "schema": schema.to_dict() if schema else None,
        "notes": report.notes() if report else [],
        "inputs": [],
        "versions": store.versions(),
        "created_at": _now(),
    }
    if shapes:
        lineage[arrays.FIELDS] = arrays.entry(shapes)
    return lineage


def schema_of(session: Session, name: str) -> Schema:
    """The schema a dataset was imported with, to check another file the same way."""
    from sctk.pipeline.schema import schema_from_dict

    ds = store.get(session, name)
    recorded = (ds.lineage or {}).get("schema")
    if not recorded:
        raise SctkError(f"Dataset '{name}' was imported without a schema; name another one.")
    return schema_from_dict(recorded)


# --- pipelines ------------------------------------------------------------------------------


@dataclass
class RunResult:
    outputs: list[Any]  # Dataset rows
    unchanged: list[str]
    steps: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "outputs": [store.as_dict(d, with_lineage=False) for d in self.outputs],
            "unchanged": self.unchanged,
            "steps": self.steps,
        }


def output_names(pipeline: Pipeline, inputs: list[str], output: str | None) -> list[str]:
    """The names the run will store: BASE, or BASE-train, BASE-calibration, BASE-test."""
    stem = Path(pipeline.source).stem or "pipeline"
    base = output or pipeline.output or f"{inputs[0]}-{stem}"
    names = [f"{base}-{part}" for part in SPLIT_PARTS] if pipeline.splits else [base]
    for name in names:
        store.check_name(name)
    return names


def check_inputs(session: Session, inputs: list[str]) -> list[Any]:
    if not inputs:
        raise SctkError("Name at least one input dataset.")
    if len(set(inputs)) != len(inputs):
        raise SctkError("An input dataset is named twice; name each once.")
    return [store.get(session, n) for n in inputs]


def run_pipeline(
    session: Session,
    home: Path,
    inputs: list[str],
    pipeline: Pipeline,
    *,
    output: str | None = None,
    fmt: str | None = None,
    owner: str = "system",
    progress: Progress | None = None,
    log_line: Callable[[str], None] | None = None,
    limits: DataLimits | None = None,
    batching: store.Batching | None = None,
) -> RunResult:
    """Run PIPELINE over the INPUTS datasets (stacked in order) and store the outputs.

    The inputs are read BATCHING.batch_rows rows at a time (once more for each normalise
    step, to fit it first) and Parquet outputs written in partitions of
    BATCHING.partition_rows rows as they come, so memory holds about a batch and a
    partition whatever the size of the data; the stored bytes do not depend on the batch
    size. An .npz output is built whole (its format cannot be written in parts). An
    expression building a value over LIMITS' decoded bytes on one batch is refused."""
    report = progress or (lambda _f, _m: None)
    say = log_line or (lambda _l: None)
    batching = batching or store.Batching()
    fmt = fmt or pipeline.format or "parquet"
    if fmt not in store.FORMATS:
        raise SctkError(f"Unknown format '{fmt}'; use parquet or npz.")
    datasets = check_inputs(session, inputs)
    names = output_names(pipeline, inputs, output)
    for ds in datasets:
        check = store.verify(home, ds)
        if check.status != "ok":
            raise SctkError(
                f"Input dataset '{ds.name}' failed verification ({check.detail}); restore it "
                "before using it."
            )
        say(f"read {ds.name}: {ds.rows} rows, sha256 {ds.sha256[:12]}")
    heads = [_head(home, ds) for ds in datasets]
    first = list(heads[0].columns)
    for ds, head in zip(datasets[1:], heads[1:], strict=True):
        if list(head.columns) != first:
            raise SctkError(
                f"Input dataset '{ds.name}' has the columns {list(map(str, head.columns))}, "
                f"not {list(map(str, first))} like '{datasets[0].name}'; inputs are stacked and "
                "must have the same columns."
            )
    # stacked inputs take the types their concatenation would give them
    common = pd.concat(heads, ignore_index=True).dtypes if len(heads) > 1 else None

    def batches() -> Iterator[pd.DataFrame]:
        for ds in datasets:
            for frame in store.iter_frames(home, ds, batching.batch_rows):
                if common is not None:
                    wrong = {c: t for c, t in common.items() if frame[c].dtype != t}
                    frame = frame.astype(wrong) if wrong else frame
                yield frame

    parts = [""] if not pipeline.splits else list(SPLIT_PARTS)
    sinks: dict[str, PartitionSink] = {}
    pieces: dict[str, list[pd.DataFrame]] = {part: [] for part in parts}
    firsts: dict[str, pd.DataFrame] = {}
    if fmt == "parquet":
        sinks = {
            part: PartitionSink(home, name, batching.partition_rows)
            for part, name in zip(parts, names, strict=True)
        }

    def emit(part: str, frame: pd.DataFrame) -> None:
        if part not in firsts or (not len(firsts[part]) and len(frame)):
            firsts[part] = frame.head(1)  # what the array shapes are followed on
        if part in sinks:
            sinks[part].add(frame)
        else:
            pieces[part].append(frame)

    written: dict[str, store.Written] = {}
    try:
        records = run_steps(
            pipeline,
            batches,
            emit,
            rows=sum(ds.rows for ds in datasets),
            progress=lambda f, m: report(0.95 * f, m),
            max_bytes=(limits or DataLimits()).decoded_bytes,
        )
        for record in records:
            say(f"{record['op']}: " + ", ".join(f"{k}={v}" for k, v in record.items() if k != "op"))
        common_lineage = {
            "origin": "pipeline",
            "inputs": [{"name": d.name, "sha256": d.sha256, "rows": d.rows} for d in datasets],
            "pipeline": pipeline.to_dict(),
            "steps": records,
            "versions": store.versions(),
            "created_at": _now(),
        }
        if sinks:
            common_lineage["partition_rows"] = batching.partition_rows
        to_store = []
        sources = [(d.lineage, h) for d, h in zip(datasets, heads, strict=True)]
        report(0.95, "storing outputs")
        for name, part in zip(names, parts, strict=True):
            lineage = {**common_lineage, "part": part or None}
            shapes = arrays.carried(sources, records, firsts.get(part, pd.DataFrame()))
            if shapes:
                lineage[arrays.FIELDS] = arrays.entry(shapes)
            if part in sinks:
                written[part] = sinks[part].close()
                to_store.append(store.Output(name, None, fmt, lineage, written=written[part]))
            else:
                chunks = [f for f in pieces[part] if len(f)] or pieces[part][:1]
                frame = pd.concat(chunks, ignore_index=True)
                to_store.append(store.Output(name, frame, fmt, lineage))
        stored = store.store(session, home, to_store, "pipeline", owner)
    finally:
        for sink in sinks.values():
            sink.discard()
        for w in written.values():
            w.pending.discard()
    report(1.0, "stored " + ", ".join(names))
    return RunResult(
        [s.dataset for s in stored],
        [s.dataset.name for s in stored if s.unchanged],
        records,
    )


def _head(home: Path, ds: Any) -> pd.DataFrame:
    """The first rows of DS: its columns and their types, read without the rest."""
    frames = store.iter_frames(home, ds, 64)
    try:
        return next(frames)
    finally:
        frames.close()  # type: ignore[attr-defined]
