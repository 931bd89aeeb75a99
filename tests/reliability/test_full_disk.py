"""A data directory on a file system that fills up: every write path says so in one
sentence (507 over HTTP), keeps no partial file, and works again once space returns,
without a restart."""

from __future__ import annotations

import os
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sctk import config
from sctk.api.app import create_app
from sctk.ops.init_home import init_home
from sctk.storage.engine import make_engine, ping
from tests.helpers import LiveServer, run_sctk
from tests.security.conftest import bearer, create_token, create_user

pytestmark = [pytest.mark.reliability, pytest.mark.e2e]

PROBLEM_JSON = "application/problem+json"
MiB = 1 << 20


@pytest.fixture
def small_fs(tmp_path) -> Iterator[Path]:
    """A 64 MiB tmpfs of the test's own."""
    mnt = tmp_path / "small-fs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def fill(filler: Path, leave: int = 0) -> None:
    """Write FILLER until the file system is full, then give LEAVE bytes back."""
    block = b"\0" * MiB
    with filler.open("ab", buffering=0) as fh:  # unbuffered: nothing left to flush at close
        try:
            while True:
                fh.write(block)
        except OSError:
            pass
    if leave:
        os.truncate(filler, max(0, filler.stat().st_size - leave))


def csv_of(path: Path, rows: int) -> Path:
    """Random floats: they do not compress, so the stored file is as large as planned."""
    rng = random.Random(7)
    with path.open("w") as fh:
        fh.write("x,y\n")
        for _ in range(rows):
            fh.write(f"{rng.random()},{rng.random()}\n")
    return path


