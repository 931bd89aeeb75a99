"""`sctk monitor status|history|export` as a user runs them, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from sctk.monitoring import store
from sctk.monitoring.sampler import metric_names
from sctk.storage.engine import make_engine
from tests.helpers import run_sctk
from tests.security.conftest import assert_cli_error, sqlite_only


@pytest.fixture
def stored(settings):
    """Three stored minutes of cpu_percent and one of memory_percent, an hour ago."""
    start = store.bucket_of(datetime.now(UTC)) - timedelta(hours=1)
    rows = [
        store.Aggregate("cpu_percent", start, 10.0, 2.0, 30.0, 60),
        store.Aggregate("cpu_percent", start + timedelta(minutes=1), 20.0, 5.0, 50.0, 60),
        store.Aggregate("cpu_percent", start + timedelta(minutes=2), 30.5, 25.0, 99.0, 59),
        store.Aggregate("memory_percent", start, 41.0, 40.0, 42.0, 60),
        # outside the default 24 hours
        store.Aggregate("cpu_percent", start - timedelta(days=3), 1.0, 1.0, 1.0, 60),
    ]
    engine = make_engine(settings)
    try:
        store.save(engine, rows)
    finally:
        engine.dispose()
    return start


@sqlite_only
def test_status_samples_once(home, backend):
    result = run_sctk("monitor", "status", "--json", home=home)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["source"] == "sample"
    assert list(data["metrics"]) == metric_names([home])
    table = run_sctk("monitor", "status", home=home)
    assert table.returncode == 0, table.stderr
    assert "cpu_percent" in table.stdout and "sctk_rss_bytes" in table.stdout


def test_history_and_export(home, stored, tmp_path):
    history = run_sctk("monitor", "history", "cpu_percent", "--hours", "2", "--json", home=home)
    assert history.returncode == 0, history.stderr
    data = json.loads(history.stdout)
    assert data["source"] == "aggregates"
    assert [p["avg"] for p in data["points"]] == [10.0, 20.0, 30.5]
    assert [p["count"] for p in data["points"]] == [60, 60, 59]
    shown = run_sctk("monitor", "history", "cpu_percent", "--hours", "2", home=home)
    assert shown.returncode == 0 and "(3 minutes)" in shown.stdout, shown.stdout

    out = tmp_path / "metrics.csv"
    exported = run_sctk("monitor", "export", str(out), "--format", "csv", home=home)
    assert exported.returncode == 0, exported.stderr
    assert "wrote 4 aggregate(s)" in exported.stdout
    with out.open() as fh:
        got = list(csv.DictReader(fh))
    assert [(r["metric"], float(r["avg"]), int(r["count"])) for r in got] == [
        ("cpu_percent", 10.0, 60),
        ("memory_percent", 41.0, 60),
        ("cpu_percent", 20.0, 60),
        ("cpu_percent", 30.5, 59),
    ]
    assert got[0]["bucket_start"] == stored.isoformat()

    js = tmp_path / "cpu.json"
    exported = run_sctk(
        "monitor", "export", str(js), "--metric", "cpu_percent", "--hours", "100", home=home
    )
    assert exported.returncode == 0, exported.stderr
    body = json.loads(js.read_text())
    assert [a["avg"] for a in body["aggregates"]] == [1.0, 10.0, 20.0, 30.5]

    # an existing file is kept unless --force
    before = out.read_bytes()
    refused = run_sctk("monitor", "export", str(out), home=home)
    assert_cli_error(refused, "already exists")
    assert out.read_bytes() == before
    forced = run_sctk("monitor", "export", str(out), "--force", "--hours", "0.5", home=home)
    assert forced.returncode == 0, forced.stderr
    assert json.loads(out.read_text())["aggregates"] == []


@sqlite_only
def test_bad_input_changes_nothing(home, tmp_path, backend):
    target = tmp_path / "out.json"
    cases = [
        (("monitor", "history", "cpu_precent"), "Unknown metric 'cpu_precent'"),
        (("monitor", "history", "cpu_percent", "--hours", "0"), "hours must be more than 0"),
        (("monitor", "history", "cpu_percent", "--hours", "9999"), "at most 2160"),
        (("monitor", "export", str(target), "--format", "xml"), "Unknown export format 'xml'"),
        (("monitor", "export", str(target), "--metric", "nope"), "Unknown metric 'nope'"),
        (("monitor", "export", str(tmp_path / "no" / "x.json")), "does not exist"),
    ]
    # none of them changes anything, so they may run side by side (each pays for imports)
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda case: run_sctk(*case[0], home=home), cases))
    for (_, fragment), result in zip(cases, results, strict=True):
        assert_cli_error(result, fragment)
    assert not target.exists()
    assert list(tmp_path.iterdir()) == [home]
