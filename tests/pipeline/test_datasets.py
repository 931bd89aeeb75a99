"""Import, transform, lineage, verify and delete on a real data directory (both backends)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import func, select

from sctk.errors import Conflict, NotFound, SctkError
from sctk.pipeline import store
from sctk.pipeline.jobs import KIND, job_params, pipeline_run
from sctk.pipeline.readers import UnreadableFile
from sctk.pipeline.schema import SchemaError, SchemaViolations, load_schema, parse_schema
from sctk.pipeline.service import import_file, run_pipeline, schema_of
from sctk.pipeline.transforms import PipelineError, parse_pipeline
from sctk.storage.models import Dataset
from tests.pipeline.conftest import GOOD, PIPELINE, SCHEMA, write_good


def count(session) -> int:
    return session.scalar(select(func.count()).select_from(Dataset))


def data_files(home: Path) -> list[str]:
    return sorted(p.name for p in (home / "data").iterdir())


def test_a_bad_csv_is_refused_naming_each_problem_and_nothing_is_stored(session, home, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("x1,y,site\n1.5,1,a\nabc,2,b\n12.5,3,c\n", encoding="utf-8")
    schema_file = tmp_path / "schema.toml"
    schema_file.write_text(SCHEMA, encoding="utf-8")
    with pytest.raises(SchemaViolations) as exc:
        import_file(session, home, bad, schema=load_schema(schema_file))
    message = exc.value.message
    assert "\n" not in message and message.endswith("nothing was stored.")
    for fragment in (
        "bad.csv does not match the schema (3 problems)",
        "column 'x2' is missing",
        "row 2, column 'x1': 'abc' is not a number",
        "row 3, column 'x1': 12.5 is above the maximum 10",
    ):
        assert fragment in message, (fragment, message)
    assert exc.value.report.total == 3
    assert count(session) == 0
    assert data_files(home) == []


def test_bad_input_is_one_sentence_and_nothing_is_stored(session, home, tmp_path):
    parquet_as_csv = tmp_path / "looks.csv"
    GOOD.to_parquet(parquet_as_csv)
    with pytest.raises(UnreadableFile, match=r"looks\.csv is not CSV text .* a Parquet file"):
        import_file(session, home, parquet_as_csv)
    broken_schema = tmp_path / "s.toml"
    broken_schema.write_text('[columns.x1]\ndtype = "decimal"\n', encoding="utf-8")
    with pytest.raises(SchemaError, match="unknown dtype 'decimal'"):
        load_schema(broken_schema)
    with pytest.raises(NotFound, match="No dataset is named 'nope'"):
        store.get(session, "nope")
    with pytest.raises(NotFound, match="No dataset is named 'nope'"):
        run_pipeline(session, home, ["nope"], parse_pipeline(PIPELINE, "/p.toml"))
    with pytest.raises(SctkError, match="over the import limit of 10 bytes"):
        import_file(session, home, write_good(tmp_path, "csv"), max_bytes=10)
    with pytest.raises(SctkError, match="not a usable dataset name"):
        import_file(session, home, write_good(tmp_path, "csv"), name="../etc")
    assert count(session) == 0
    assert data_files(home) == []


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl", "npz"])
def test_a_good_file_imports(session, home, tmp_path, fmt):
    source = write_good(tmp_path, fmt)
    result = import_file(session, home, source, schema=parse_schema(SCHEMA, "schema.toml"))
    ds = result.dataset
    assert (ds.name, ds.origin, ds.rows, ds.format) == ("good", "import", 6, "parquet")
    assert ds.columns == {"x1": "float64", "x2": "float64", "y": "int64", "site": "str"}
    path = home / ds.path
    assert ds.path == "data/good.parquet"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == ds.sha256
    assert ds.size_bytes == path.stat().st_size
    assert ds.lineage["source"] == {
        "file": source.name,
        "format": fmt,
        "sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
        "size_bytes": source.stat().st_size,
    }
    assert ds.lineage["schema"]["sha256"] == hashlib.sha256(SCHEMA.encode()).hexdigest()
    assert set(ds.lineage["versions"]) == {"sctk", "pandas", "pyarrow", "numpy"}
    back = store.read(home, ds)
    pd.testing.assert_frame_equal(back, GOOD, check_dtype=False)
    assert data_files(home) == ["good.parquet"]  # no temporary file left behind


def test_npz_storage_and_a_reused_schema(session, home, tmp_path):
    schema = parse_schema(SCHEMA, "schema.toml")
    first = import_file(session, home, write_good(tmp_path, "csv"), name="first", schema=schema)
    again = import_file(
        session,
        home,
        write_good(tmp_path, "jsonl"),
        name="second",
        schema=schema_of(session, "first"),
        fmt="npz",
    )
    assert again.dataset.format == "npz" and again.dataset.path == "data/second.npz"
    pd.testing.assert_frame_equal(
        store.read(home, again.dataset), store.read(home, first.dataset), check_dtype=False
    )
    with pytest.raises(Conflict, match="'first' already exists"):
        import_file(session, home, write_good(tmp_path, "csv"), name="first")


def test_pipeline_outputs_are_byte_identical_on_a_rerun_with_lineage_verify_and_delete(
    session, home, tmp_path
):
    import_file(session, home, write_good(tmp_path, "csv"), name="runs")
    pipeline_file = tmp_path / "clean.toml"
    pipeline_file.write_text(PIPELINE, encoding="utf-8")
    pipeline = parse_pipeline(PIPELINE, str(pipeline_file))
    progress: list[float] = []

    first = run_pipeline(
        session, home, ["runs"], pipeline, progress=lambda f, _m: progress.append(f)
    )
    names = [d.name for d in first.outputs]
    assert names == ["runs-clean-train", "runs-clean-calibration", "runs-clean-test"]
    assert [d.rows for d in first.outputs] == [3, 1, 1]
    assert progress == sorted(progress) and progress[-1] == 1.0

    second = run_pipeline(session, home, ["runs"], pipeline, output="again")
    for a, b in zip(first.outputs, second.outputs, strict=True):
        assert a.sha256 == b.sha256
        assert (home / a.path).read_bytes() == (home / b.path).read_bytes()
    # the same run under the same names is harmless: the identical datasets are kept
    third = run_pipeline(session, home, ["runs"], pipeline)
    assert third.unchanged == names

    train = store.get(session, "runs-clean-train")
    lineage = train.lineage
    assert lineage["inputs"] == [
        {"name": "runs", "sha256": store.get(session, "runs").sha256, "rows": 6}
    ]
    assert lineage["pipeline"]["path"] == str(pipeline_file)
    assert lineage["pipeline"]["sha256"] == hashlib.sha256(pipeline_file.read_bytes()).hexdigest()
    assert lineage["part"] == "train"
    normalise = next(s for s in lineage["steps"] if s["op"] == "normalise")
    assert set(normalise["fitted"]) == {"a", "x2"}
    tree = store.lineage(session, "runs-clean-train")
    assert tree["pipeline"]["path"] == str(pipeline_file)
    [source] = tree["inputs"]
    assert source["name"] == "runs" and source["source"]["file"] == "good.csv"

    # verify: a changed file and a missing file are named
    assert all(store.verify(home, d).status == "ok" for d in store.list_datasets(session))
    changed = home / "data" / "runs-clean-test.parquet"
    changed.write_bytes(changed.read_bytes() + b"x")
    (home / "data" / "again-test.parquet").unlink()
    checks = [store.verify(home, d) for d in store.list_datasets(session)]
    bad = {c.name: c.status for c in checks if c.status != "ok"}
    assert bad == {"runs-clean-test": "changed", "again-test": "missing"}
    sentence = store.failures_sentence(checks)
    assert sentence.startswith("2 datasets failed verification: ")
    assert "data/again-test.parquet is missing" in sentence
    assert "data/runs-clean-test.parquet has changed" in sentence
    # ... and a changed input is not silently fed to a pipeline
    with pytest.raises(SctkError, match="'runs-clean-test' failed verification"):
        run_pipeline(session, home, ["runs-clean-test"], parse_pipeline(PIPELINE, "p.toml"))

    # delete: refused while other datasets derive from it, unless forced
    with pytest.raises(Conflict, match="'runs' is an input of 'again-calibration'"):
        store.delete(session, home, "runs")
    assert (home / "data" / "runs.parquet").exists()
    store.delete(session, home, "runs", force=True)
    assert not (home / "data" / "runs.parquet").exists()
    assert store.find(session, "runs") is None
    assert store.lineage(session, "again-train")["inputs"][0]["note"] == "deleted"
    store.delete(session, home, "again-test")  # its file was already gone: the row goes too
    assert store.find(session, "again-test") is None


def test_several_inputs_are_stacked(session, home, tmp_path):
    import_file(session, home, write_good(tmp_path, "csv"), name="a")
    import_file(session, home, write_good(tmp_path, "parquet"), name="b")
    text = "format = 'npz'\n[[steps]]\nop = 'derive'\ncolumn = 'z'\nexpr = 'x1 * 2'\n"
    [out] = run_pipeline(session, home, ["a", "b"], parse_pipeline(text, "/d.toml")).outputs
    assert (out.name, out.rows, out.format) == ("a-d", 12, "npz")
    assert [i["name"] for i in out.lineage["inputs"]] == ["a", "b"]
    assert store.read(home, out)["z"].tolist() == (GOOD["x1"] * 2).tolist() * 2
    [twin] = run_pipeline(
        session, home, ["a", "b"], parse_pipeline(text, "/d.toml"), output="twin"
    ).outputs
    assert (home / twin.path).read_bytes() == (home / out.path).read_bytes()  # npz too
    import_file(
        session, home, write_good(tmp_path, "csv", GOOD.drop(columns="site")), name="narrow"
    )
    with pytest.raises(SctkError, match="inputs are stacked and must have the same columns"):
        run_pipeline(session, home, ["a", "narrow"], parse_pipeline(text, "/d.toml"))


def test_an_unsafe_expression_stores_nothing(session, home, tmp_path):
    import_file(session, home, write_good(tmp_path, "csv"), name="runs")
    marker = tmp_path / "pwned"
    text = f"[[steps]]\nop = 'filter'\nexpr = \"__import__('os').system('touch {marker}')\"\n"
    with pytest.raises(PipelineError, match="is not allowed"):
        run_pipeline(session, home, ["runs"], parse_pipeline(text, "evil.toml"))
    assert not marker.exists()
    assert [d.name for d in store.list_datasets(session)] == ["runs"]
    assert data_files(home) == ["runs.parquet"]


class RecordingContext:
    job_id = 1
    owner = "ada"

    def __init__(self, home: Path):
        self._home = str(home)
        self.events: list[tuple[str, object]] = []

    @property
    def home(self) -> str:
        return self._home

    def progress(self, fraction: float, message: str = "") -> None:
        self.events.append(("progress", fraction))

    def log(self, line: str) -> None:
        self.events.append(("log", line))


def test_the_job_kind_runs_the_same_function(session, home, tmp_path):
    from sctk.jobs.kinds import get_kind

    kind = get_kind(KIND)
    assert kind.permission == "data.write" and kind.func is pipeline_run
    import_file(session, home, write_good(tmp_path, "csv"), name="runs")
    session.commit()
    ctx = RecordingContext(home)
    result = pipeline_run(job_params(["runs"], PIPELINE, "/p/clean.toml", output="job"), ctx)
    assert [o["name"] for o in result["outputs"]] == ["job-train", "job-calibration", "job-test"]
    fractions = [v for k, v in ctx.events if k == "progress"]
    assert fractions[-1] == 1.0 and len(fractions) >= 6
    assert any(k == "log" and "normalise" in str(v) for k, v in ctx.events)
    session.expire_all()
    assert store.get(session, "job-train").lineage["pipeline"]["path"] == "/p/clean.toml"
    with pytest.raises(SctkError, match="needs 'inputs'"):
        pipeline_run({"pipeline": PIPELINE}, ctx)


def test_store_writes_atomically(session, home, monkeypatch):
    """A failure after the file is written leaves neither the file nor its row."""
    frame = pd.DataFrame({"x": [1.0, 2.0]})

    def broken_commit():
        raise RuntimeError("the database went away")

    monkeypatch.setattr(session, "commit", broken_commit)
    with pytest.raises(RuntimeError):
        store.store(
            session, home, [store.Output("atomic", frame, "parquet", {})], "import", "tests"
        )
    monkeypatch.undo()
    assert store.find(session, "atomic") is None
    assert data_files(home) == []
    assert not any(name.endswith(".tmp") for name in os.listdir(home / "data"))
