"""Every decoder has a bound, over real HTTP to `sctk serve` in a process of its own.

A small upload must not grow the server by gigabytes: a 0.1 MB Parquet file of 30 million
rows and an .npz whose members declare (or compress) giant arrays are refused with 413 from
their own metadata, and the server's resident memory, sampled throughout the request, grows
by less than 100 MiB. Deeply nested TOML is one sentence, not a 500; a prediction holding
more values than data.max_predict_cells is refused before any work.
"""

from __future__ import annotations

import io
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tomlkit

from tests.reliability.harness import Served, login, prepare_home, sctk_api
from tests.security.conftest import assert_problem

MiB = 1024 * 1024
DECODED_LIMIT = 64 * MiB  # the served data directory's data.max_decoded_bytes
PREDICT_CELLS = 1_000  # and its data.max_predict_cells


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[Served, dict[str, str], int]]:
    """`sctk serve --role api` on a data directory with a small model (feature 'x') and
    lower [data] limits: (the server, an admin's Authorization header, the model's id)."""
    home = tmp_path_factory.mktemp("bounds") / "home"
    model = prepare_home(home)["model"]
    path = home / "sctk.toml"
    doc = tomlkit.parse(path.read_text(encoding="utf-8"))
    doc.setdefault("data", tomlkit.table()).update(
        {"max_decoded_bytes": DECODED_LIMIT, "max_predict_cells": PREDICT_CELLS}
    )
    path.write_text(tomlkit.dumps(doc), encoding="utf-8")
    with sctk_api(home) as server:
        yield server, login(server.url), model


