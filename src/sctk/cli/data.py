"""`sctk data import|list|show|lineage|verify|delete|transform`: datasets and pipelines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from sctk.cli.common import (
    console,
    db_session,
    err_console,
    json_option,
    operator,
    print_json,
    settings,
    table,
)
from sctk.cli.job_runner import run_inline, wait_for
from sctk.errors import SctkError

app = typer.Typer(help="Datasets: import, validate, transform, verify.", no_args_is_help=True)

FORMAT = typer.Option(None, "--format", help="Stored format: parquet (default) or npz.")


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(n)


@app.command("import")
def import_(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="A .csv, .parquet, .jsonl/.ndjson or .npz file."),
    name: str | None = typer.Option(None, "--name", help="Dataset name (default: file stem)."),
    schema: Path | None = typer.Option(None, "--schema", help="A schema TOML file to check."),
    fmt: str | None = FORMAT,
    as_json: bool = json_option(),
) -> None:
    """Import a file as a dataset; a file that breaks its schema is refused, naming each
    problem, and nothing is stored. The file is read in batches (data.import_batch_rows) and
    stored as Parquet in partitions (data.partition_rows), so its size is bounded by the
    disk, not by memory (data.max_import_bytes sets a limit; --format npz reads it whole).
    An .npz array [N, ...] of more than one dimension becomes a field column (one flattened
    array a row, its shape in the lineage) that `sctk uq train` with kind = "field" reads."""
    from sctk.cli.progress import progress
    from sctk.pipeline.ingest import Batching, import_local
    from sctk.pipeline.limits import DataLimits
    from sctk.pipeline.schema import SchemaViolations, load_schema
    from sctk.pipeline.service import import_file

    s = settings(ctx)
    checked = load_schema(schema) if schema else None
    with db_session(ctx) as session:
        try:
            if (fmt or "parquet") == "parquet":
                with progress(f"import {file.name}", err_console, enabled=not as_json) as update:
                    result = import_local(
                        session,
                        s.home,
                        file,
                        name=name,
                        schema=checked,
                        owner=operator(),
                        max_bytes=s.data.max_import_bytes,
                        max_violations=s.data.max_violations_listed,
                        batching=Batching(s.data.import_batch_rows, s.data.partition_rows),
                        progress=update,
                    )
            else:  # .npz cannot be written in parts: the file is read whole, within limits
                result = import_file(
                    session,
                    s.home,
                    file,
                    filename=file.name,
                    name=name,
                    schema=checked,
                    fmt=fmt or "parquet",
                    owner=operator(),
                    max_bytes=s.data.max_import_bytes,
                    max_violations=s.data.max_violations_listed,
                    limits=DataLimits.of(s.data),
                )
        except SchemaViolations as exc:
            if as_json:
                print_json({"ok": False, "error": exc.message, "report": exc.report.to_dict()})
            raise
    if as_json:
        print_json(result.to_dict())
        return
    ds = result.dataset
    console.print(
        f"imported {file.name} as dataset '{ds.name}': {ds.rows} rows, {len(ds.columns)} "
        f"columns, {ds.format}, {_size(ds.size_bytes)}, sha256 {ds.sha256[:12]}",
        highlight=False,
        markup=False,
    )
    for note in result.notes:
        console.print(f"note: {note}", highlight=False, markup=False, style="dim")


@app.command("list")
def list_(ctx: typer.Context, as_json: bool = json_option()) -> None:
    """List datasets."""
    from sctk.pipeline import store

    with db_session(ctx) as session:
        found = store.list_datasets(session)
    if as_json:
        print_json([store.as_dict(d, with_lineage=False) for d in found])
        return
    table(
        None,
        ["name", "origin", "format", "rows", "columns", "size", "sha256", "created"],
        [
            [
                d.name,
                d.origin,
                d.format,
                d.rows,
                len(d.columns),
                _size(d.size_bytes),
                d.sha256[:12],
                d.created_at.strftime("%Y-%m-%d %H:%M"),
            ]
            for d in found
        ],
    )


@app.command("show")
def show(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Dataset name."),
    as_json: bool = json_option(),
) -> None:
    """A dataset's file, hash, columns and types."""
    from sctk.pipeline import store

    with db_session(ctx) as session:
        ds = store.get(session, name)
    if as_json:
        print_json(store.as_dict(ds))
        return
    for label, value in (
        ("name", ds.name),
        ("origin", ds.origin),
        ("file", f"{ds.path} ({ds.format}, {_size(ds.size_bytes)})"),
        ("sha256", ds.sha256),
        ("rows", ds.rows),
        ("owner", ds.owner),
        ("created", ds.created_at.isoformat()),
    ):
        console.print(f"[bold]{label:>8}[/bold]  {value}", highlight=False)
    from sctk.pipeline.arrays import recorded

    shapes = recorded(ds.lineage, [c for c, t in ds.columns.items() if t == "object"])
    described = {c: f"one {'x'.join(map(str, shapes[c]))} array a row" for c in shapes}
    table(
        "columns",
        ["column", "dtype"],
        [[c, f"{t} ({described[c]})" if c in described else t] for c, t in ds.columns.items()],
    )


