"""/api/v1/datasets: list, show, lineage, upload (import), verify and delete datasets."""

from __future__ import annotations

import os
from typing import Any

from fastapi import APIRouter, Path, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from sctk.api.deps import SessionDep, require
from sctk.api.errors import problem
from sctk.errors import SctkError
from sctk.pipeline import export, service, store
from sctk.pipeline.limits import DataLimits
from sctk.pipeline.schema import SchemaViolations, parse_schema
from sctk.security.uploads import sanitise_filename

router = APIRouter(tags=["datasets"])

NAME = Path(max_length=120, description="Dataset name.")


class DatasetOut(BaseModel):
    name: str
    origin: str
    path: str
    format: str
    sha256: str
    size_bytes: int
    rows: int
    columns: dict[str, str]
    owner: str
    created_at: str | None
    lineage: dict[str, Any] | None = None


class ImportOut(BaseModel):
    dataset: DatasetOut
    report: dict[str, Any] | None
    notes: list[str]


class VerifyOut(BaseModel):
    name: str
    path: str
    status: str  # ok / missing / changed
    detail: str


@router.get("/datasets", response_model=list[DatasetOut], summary="Datasets (without lineage).")
def list_datasets(session: SessionDep, _user=require("read")) -> list[DatasetOut]:
    found = store.list_datasets(session)
    return [DatasetOut(**store.as_dict(d, with_lineage=False)) for d in found]


@router.get("/datasets/{name}", response_model=DatasetOut, summary="One dataset, with lineage.")
def show_dataset(session: SessionDep, _user=require("read"), name: str = NAME) -> DatasetOut:
    return DatasetOut(**store.as_dict(store.get(session, name)))


@router.get(
    "/datasets/{name}/lineage",
    summary="The chain of inputs of a dataset back to imported files.",
)
def dataset_lineage(session: SessionDep, _user=require("read"), name: str = NAME) -> dict[str, Any]:
    return store.lineage(session, name)


@router.get(
    "/datasets/{name}/download",
    summary="A dataset as a Parquet or CSV file, streamed a partition at a time.",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/vnd.apache.parquet": {}, "text/csv": {}}}},
)
def download_dataset(
    request: Request,
    session: SessionDep,
    _user=require("read"),
    name: str = NAME,
    fmt: str = Query("parquet", alias="format", pattern="^(parquet|csv)$"),
) -> StreamingResponse:
    home = request.app.state.settings.home
    ds = store.get(session, name)
    export.check_readable(home, ds)
    media = "text/csv; charset=utf-8" if fmt == "csv" else "application/vnd.apache.parquet"
    return StreamingResponse(
        export.chunks(home, ds, fmt),
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="{ds.name}.{fmt}"'},
    )


_CHUNK = 1024 * 1024


@router.post(
    "/datasets",
    response_model=ImportOut,
    status_code=status.HTTP_201_CREATED,
    summary="Upload a file and import it as a dataset.",
    description=(
        "The request body is the file itself, sent as is (any Content-Type, e.g. "
        "application/octet-stream); `filename` names it, and its extension (.csv, .parquet, "
        ".jsonl, .ndjson, .npz) chooses the reader; an .npz array [N, ...] of more than one "
        "dimension becomes a field column (one flattened array a row, its shape recorded in "
        'the lineage under `fields`), which a field model (kind "field") trains on. The '
        "body is streamed to a temporary file and may be at most data.max_upload_bytes (413 "
        "otherwise, nothing kept). A schema is either given inline (`schema`: the schema TOML "
        "text) or taken from an earlier import "
        "(`schema_of`: a dataset imported with a schema). A file that breaks its schema is "
        "refused with 422 and a `violations` list; nothing is stored."
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
)
async def upload_dataset(
    request: Request,
    session: SessionDep,
    user=require("data.write"),
    filename: str = Query(..., max_length=255, description="The file's name, with extension."),
    name: str | None = Query(None, max_length=120, description="Dataset name (default: stem)."),
    fmt: str = Query("parquet", alias="format", pattern="^(parquet|npz)$"),
    schema: str | None = Query(None, max_length=8192, description="Schema TOML text."),
    schema_of: str | None = Query(
        None, max_length=120, description="Use the schema a dataset was imported with."
    ),
) -> ImportOut:
    settings = request.app.state.settings
    home = settings.home
    limit = settings.data.max_upload_bytes
    safe = sanitise_filename(filename)
    if schema is not None and schema_of is not None:
        raise SctkError("Give either schema or schema_of, not both.")
    checked = parse_schema(schema, "the schema parameter") if schema is not None else None
    if schema_of is not None:
        checked = await run_in_threadpool(service.schema_of, session, schema_of)
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise service.TooLarge(
            f"The upload is {length} bytes, over the limit of {limit} bytes "
            "(data.max_upload_bytes)."
        )
    with store.temporary_upload(home, safe) as tmp:
        received = 0
        with tmp.open("wb") as fh:
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit:
                    raise service.TooLarge(
                        f"The upload is larger than the limit of {limit} bytes "
                        "(data.max_upload_bytes); nothing was kept."
                    )
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            result = await run_in_threadpool(
                service.import_file,
                session,
                home,
                tmp,
                filename=safe,
                name=name,
                schema=checked,
                fmt=fmt,
                owner=user.username,
                max_bytes=limit,
                max_violations=settings.data.max_violations_listed,
                limits=DataLimits.of(settings.data),
            )
        except SchemaViolations as exc:
            report = exc.report.to_dict()
            return problem(  # type: ignore[return-value]
                422,
                exc.message,
                title=exc.title,
                violations=report["violations"],
                total=report["total"],
            )
    return ImportOut(
        dataset=DatasetOut(**store.as_dict(result.dataset)),
        report=result.report.to_dict() if result.report else None,
        notes=result.notes,
    )


@router.delete(
    "/datasets/{name}",
    response_model=DatasetOut,
    summary="Delete a dataset and its file (409 when others derive from it, unless force).",
)
def delete_dataset(
    request: Request,
    session: SessionDep,
    _user=require("data.write"),
    name: str = NAME,
    force: bool = Query(False, description="Delete even when other datasets derive from it."),
) -> DatasetOut:
    ds = store.delete(session, request.app.state.settings.home, name, force=force)
    return DatasetOut(**store.as_dict(ds, with_lineage=False))


@router.post(
    "/datasets/{name}/verify",
    response_model=VerifyOut,
    summary="Re-hash a dataset's file against its recorded sha256.",
)
def verify_dataset(
    request: Request, session: SessionDep, _user=require("read"), name: str = NAME
) -> VerifyOut:
    check = store.verify(request.app.state.settings.home, store.get(session, name))
    return VerifyOut(**check.to_dict())
