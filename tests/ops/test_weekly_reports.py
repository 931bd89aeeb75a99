"""The dependency report and the quick benchmark of the weekly maintenance."""

from __future__ import annotations

import json

from sctk.ops.quickbench import regressions
from sctk.ops.runner import run_task
from tests.helpers import UNREACHABLE_INDEX, run_sctk


def test_an_unreachable_index_is_said_plainly(settings, monkeypatch):
    for k, v in UNREACHABLE_INDEX.items():
        monkeypatch.setenv(k, v)
    record = run_task(settings, "dependencies")
    assert record.status == "warn" and record.summary == "could not reach the package index"
    assert record.details["installed"]["numpy"]  # what is installed is still listed

    r = run_sctk("deps", "check", "--json", home=settings.home, env=UNREACHABLE_INDEX)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["reachable"] is False and report["outdated"] == []
    assert "could not reach the package index" in report["notes"][0]


def test_quick_benchmark_records_figures_and_compares_with_last_week(settings):
    first = run_task(settings, "quick_benchmark")
    assert first.status == "ok"
    assert {"db_ping_ms", "job_cycle_ms", "matmul_256_ms"} <= set(first.details["figures"])
    second = run_task(settings, "quick_benchmark")
    assert second.details["previous"] == first.details["figures"]


def test_a_figure_twice_as_slow_is_a_regression():
    assert regressions({"a": 30.0, "b": 1.5}, {"a": 10.0, "b": 0.5}) == ["a 30.00 ms (was 10.00)"]
    assert regressions({"a": 30.0}, {}) == []