@app.command("export")
def export(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Dataset name."),
    out: Path = typer.Option(..., "--out", help="The file to write: .parquet or .csv."),
    as_json: bool = json_option(),
) -> None:
    """Write a dataset (predictions included) to a .parquet or .csv file, a partition at a
    time; a Parquet dataset exported as .parquet is its stored file, same sha256."""
    from sctk.pipeline import export as exporting
    from sctk.pipeline import store

    s = settings(ctx)
    exporting.format_of(out.name)
    with db_session(ctx) as session:
        ds = store.get(session, name)
    size = exporting.export(s.home, ds, out)
    if as_json:
        print_json({"name": ds.name, "rows": ds.rows, "out": str(out), "size_bytes": size})
        return
    console.print(
        f"exported dataset '{ds.name}' ({ds.rows} rows) to {out} ({_size(size)})",
        highlight=False,
        markup=False,
    )


def _tree_lines(node: dict[str, Any], depth: int = 0) -> list[str]:
    pad = "    " * depth + ("└── " if depth else "")
    what = node.get("note") or ""
    if node.get("origin") == "import":
        source = node.get("source") or {}
        line = (
            f"{node['name']}  imported from {source.get('file')} "
            f"(sha256 {str(source.get('sha256', ''))[:12]})"
        )
        if node.get("schema"):
            line += f", schema {node['schema']}"
    elif node.get("origin") == "pipeline":
        pipe = node.get("pipeline") or {}
        part = f" [{node['part']}]" if node.get("part") else ""
        line = (
            f"{node['name']}{part}  from pipeline {pipe.get('path')} "
            f"(sha256 {str(pipe.get('sha256', ''))[:12]})"
        )
    elif node.get("origin") == "prediction":
        model = node.get("model") or {}
        line = (
            f"{node['name']}  predicted by model '{model.get('name')}' v{model.get('version')} "
            f"(sha256 {str(model.get('sha256', ''))[:12]}) at alpha {node.get('alpha')}"
        )
    else:
        line = f"{node['name']}"
    if what:
        line += f"  ({what})"
    lines = [pad + line]
    for child in node.get("inputs", []):
        lines += _tree_lines(child, depth + 1)
    return lines


@app.command("lineage")
def lineage(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Dataset name."),
    as_json: bool = json_option(),
) -> None:
    """The chain of inputs of a dataset back to the files that were imported."""
    from sctk.pipeline import store

    with db_session(ctx) as session:
        tree = store.lineage(session, name)
    if as_json:
        print_json(tree)
        return
    for line in _tree_lines(tree):
        console.print(line, highlight=False, soft_wrap=True, markup=False)


