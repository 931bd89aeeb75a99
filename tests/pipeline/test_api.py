"""/api/v1/datasets over real HTTP: streamed uploads with their own size limit, and the rest."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from sqlalchemy import func, select

from sctk.storage.engine import session_scope
from sctk.storage.models import Dataset
from tests.pipeline.conftest import GOOD, SCHEMA, write_good
from tests.security.conftest import (  # noqa: F401 - fixtures
    ACCOUNTS,
    GENEROUS_LIMITS,
    assert_problem,
    create_user,
    engine,
    start_api,
)

UPLOAD_LIMIT = 8192
BODY_LIMIT = 1024  # the cap of every other route, below the upload limit on purpose


@pytest.fixture
def data_api(start_api, engine, monkeypatch):  # noqa: F811
    """The API with an analyst, a small upload limit and a smaller general body cap."""
    monkeypatch.setenv("SCTK_DATA__MAX_UPLOAD_BYTES", str(UPLOAD_LIMIT))
    analyst = ACCOUNTS["analyst"]
    create_user(engine, analyst.username, analyst.password, analyst.role)
    return start_api({"analyst": analyst}, max_body_bytes=BODY_LIMIT, **GENEROUS_LIMITS)


def rows(engine) -> int:  # noqa: F811
    with session_scope(engine) as s:
        return s.scalar(select(func.count()).select_from(Dataset))


def leftovers(api) -> list[str]:
    home = api.settings.home
    return sorted(p.name for d in ("tmp", "data") for p in (home / d).iterdir())


def test_upload_show_lineage_verify_delete(data_api, engine, tmp_path):  # noqa: F811
    api, h = data_api, data_api.headers("analyst")
    body = write_good(tmp_path, "csv").read_bytes() * 1  # a header and six rows
    padded = body + b"".join(b"7.5,8.0,%d,c\n" % (100 + i) for i in range(150))
    assert BODY_LIMIT < len(padded) < UPLOAD_LIMIT  # only the upload's own limit admits it
    r = api.http.post(
        "/api/v1/datasets?filename=" + quote("../../run 7.csv") + "&schema=" + quote(SCHEMA),
        content=padded,
        headers={**h, "Content-Type": "text/csv"},
    )
    assert r.status_code == 201, r.text
    out = r.json()
    ds = out["dataset"]
    assert (ds["name"], ds["rows"], ds["origin"]) == ("run_7", 156, "import")
    assert ds["lineage"]["source"]["file"] == "run_7.csv"  # the name a client sent, sanitised
    assert ds["owner"] == ACCOUNTS["analyst"].username
    assert out["report"]["ok"] is True
    assert leftovers(api) == ["run_7.parquet"]
    # the general cap still holds everywhere else
    r = api.http.post(
        "/api/v1/tokens",
        content=b"{" + b" " * 2000 + b"}",
        headers={**h, "Content-Type": "application/json"},
    )
    assert_problem(r, 413, f"limit of {BODY_LIMIT} bytes")

    listed = api.http.get("/api/v1/datasets", headers=h).json()
    assert [d["name"] for d in listed] == ["run_7"] and listed[0]["lineage"] is None
    shown = api.http.get("/api/v1/datasets/run_7", headers=h).json()
    assert shown["sha256"] == ds["sha256"] and shown["columns"]["y"] == "int64"
    tree = api.http.get("/api/v1/datasets/run_7/lineage", headers=h).json()
    assert tree["source"]["file"] == "run_7.csv" and tree["schema"] == "the schema parameter"
    r = api.http.post("/api/v1/datasets/run_7/verify", headers=h)
    assert r.status_code == 200 and r.json()["status"] == "ok", r.text
    (api.settings.home / "data" / "run_7.parquet").write_bytes(b"changed")
    assert api.http.post("/api/v1/datasets/run_7/verify", headers=h).json()["status"] == "changed"

    # a second file checked with the schema recorded for the first
    r = api.http.post(
        "/api/v1/datasets?filename=again.jsonl&schema_of=run_7",
        content=write_good(tmp_path, "jsonl").read_bytes(),
        headers=h,
    )
    assert r.status_code == 201, r.text
    assert r.json()["dataset"]["lineage"]["schema"]["columns"]["x1"]["max"] == 10.0

    r = api.http.delete("/api/v1/datasets/run_7", headers=h)
    assert r.status_code == 200 and r.json()["name"] == "run_7"
    assert_problem(api.http.get("/api/v1/datasets/run_7", headers=h), 404, "'run_7'")
    assert_problem(api.http.delete("/api/v1/datasets/run_7", headers=h), 404, "'run_7'")
    assert leftovers(api) == ["again.parquet"]


def test_refused_uploads_keep_nothing(data_api, engine, tmp_path):  # noqa: F811
    api, h = data_api, data_api.headers("analyst")
    bad = b"x1,y,site\n1.5,1,a\nabc,2,b\n12.5,3,c\n"
    r = api.http.post(
        "/api/v1/datasets?filename=bad.csv&schema=" + quote(SCHEMA), content=bad, headers=h
    )
    body = assert_problem(r, 422, "column 'x2' is missing", "row 2, column 'x1': 'abc'")
    assert body["total"] == 3
    assert {"row": 3, "column": "x1", "problem": "12.5 is above the maximum 10"} in body[
        "violations"
    ]
    parquet = GOOD.to_parquet()
    r = api.http.post("/api/v1/datasets?filename=data.csv", content=parquet, headers=h)
    assert_problem(r, 422, "data.csv is not CSV text", "a Parquet file")
    r = api.http.post(
        "/api/v1/datasets?filename=x.csv&schema=" + quote('[columns.a]\ndtype = "real"\n'),
        content=b"a\n1\n",
        headers=h,
    )
    assert_problem(r, 400, "unknown dtype 'real'")
    r = api.http.post(
        "/api/v1/datasets?filename=x.csv&schema_of=nope", content=b"a\n1\n", headers=h
    )
    assert_problem(r, 404, "No dataset is named 'nope'")
    r = api.http.post("/api/v1/datasets", content=b"a\n1\n", headers=h)
    assert_problem(r, 422, "filename")
    assert rows(engine) == 0
    assert leftovers(api) == []


def test_an_oversized_upload_is_413_and_leaves_nothing(data_api, engine):  # noqa: F811
    api, h = data_api, data_api.headers("analyst")
    big = b"x\n" + b"1.0\n" * (UPLOAD_LIMIT // 4 + 10)
    assert len(big) > UPLOAD_LIMIT
    r = api.http.post("/api/v1/datasets?filename=big.csv", content=big, headers=h)
    assert "content-length" in {k.lower() for k in r.request.headers}
    assert_problem(r, 413, f"limit of {UPLOAD_LIMIT} bytes")

    def chunks():  # no Content-Length: the limit is enforced while the body streams in
        for i in range(0, len(big), 1000):
            yield big[i : i + 1000]

    r = api.http.post("/api/v1/datasets?filename=big.csv", content=chunks(), headers=h)
    assert r.request.headers.get("transfer-encoding") == "chunked"
    assert_problem(r, 413, f"limit of {UPLOAD_LIMIT} bytes")
    assert rows(engine) == 0
    assert leftovers(api) == []
