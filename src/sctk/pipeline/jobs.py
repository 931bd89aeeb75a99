"""The `pipeline.run` job kind: service.run_pipeline in a worker process.

Parameters (JSON)::

    {"inputs": ["runs-7", "runs-8"],      # dataset names, stacked in this order
     "pipeline": "<the pipeline file's TOML text>",
     "pipeline_path": "/abs/path/clean.toml",   # recorded in the lineage
     "output": "run7",                    # optional base name of the outputs
     "format": "parquet"}                 # optional: parquet or npz

The outputs are recorded as the datasets of whoever submitted the job (ctx.owner).

The pipeline travels as text so that a worker on another machine (Dask) needs no access
to the submitter's files; its sha256 is computed from that text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sctk.errors import SctkError
from sctk.jobs.kinds import JobContext, job_kind

KIND = "pipeline.run"


def job_params(
    inputs: list[str],
    pipeline_text: str,
    pipeline_path: str,
    output: str | None = None,
    fmt: str | None = None,
) -> dict[str, Any]:
    """The parameters of a pipeline.run job, as the submitter builds them."""
    params: dict[str, Any] = {
        "inputs": list(inputs),
        "pipeline": pipeline_text,
        "pipeline_path": pipeline_path,
    }
    if output:
        params["output"] = output
    if fmt:
        params["format"] = fmt
    return params


def _params(params: dict[str, Any]) -> tuple[list[str], str, str]:
    inputs = params.get("inputs")
    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, list) or not inputs or not all(isinstance(i, str) for i in inputs):
        raise SctkError("pipeline.run needs 'inputs': a list of dataset names.")
    text = params.get("pipeline")
    if not isinstance(text, str) or not text.strip():
        raise SctkError("pipeline.run needs 'pipeline': the pipeline file's TOML text.")
    path = params.get("pipeline_path") or "pipeline.toml"
    return inputs, text, str(path)


@job_kind(KIND, "Run a pipeline file over datasets and store its outputs.", "data.write")
def pipeline_run(params: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    from sctk.jobs.child_engine import runtime_for
    from sctk.pipeline.ingest import Batching
    from sctk.pipeline.limits import DataLimits
    from sctk.pipeline.service import run_pipeline
    from sctk.pipeline.transforms import parse_pipeline

    inputs, text, path = _params(params)
    pipeline = parse_pipeline(text, path)
    home = Path(ctx.home)
    rt = runtime_for(ctx.home)  # the runtime of the process running the job
    settings = rt.settings
    with rt.session() as session:
        result = run_pipeline(
            session,
            home,
            inputs,
            pipeline,
            output=params.get("output"),
            fmt=params.get("format"),
            owner=ctx.owner,
            progress=ctx.progress,
            log_line=ctx.log,
            limits=DataLimits.of(settings.data),
            batching=Batching(settings.data.import_batch_rows, settings.data.partition_rows),
        )
        return result.to_dict()
