"""`sctk data ...`: exit codes, one-sentence errors, --json output."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from sctk.cli import main
from tests.helpers import run_sctk
from tests.pipeline.conftest import PIPELINE, SCHEMA, write_good

# The commands' behaviour does not depend on the database (the domain tests run on both).
sqlite_only = pytest.mark.parametrize("backend", ["sqlite"])


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def sctk(home, capsys, monkeypatch):
    """Run `sctk --home HOME ARGS...` in this process (much faster than a subprocess)."""
    monkeypatch.setenv("COLUMNS", "200")  # keep rich from wrapping the sentences looked for

    def run(*args: str) -> Result:
        capsys.readouterr()
        try:
            main(["--home", str(home), *args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def refused(result: Result, *fragments: str) -> str:
    assert result.code == 1, result
    message = result.err.strip()
    assert message.startswith("Error: ") and "\n" not in message and message.endswith("."), message
    assert "Traceback" not in result.err
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


@sqlite_only
def test_import_list_show_transform_lineage_verify_delete(sctk, home, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("x1,y,site\nabc,1,a\n12,2,b\n", encoding="utf-8")
    schema = tmp_path / "schema.toml"
    schema.write_text(SCHEMA, encoding="utf-8")
    refused(
        sctk("data", "import", str(bad), "--schema", str(schema)),
        "bad.csv does not match the schema (3 problems)",
        "column 'x2' is missing",
        "row 1, column 'x1': 'abc' is not a number",
        "row 2, column 'x1': 12 is above the maximum 10",
    )
    report = sctk("data", "import", str(bad), "--schema", str(schema), "--json")
    assert report.code == 1 and json.loads(report.out)["report"]["total"] == 3
    assert json.loads(sctk("data", "list", "--json").out) == []

    good = write_good(tmp_path, "csv")
    done = sctk("data", "import", str(good), "--name", "runs", "--schema", str(schema))
    assert done.code == 0 and "imported good.csv as dataset 'runs': 6 rows" in done.out
    shown = json.loads(sctk("data", "show", "runs", "--json").out)
    assert shown["columns"]["y"] == "int64" and shown["lineage"]["source"]["file"] == "good.csv"

    pipeline = tmp_path / "clean.toml"
    pipeline.write_text(PIPELINE, encoding="utf-8")
    ran = sctk("data", "transform", "runs", "--pipeline", str(pipeline), "--inline", "--json")
    assert ran.code == 0, ran
    outputs = [o["name"] for o in json.loads(ran.out)["outputs"]]
    assert outputs == ["runs-clean-train", "runs-clean-calibration", "runs-clean-test"]
    tree = json.loads(sctk("data", "lineage", "runs-clean-test", "--json").out)
    assert tree["pipeline"]["path"] == str(pipeline) and tree["inputs"][0]["name"] == "runs"
    text = sctk("data", "lineage", "runs-clean-test").out
    assert "runs-clean-test [test]  from pipeline" in text and "imported from good.csv" in text

    assert sctk("data", "verify").code == 0
    (home / "data" / "runs-clean-train.parquet").write_bytes(b"PAR1 not any more")
    (home / "data" / "runs-clean-test.parquet").unlink()
    refused(
        sctk("data", "verify"),
        "2 datasets failed verification",
        "'runs-clean-test': data/runs-clean-test.parquet is missing",
        "'runs-clean-train': data/runs-clean-train.parquet has changed",
    )
    assert sctk("data", "verify", "runs").code == 0

    refused(sctk("data", "delete", "runs"), "'runs' is an input of")
    assert sctk("data", "delete", "runs", "--force").code == 0
    refused(sctk("data", "show", "runs"), "No dataset is named 'runs'")


@sqlite_only
def test_bad_input_is_one_sentence_and_stores_nothing(sctk, home, tmp_path):
    lying = tmp_path / "data.npz"
    lying.write_text("a,b\n1,2\n", encoding="utf-8")
    refused(sctk("data", "import", str(lying)), "data.npz is not a NumPy .npz", "CSV text")
    broken = tmp_path / "broken.toml"
    broken.write_text('[columns.a]\ndtype = "float"\nmin = 3\nmax = 1\n', encoding="utf-8")
    refused(
        sctk("data", "import", str(write_good(tmp_path, "csv")), "--schema", str(broken)),
        "broken.toml: column 'a' has min 3 greater than max 1",
    )
    refused(sctk("data", "show", "nothing"), "No dataset is named 'nothing'")
    refused(sctk("data", "lineage", "nothing"), "No dataset is named 'nothing'")
    sctk("data", "import", str(write_good(tmp_path, "csv")), "--name", "runs")
    evil = tmp_path / "evil.toml"
    evil.write_text(
        "[[steps]]\nop = 'derive'\ncolumn = 'z'\nexpr = \"__import__('os').system('x')\"\n",
        encoding="utf-8",
    )
    refused(
        sctk("data", "transform", "runs", "--pipeline", str(evil)),
        "evil.toml: step 1 (derive)",
        "is not allowed",
    )
    refused(
        sctk("data", "transform", "nothing", "--pipeline", str(evil)),
        "evil.toml: step 1 (derive)",
    )
    names = [d["name"] for d in json.loads(sctk("data", "list", "--json").out)]
    assert names == ["runs"]
    assert sorted(p.name for p in (home / "data").iterdir()) == ["runs.parquet"]


@sqlite_only
def test_transform_submits_a_job(sctk, home, tmp_path):
    from sctk import config
    from sctk.jobs import queue
    from sctk.storage.engine import make_engine, session_scope

    sctk("data", "import", str(write_good(tmp_path, "csv")), "--name", "runs")
    pipeline = tmp_path / "clean.toml"
    pipeline.write_text(PIPELINE, encoding="utf-8")
    refused(
        sctk("data", "transform", "nope", "--pipeline", str(pipeline)),
        "No dataset is named 'nope'",
    )
    submitted = sctk("data", "transform", "runs", "--pipeline", str(pipeline), "--json")
    assert submitted.code == 0, submitted
    job_id = json.loads(submitted.out)["job"]
    engine = make_engine(config.load(home).settings)
    try:
        with session_scope(engine) as s:
            job = queue.get(s, job_id)
            assert (job.kind, job.status) == ("pipeline.run", "queued")
            assert job.params["inputs"] == ["runs"] and job.params["pipeline"] == PIPELINE
            assert job.params["pipeline_path"] == str(pipeline)
            assert len(queue.list_jobs(s)) == 1  # the refused one made no job
    finally:
        engine.dispose()


@sqlite_only
def test_transform_waits_for_the_worker_that_runs_the_job(sctk, home, tmp_path):
    import threading

    from sctk import config
    from sctk.jobs.worker import Worker

    sctk("data", "import", str(write_good(tmp_path, "csv")), "--name", "runs")
    pipeline = tmp_path / "clean.toml"
    pipeline.write_text(PIPELINE, encoding="utf-8")
    constant = tmp_path / "constant.toml"
    constant.write_text(
        "[[steps]]\nop = 'derive'\ncolumn = 'one'\nexpr = '1.0'\n"
        "[[steps]]\nop = 'normalise'\ncolumns = ['one']\n",
        encoding="utf-8",
    )
    fast = config.load(
        home, {"jobs": {"poll_seconds": 0.05}, "executor": {"processes": 1}}
    ).settings
    worker = Worker(fast, concurrency=1)
    thread = threading.Thread(target=worker.run_forever, kwargs={"grace": 5.0}, daemon=True)
    thread.start()
    try:
        done = sctk("data", "transform", "runs", "--pipeline", str(pipeline), "--wait", "--json")
        assert done.code == 0, done
        assert [o["rows"] for o in json.loads(done.out)["outputs"]] == [3, 1, 1]
        refused(
            sctk("data", "transform", "runs", "--pipeline", str(constant), "--wait"),
            "Job 2 failed: step 2 (normalise): column 'one' is constant",
        )
    finally:
        worker.stop()
        thread.join(timeout=30)
        try:
            from sctk.bus import shutdown_all
        except ImportError:
            pass
        else:
            shutdown_all(1.0)
    names = [d["name"] for d in json.loads(sctk("data", "list", "--json").out)]
    assert names == ["runs", "runs-clean-calibration", "runs-clean-test", "runs-clean-train"]


@sqlite_only
def test_the_installed_command(home, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("x1,x2,y,site\n1,2,3,a\n1,2,3,b\n", encoding="utf-8")
    schema = tmp_path / "schema.toml"
    schema.write_text(SCHEMA, encoding="utf-8")
    result = run_sctk("data", "import", str(bad), "--schema", str(schema), home=home)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "Error: bad.csv does not match the schema (1 problem): row 2, column 'y': 3 repeats "
        "row 1, and the column is unique; nothing was stored."
    )


@sqlite_only
def test_import_an_npz_of_fields_and_what_each_command_does_with_them(sctk, home, tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(12, 2, 3, 4)), rng.normal(size=(12, 2, 3, 4))
    x[3, 1, 2, 0] = np.nan  # allowed here; training refuses it (tests/uq/test_field_train.py)
    path = tmp_path / "wind.npz"
    np.savez(path, x=x, y=y, re=np.arange(12.0))
    out = json.loads(sctk("data", "import", str(path), "--json").out)["dataset"]
    assert (out["name"], out["rows"]) == ("wind", 12)
    assert out["columns"] == {"x": "object", "y": "object", "re": "float64"}
    shapes = {"x": [2, 3, 4], "y": [2, 3, 4]}
    assert out["lineage"]["fields"] == {"columns": shapes, "shape": [2, 3, 4]}
    assert "object (one 2x3x4 array a row)" in sctk("data", "show", "wind").out
    assert "wind  imported from wind.npz" in sctk("data", "lineage", "wind").out
    assert sctk("data", "verify", "wind").code == 0
    from sctk.pipeline.readers import read_table

    back = read_table(home / "data" / "wind.parquet")
    assert np.isnan(back["x"][3][1 * 12 + 2 * 4]) and back["y"][5].tolist() == y[5].ravel().tolist()

    # stored as .npz: [N, values] members, read back as the same array columns
    npz = json.loads(
        sctk("data", "import", str(path), "--name", "w2", "--format", "npz", "--json").out
    )
    with np.load(home / "data" / "w2.npz") as stored_npz:
        assert stored_npz["x"].shape == (12, 24)
    assert npz["dataset"]["lineage"]["fields"]["columns"] == shapes

    # a pipeline carries the shapes through renames and splits
    pipe = tmp_path / "p.toml"
    pipe.write_text(
        "[[steps]]\nop = 'rename'\ncolumns = { x = 'u' }\n"
        "[[steps]]\nop = 'filter'\nexpr = 're > 1'\n"
        "[[steps]]\nop = 'split'\ntrain = 0.5\ncalibration = 0.25\ntest = 0.25\n",
        encoding="utf-8",
    )
    result = sctk("data", "transform", "w2", "--pipeline", str(pipe), "--inline", "--json")
    assert result.code == 0, result
    train = json.loads(sctk("data", "show", "w2-p-train", "--json").out)
    counted = json.loads(result.out)["steps"][-1]["rows"]
    assert sum(counted.values()) == 10  # a split by each row's hash: about 5 / 2.5 / 2.5
    assert train["rows"] == counted["train"] > 0 and train["columns"]["u"] == "object"
    assert train["lineage"]["fields"]["columns"] == {"u": [2, 3, 4], "y": [2, 3, 4]}

    # what cannot work on array columns is one sentence, and nothing is stored
    before = sorted(p.name for p in (home / "data").iterdir())
    schema = tmp_path / "s.toml"
    schema.write_text('[columns.x]\ndtype = "float"\n', encoding="utf-8")
    refused(
        sctk("data", "import", str(path), "--name", "w3", "--schema", str(schema)),
        "column 'x' holds an array per row, which a schema cannot check as float",
        "nothing was stored",
    )
    schema.write_text('[columns.re]\ndtype = "float"\nmin = 0.0\n', encoding="utf-8")
    kept = json.loads(
        sctk("data", "import", str(path), "--name", "w4", "--schema", str(schema), "--json").out
    )
    assert kept["dataset"]["lineage"]["fields"]["shape"] == [2, 3, 4]
    assert kept["notes"] == ["columns not in the schema were kept with the types read: 'x', 'y'"]
    for step, fragment in (
        ("op = 'filter'\nexpr = 'x > 0'", "names 'x', a column holding an array per row"),
        ("op = 'derive'\ncolumn = 'z'\nexpr = 'y * 2'", "names 'y', a column holding an array"),
        ("op = 'normalise'\ncolumns = ['y']", "column 'y' holds an array per row; it cannot be"),
    ):
        pipe.write_text(f"[[steps]]\n{step}\n", encoding="utf-8")
        result = sctk("data", "transform", "wind", "--pipeline", str(pipe), "--inline")
        last = result.err.strip().splitlines()[-1]  # after the run's log lines
        refused(Result(result.code, "", last), fragment)
    assert sorted(p.name for p in (home / "data").iterdir()) == sorted([*before, "w4.parquet"])


@sqlite_only
def test_bad_npz_files_are_one_sentence_and_store_nothing(sctk, home, tmp_path):
    import numpy as np

    cases = {
        "empty.npz": ({"x": np.zeros((0, 2, 2, 2))}, "array 'x' has no rows"),
        "rows.npz": (
            {"x": np.zeros((4, 2, 2, 2)), "y": np.zeros((5, 2, 2, 2))},
            "different numbers of rows (first dimension: 'x' 4, 'y' 5)",
        ),
        "mixed.npz": (
            {"x": np.zeros((4, 2, 2, 2)), "t": np.zeros(3)},
            "different numbers of rows (first dimension: 'x' 4, 't' 3)",
        ),
        "text.npz": ({"x": np.full((4, 2), "a")}, "holds text values"),
        "lengths.npz": ({"a": np.zeros(3), "b": np.zeros(4)}, "different lengths ('a' 3, 'b' 4)"),
        "pickle.npz": ({"a": np.array([{}, None], dtype=object)}, "holds Python objects"),
    }
    for file_name, (arrays, fragment) in cases.items():
        path = tmp_path / file_name
        np.savez(path, **arrays)
        refused(sctk("data", "import", str(path)), f"{file_name}: ", fragment)
    lying = tmp_path / "lying.npz"
    lying.write_text("a,b\n1,2\n", encoding="utf-8")
    refused(sctk("data", "import", str(lying)), "lying.npz is not a NumPy .npz", "CSV text")
    assert json.loads(sctk("data", "list", "--json").out) == []
    assert not (home / "data").exists() or not list((home / "data").iterdir())