def one_sentence(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    message = done.stderr.strip()
    assert "\n" not in message and message.startswith("Error: "), message
    return message


def health_rows(done: subprocess.CompletedProcess[str]) -> dict[str, str]:
    return {line.split("│")[2].strip(): line for line in done.stdout.splitlines() if "│" in line}


def leftovers(home: Path) -> list[Path]:
    return [p for d in ("data", "tmp") for p in (home / d).iterdir()]


def test_a_full_disk_is_named_and_the_service_recovers_by_itself(small_fs, tmp_path):
    home = small_fs / "home"
    init_home(home)
    settings = config.load(home).settings
    engine = make_engine(settings)
    create_user(engine, "ana.lyst", "Velvet-Orbit-Meadow-927", "admin")
    token, _ = create_token(engine, "ana.lyst")
    engine.dispose()
    big = csv_of(tmp_path / "big.csv", 120_000)  # ~4.5 MiB of text, ~2 MiB as Parquet
    body = big.read_bytes()
    filler = small_fs / "filler"
    auth = bearer(token)

    with LiveServer(create_app(settings)) as server, server.client() as http:
        assert http.get("/api/v1/datasets", headers=auth).status_code == 200

        # nearly full: the database still opens, the dataset's file does not fit
        fill(filler, leave=MiB)
        message = one_sentence(run_sctk("data", "import", str(big), home=home))
        assert message.startswith(f"Error: No space left on the device holding {home / 'data'}")
        assert "free some space" in message and message.endswith("."), message
        assert leftovers(home) == []

        r = http.post(
            "/api/v1/datasets", params={"filename": "big.csv"}, content=body, headers=auth
        )
        assert r.status_code == 507, r.text
        assert r.headers["content-type"].startswith(PROBLEM_JSON)
        assert r.json()["title"] == "Insufficient storage"
        assert r.json()["detail"].startswith("No space left on the device holding"), r.json()
        assert leftovers(home) == []
        ready = http.get("/health/ready")
        assert ready.status_code == 503 and "disk" in ready.json()["detail"], ready.text

        # quite full: the health report names the disk and stores its results only if it can
        fill(filler)
        checked = run_sctk("health", home=home)
        assert checked.returncode == 2, checked.stdout + checked.stderr
        assert "Traceback" not in checked.stdout + checked.stderr
        rows = health_rows(checked)
        assert "CRITICAL" in rows["disk"] and "0.0% free" in rows["disk"], rows["disk"]
        message = one_sentence(run_sctk("data", "import", str(big), home=home))
        assert "space" in message and "check database_url" not in message, message
        assert leftovers(home) == []
        r = http.post(
            "/api/v1/datasets", params={"filename": "small.csv"}, content=b"x\n1\n", headers=auth
        )
        assert r.status_code == 507, r.text
        assert leftovers(home) == []

        # space returns: the same service and the same commands work, nothing restarted
        filler.unlink()
        r = http.post(
            "/api/v1/datasets", params={"filename": "big.csv"}, content=body, headers=auth
        )
        assert r.status_code == 201, r.text
        assert http.get("/health/ready").status_code == 200
        done = run_sctk("data", "import", str(big), "--name", "again", home=home)
        assert done.returncode == 0, done.stderr
        names = {d["name"] for d in http.get("/api/v1/datasets", headers=auth).json()}
        assert names == {"big", "again"}


def test_a_model_that_does_not_fit_on_the_disk_leaves_nothing(small_fs):
    """Training outputs: the model file is written last and whole, or not at all."""
    from sqlalchemy import select

    from sctk.errors import InsufficientStorage
    from sctk.storage.engine import session_scope
    from sctk.storage.models import UqModel
    from sctk.uq import registry
    from sctk.uq.hybrid import HybridRegressor
    from tests.uq.registry_helpers import TINY, frame

    home = small_fs / "home"
    init_home(home)
    engine = make_engine(config.load(home).settings)
    df = frame(100)
    model = HybridRegressor(**{**TINY, "hidden": tuple(TINY["hidden"])})
    model.fit(df[["a", "b"]].to_numpy(), df["y"].to_numpy())
    filler = small_fs / "filler"
    try:
        ping(engine)  # the open database keeps its shared-memory file through what follows
        fill(filler)
        with pytest.raises(InsufficientStorage) as caught, session_scope(engine) as s:
            registry.save(s, home, model, "tight")
        assert caught.value.http_status == 507
        assert caught.value.message.startswith(
            f"No space left on the device holding {home / 'results' / 'models' / 'tight'}"
        ), caught.value.message
        assert "while writing model file" in caught.value.message
        assert not (home / "results" / "models" / "tight").exists()
        with session_scope(engine) as s:
            assert s.scalars(select(UqModel)).all() == []
        filler.unlink()
        with session_scope(engine) as s:
            assert registry.save(s, home, model, "tight").version == 1
    finally:
        engine.dispose()


def test_a_report_written_to_a_full_disk_is_named_and_leaves_nothing(small_fs):
    """Reports, settings, keyrings and pid files are written by `atomic_write`."""
    from sctk.errors import InsufficientStorage
    from sctk.fsutil import atomic_write

    reports = small_fs / "reports"
    reports.mkdir()
    fill(small_fs / "filler", leave=64 * 1024)
    with pytest.raises(InsufficientStorage) as caught:
        atomic_write(reports / "ops-weekly.md", "x" * (512 * 1024))
    assert caught.value.message == (
        f"No space left on the device holding {reports} while writing ops-weekly.md, so nothing "
        "was kept; free some space and try again."
    )
    assert list(reports.iterdir()) == []
    (small_fs / "filler").unlink()
    atomic_write(reports / "ops-weekly.md", "x" * (512 * 1024))
    assert (reports / "ops-weekly.md").stat().st_size == 512 * 1024


def test_log_lines_on_a_full_disk_are_counted_not_printed(small_fs, capsys):
    """A full disk must not turn every log call into a traceback on stderr; the lines lost
    are counted and said once space returns."""
    import json
    import logging

    from sctk.logs import JsonFormatter, LogFileHandler

    path = small_fs / "sctk.log"
    handler = LogFileHandler(path, maxBytes=0, encoding="utf-8")
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tests.full_disk")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        logger.warning("before")
        fill(small_fs / "filler")
        for i in range(50):
            logger.warning("while full %d %s", i, "x" * 4096)
        assert capsys.readouterr().err == ""
        (small_fs / "filler").unlink()
        logger.warning("after")
    finally:
        logger.removeHandler(handler)
        handler.close()
    messages = []
    for line in path.read_text().splitlines():
        try:
            messages.append(json.loads(line)["message"])
        except json.JSONDecodeError:  # the line being written when the disk filled up
            assert line.startswith('{"time"'), line
    assert messages[0] == "before" and messages[-1] == "after", messages
    notice = messages[-2]
    assert notice.endswith("log record(s) dropped while the disk was full"), messages
    written = sum(m.startswith("while full") for m in messages)
    assert int(notice.split()[0]) + written == 50, messages


def test_a_streamed_pipeline_that_fills_the_disk_leaves_nothing(small_fs, tmp_path):
    """A pipeline's output written partition by partition runs out of space midway: the run
    is refused in one sentence, no partial output or dataset row stays, the input is
    intact, and the same run succeeds once space returns."""
    from sctk.errors import InsufficientStorage
    from sctk.pipeline import store
    from sctk.pipeline.ingest import Batching, import_local
    from sctk.pipeline.service import run_pipeline
    from sctk.pipeline.transforms import parse_pipeline
    from sctk.storage.engine import session_scope

    home = small_fs / "home"
    init_home(home)
    engine = make_engine(config.load(home).settings)
    pipeline = parse_pipeline(
        '[[steps]]\nop = "derive"\ncolumn = "z"\nexpr = "x * y + sqrt(x)"\n', "/p/wide.toml"
    )
    filler = small_fs / "filler"
    try:
        with session_scope(engine) as s:
            source = import_local(
                s, home, csv_of(tmp_path / "big.csv", 200_000), name="big"
            ).dataset
        stored = store.dataset_file(home, source)
        # room for the first partitions of the output (about 4.6 MiB whole), not for all
        fill(filler, leave=2 * MiB)
        with pytest.raises(InsufficientStorage) as caught, session_scope(engine) as s:
            run_pipeline(s, home, ["big"], pipeline, output="wide", batching=Batching(20_000))
        assert caught.value.http_status == 507
        assert caught.value.message.startswith("No space left on the device holding")
        assert "\n" not in caught.value.message and "free some space" in caught.value.message
        assert leftovers(home) == [stored], leftovers(home)
        with session_scope(engine) as s:
            kept = store.list_datasets(s)
            assert [d.name for d in kept] == ["big"]
            assert store.verify(home, kept[0]).status == "ok"

        filler.unlink()
        with session_scope(engine) as s:
            done = run_pipeline(
                s, home, ["big"], pipeline, output="wide", batching=Batching(20_000)
            )
        assert done.outputs[0].rows == 200_000
        # the output could not have fitted in what was left: the first run failed midway
        assert store.dataset_file(home, done.outputs[0]).stat().st_size > 2 * MiB
        assert store.file_sha256(store.dataset_file(home, done.outputs[0])) == (
            done.outputs[0].sha256
        )
    finally:
        engine.dispose()