@app.command("verify")
def verify(
    ctx: typer.Context,
    name: str | None = typer.Argument(None, help="One dataset (default: all)."),
    as_json: bool = json_option(),
) -> None:
    """Re-hash dataset files against their recorded sha256; exit 1 naming any that are
    missing or changed."""
    from sctk.pipeline import store

    s = settings(ctx)
    with db_session(ctx) as session:
        found = [store.get(session, name)] if name else store.list_datasets(session)
        checks = [store.verify(s.home, d) for d in found]
    if as_json:
        print_json([c.to_dict() for c in checks])
    else:
        for c in checks:
            style = "green" if c.status == "ok" else "red"
            console.print(
                f"[{style}]{c.status:>7}[/{style}]  {escape(c.name)}  {escape(c.detail)}",
                highlight=False,
            )
    failed = store.failures_sentence(checks)
    if failed:
        raise SctkError(failed)


@app.command("delete")
def delete(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Dataset name."),
    force: bool = typer.Option(
        False, "--force", help="Delete it even when other datasets were derived from it."
    ),
) -> None:
    """Delete a dataset's row and file."""
    from sctk.pipeline import store

    s = settings(ctx)
    with db_session(ctx) as session:
        ds = store.delete(session, s.home, name, force=force)
    console.print(f"deleted dataset '{ds.name}' and {ds.path}", highlight=False)


@app.command("transform")
def transform(
    ctx: typer.Context,
    datasets: list[str] = typer.Argument(..., help="Input dataset(s), stacked in this order."),
    pipeline: Path = typer.Option(..., "--pipeline", help="The pipeline TOML file."),
    output: str | None = typer.Option(
        None, "--output", help="Base name of the outputs (default: the file's, else INPUT-STEM)."
    ),
    fmt: str | None = FORMAT,
    wait: bool = typer.Option(False, "--wait", help="Wait for the job and show its progress."),
    inline: bool = typer.Option(
        False, "--inline", help="Run here and now instead of submitting a pipeline.run job."
    ),
    as_json: bool = json_option(),
) -> None:
    """Run a pipeline over datasets: submitted as a `pipeline.run` job (run by the workers of
    `sctk serve`), or run in this process with --inline."""
    from sctk.pipeline.jobs import KIND, job_params, pipeline_run
    from sctk.pipeline.service import check_inputs, output_names
    from sctk.pipeline.store import FORMATS
    from sctk.pipeline.transforms import load_pipeline

    s = settings(ctx)
    if fmt is not None and fmt not in FORMATS:
        raise SctkError(f"Unknown format '{fmt}'; use parquet or npz.")
    checked = load_pipeline(pipeline)
    # everything that can be checked before the data is read is checked here, so that a
    # mistake is one sentence now rather than a failed job later
    with db_session(ctx) as session:
        check_inputs(session, datasets)
        output_names(checked, datasets, output)
    params = job_params(datasets, checked.text, checked.source, output=output, fmt=fmt)
    if inline:
        _print_result(run_inline(s.home, "pipeline", pipeline_run, params, as_json), as_json)
        return
    from sctk.jobs import queue

    with db_session(ctx, with_bus=True) as session:
        job = queue.submit(session, KIND, params, owner=operator())
        job_id = job.id
    if not wait:
        if as_json:
            print_json({"job": job_id, "status": "queued"})
        else:
            console.print(
                f"submitted job {job_id} ({KIND}); 'sctk data transform ... --wait' or "
                f"'sctk jobs show {job_id}' follows it",
                highlight=False,
            )
        return
    view = wait_for(ctx, queue, job_id, as_json)
    if view["status"] != "succeeded":
        error = (view.get("error") or view.get("message") or view["status"]).strip()
        raise SctkError(f"Job {job_id} {view['status']}: {error.rstrip('.')}.")
    _print_result(view.get("result") or {}, as_json)


def _print_result(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(result)
        return
    unchanged = set(result.get("unchanged", []))
    for out in result.get("outputs", []):
        same = " (unchanged: identical to the stored one)" if out["name"] in unchanged else ""
        console.print(
            f"stored dataset '{out['name']}': {out['rows']} rows, {out['format']}, "
            f"sha256 {out['sha256'][:12]}{same}",
            highlight=False,
        )