@contextmanager
def peak_rss(pid: int) -> Iterator[dict[str, int]]:
    """The resident memory of process PID (and its children) before, and its peak during,
    the block, sampled every few milliseconds: a request that builds and frees a giant
    frame shows in the peak even when the memory is returned by the time it answers."""
    import psutil

    process = psutil.Process(pid)

    def rss() -> int:
        return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])

    seen = {"before": rss(), "peak": 0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            seen["peak"] = max(seen["peak"], rss())
            stop.wait(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield seen
    finally:
        stop.set()
        sampler.join(timeout=5)
        seen["peak"] = max(seen["peak"], rss())


def upload(server: Served, auth: dict[str, str], filename: str, body: bytes) -> httpx.Response:
    return httpx.post(
        f"{server.url}/api/v1/datasets?filename={quote(filename)}",
        content=body,
        headers={**auth, "Content-Type": "application/octet-stream"},
        timeout=120,
    )


def parquet_of_rows(path: Path, rows: int) -> Path:
    """ROWS rows of one constant float column: dictionary and run-length encoding make
    30 million of them about 0.1 MB. Written a million rows at a time, so that building the
    file costs the test 8 MB, not the 240 MB the rows decode to."""
    chunk = pa.table({"x": pa.array(np.full(1_000_000, 1.5))})
    with pq.ParquetWriter(path, chunk.schema, use_dictionary=True, compression="zstd") as writer:
        for _ in range(rows // 1_000_000):
            writer.write_table(chunk)
    return path


def npy_header(shape: tuple[int, ...], dtype: str = "<f8") -> bytes:
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        out, {"descr": dtype, "fortran_order": False, "shape": shape}
    )
    return out.getvalue()  # the magic string, then the header


def npz_declaring(shape: tuple[int, ...]) -> bytes:
    """An .npz whose one member's header declares SHAPE, followed by a few bytes of data."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("x.npy", npy_header(shape) + b"\0" * 64)
    return out.getvalue()


def npz_of_zeros(values: int) -> bytes:
    """An honest .npz of VALUES float64 zeros, deflated to a few hundred kilobytes; written
    a megabyte at a time, so that the test never holds the array."""
    out = io.BytesIO()
    with (
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive,
        archive.open("x.npy", "w", force_zip64=True) as member,
    ):
        member.write(npy_header((values,)))
        block = bytes(MiB)
        for _ in range(values * 8 // MiB):
            member.write(block)
    return out.getvalue()


def test_a_parquet_file_of_30_million_rows_is_413_and_the_server_stays_small(served, tmp_path):
    server, auth, _ = served
    # a small upload first: the reader's libraries are loaded before memory is measured
    small = tmp_path / "small.parquet"
    pq.write_table(pa.table({"x": [1.0, 2.0, 3.0]}), small)
    assert upload(server, auth, "warm.parquet", small.read_bytes()).status_code == 201

    bomb = parquet_of_rows(tmp_path / "bomb.parquet", 30_000_000)
    assert bomb.stat().st_size < 300_000  # a small file ...
    assert pq.ParquetFile(bomb).metadata.num_rows == 30_000_000  # ... of 30 million rows
    with peak_rss(server.process.pid) as rss:
        r = upload(server, auth, "bomb.parquet", bomb.read_bytes())
    body = assert_problem(r, 413, "bomb.parquet holds 30,000,000 rows", "data.max_rows")
    assert body["detail"].count(". ") == 0  # one sentence
    grown = rss["peak"] - rss["before"]
    assert grown < 100 * MiB, f"the server grew by {grown / MiB:.0f} MiB"
    names = [d["name"] for d in httpx.get(f"{server.url}/api/v1/datasets", headers=auth).json()]
    assert "bomb" not in names


@pytest.mark.parametrize(
    ("make", "fragments"),
    [
        # a header declaring 2 billion floats (16 GB) over 64 bytes of data
        (lambda: npz_declaring((2_000_000_000,)), ("2,000,000,000", "data.max_rows")),
        # 9.4 million floats that are really there, 72 MiB of zeros deflated to ~70 KB
        (lambda: npz_of_zeros(72 * MiB // 8), ("decodes to", "data.max_decoded_bytes")),
        # an array column [N, C, H, W]: 64 MB and more in its header
        (lambda: npz_declaring((4096, 2, 64, 64)), ("decodes to", "data.max_decoded_bytes")),
    ],
    ids=["declared", "compressed", "fields"],
)
def test_an_npz_bomb_is_413_before_numpy_allocates(served, make, fragments, request):
    server, auth, _ = served
    body = make()
    assert len(body) < 1 * MiB
    name = f"bomb-{request.node.callspec.id}.npz"
    with peak_rss(server.process.pid) as rss:
        r = upload(server, auth, name, body)
    assert_problem(r, 413, name, *fragments)
    assert rss["peak"] - rss["before"] < 100 * MiB


def test_deeply_nested_toml_is_one_sentence_not_a_500(served):
    server, auth, _ = served
    deep = "a = " + "[" * 3000 + "]" * 3000
    r = httpx.post(
        f"{server.url}/api/v1/datasets?filename=t.csv&schema={quote(deep)}",
        content=b"a\n1\n",
        headers=auth,
        timeout=60,
    )
    body = assert_problem(r, 400, "nests tables or arrays more than 32 levels deep")
    assert body["detail"].endswith("flatten it.")


def test_an_oversize_prediction_is_refused_before_any_work(served):
    server, auth, model = served
    url = f"{server.url}/api/v1/models/{model}/predict"
    ok = httpx.post(url, json={"rows": [{"x": 1.0}] * 10}, headers=auth, timeout=60)
    assert ok.status_code == 200, ok.text
    # more values than data.max_predict_cells, in a body well under the byte limit
    many = httpx.post(url, json={"rows": [{"x": 1.0}] * 1_500}, headers=auth, timeout=60)
    assert_problem(many, 413, "1,500 values", "data.max_predict_cells")
    # more bytes than security.max_body_bytes: refused before the body is read
    padded = b'{"rows": [' + b'{"x": 1.0},' * 200_000 + b'{"x": 1.0}]}'
    big = httpx.post(
        url, content=padded, headers={**auth, "Content-Type": "application/json"}, timeout=60
    )
    assert_problem(big, 413, "larger than the limit")
    # JSON nested deeper than any parser recurses, within the byte limit
    deep = b'{"fields": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    nested = httpx.post(
        url, content=deep, headers={**auth, "Content-Type": "application/json"}, timeout=60
    )
    assert 400 <= nested.status_code < 500, nested.text
    assert "Traceback" not in nested.text
