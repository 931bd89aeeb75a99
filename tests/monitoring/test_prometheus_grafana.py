"""deploy/prometheus and deploy/grafana: promtool accepts the scrape config and the rules, the
rules fire as sctk's built-in defaults do, and every metric the dashboard and the rules name is
one a real app exposes at /metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from sctk import config
from sctk.api.app import create_app
from sctk.monitoring.appmetrics import SYSTEM
from sctk.monitoring.rules import AlertSettings
from sctk.storage.engine import session_scope
from sctk.storage.models import BackupSnapshot, MaintenanceRun
from tests.helpers import LiveServer, wait_until
from tests.security.conftest import bearer

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "sctk.json"
METRIC = re.compile(r"\b(sctk_[a-z0-9_]+)\b")
# exported, and fine to leave off the dashboard: the bus exists only in some processes, and
# the hit ratio is computed there from the hit and miss counters
NOT_CHARTED = {"sctk_bus_messages_total", "sctk_uq_cache_hit_ratio"}


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    program = shutil.which("promtool")
    assert program, "promtool is not installed (Debian's 'prometheus' package; .ci/run adds it)"
    return subprocess.run(
        [program, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def rules() -> list[dict]:
    doc = yaml.safe_load((PROMETHEUS / "sctk-rules.yml").read_text())
    return [r for group in doc["groups"] for r in group["rules"]]


def panels() -> list[dict]:
    doc = json.loads(DASHBOARD.read_text())
    return [p for p in doc["panels"] if p["type"] != "row"]


def expressions() -> list[str]:
    return [t["expr"] for p in panels() for t in p["targets"]]


def test_promtool_accepts_the_scrape_config_and_the_rules_fire_as_tested(tmp_path):
    # check config opens the token file the scrape config names: give it one
    token = tmp_path / "sctk.token"
    token.write_text("sctk_example_token\n")
    text = (PROMETHEUS / "prometheus.yml").read_text()
    assert "credentials_file: /etc/prometheus/sctk.token" in text
    (tmp_path / "prometheus.yml").write_text(text.replace("/etc/prometheus/sctk.token", str(token)))
    shutil.copy(PROMETHEUS / "sctk-rules.yml", tmp_path)

    done = promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 1 rule files found" in done.stdout + done.stderr
    done = promtool("check", "rules", "sctk-rules.yml", cwd=PROMETHEUS)
    assert done.returncode == 0, done.stdout + done.stderr
    done = promtool("test", "rules", "sctk-rules.test.yml", cwd=PROMETHEUS)
    assert done.returncode == 0, done.stdout + done.stderr

    # a scrape config without its token file is refused: the check is not a formality
    (tmp_path / "prometheus.yml").write_text(text)
    done = promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert done.returncode != 0 and "sctk.token" in done.stdout + done.stderr


def test_the_rules_are_the_built_in_defaults():
    defaults = AlertSettings()
    by_level = {(r["labels"].get("rule"), r["labels"]["severity"]): r for r in rules()}
    expected = set()
    for rule in defaults.rules:
        prom = SYSTEM[rule.metric][0]
        for severity, level in rule.levels():
            expected.add((rule.name, severity))
            mine = by_level[(rule.name, severity)]
            assert mine["expr"] == f"{prom} {rule.op} {level:g}", mine
            assert mine["for"] == f"{rule.for_seconds / 60:g}m", mine
    for trend in defaults.trend_rules:
        prom = SYSTEM[trend.metric][0]
        window = f"{trend.window_seconds / 60:g}m"
        limit = trend.limit if trend.limit is not None else defaults.warning_level(trend.metric)
        func = "stddev_over_time" if trend.kind == "variability" else "avg_over_time"
        expected.add((trend.name, trend.severity))
        mine = by_level[(trend.name, trend.severity)]
        assert mine["expr"] == f"{func}({prom}[{window}]) > {limit:g}", mine
    assert {key for key in by_level if key[0] is not None} == expected


@pytest.fixture
def token(engine) -> str:
    from sctk.security import tokens, users

    with session_scope(engine) as session:
        user = users.create(session, "prom", "Quiet-Lantern-Orbit-47", "viewer", actor="test")
        plaintext, _ = tokens.create(session, user, "scraper", None, actor="test")
    return plaintext


def _evaluated_model(settings, engine) -> None:
    """A tiny model with an evaluation on labelled data: its coverage gauge is exported."""
    from sctk.pipeline import store
    from sctk.uq import evaluation, registry
    from sctk.uq.hybrid import HybridRegressor

    X = np.arange(40, dtype=float)[:, None]
    fitted = HybridRegressor(epochs=2, hidden=(4,)).fit(X[:20], X[:20, 0], X[20:], X[20:, 0])
    with session_scope(engine) as s:
        model_id = registry.save(
            s, settings.home, fitted, "tiny", lineage={"features": ["x"], "target": "y"}
        ).id
    frame = pd.DataFrame({"x": np.arange(50, dtype=float), "y": np.arange(50, dtype=float)})
    with session_scope(engine) as s:
        out = store.Output("labelled", frame, "parquet", {"origin": "import", "inputs": []})
        store.store(s, settings.home, [out], "import", "tests")
    with session_scope(engine) as s:
        evaluation.evaluate(s, settings.home, model_id, "labelled", alpha=0.2)


@pytest.fixture
def exposed(settings, engine, token) -> Iterator[set[str]]:
    """The sample names a served app's /metrics gives once it has answered requests, run a
    maintenance task, taken a backup and evaluated a model."""
    _evaluated_model(settings, engine)
    now = datetime.now(UTC)
    with session_scope(engine) as s:
        s.add(MaintenanceRun(task="vacuum", status="ok", started_at=now, finished_at=now))
        s.add(
            BackupSnapshot(id="ab" * 32, time=now - timedelta(hours=1), label="daily", manifest={})
        )
    fast = {"monitor": {"interval_seconds": 0.2}}
    app = create_app(config.load(settings.home, fast).settings, collect=True)
    with LiveServer(app) as live, live.client(headers=bearer(token)) as http:
        wait_until(lambda: app.state.collector.samples >= 2, what="the collector's samples")
        assert http.get("/api/v1/version").status_code == 200
        r = http.get("/metrics")
        assert r.status_code == 200, r.text
    yield {s.name for f in text_string_to_metric_families(r.text) for s in f.samples}


@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_dashboard_and_the_rules_name_only_metrics_sctk_exposes(exposed, tmp_path, backend):
    used = {m for expr in expressions() for m in METRIC.findall(expr)}
    in_rules = {m for r in rules() for m in METRIC.findall(r["expr"])}
    assert used and in_rules
    assert used - exposed == set(), "the dashboard names metrics /metrics does not give"
    assert in_rules - exposed == set(), "the rules name metrics /metrics does not give"
    # and it charts every family sctk exports (the request counter, the latency histogram,
    # jobs, queue depth, backup age, maintenance, model coverage, the system)
    families = {
        re.sub(r"_(bucket|count|sum)$", "", name)
        for name in exposed
        if name.startswith("sctk_") and not name.endswith("_created")
    }
    charted = {re.sub(r"_(bucket|count|sum)$", "", name) for name in used}
    assert families - charted - NOT_CHARTED == set()

    # every expression is PromQL promtool parses (as recording rules of a scratch file)
    scratch = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:expr_{i}", "expr": e}
                    for i, e in enumerate(expressions())
                ],
            }
        ]
    }
    (tmp_path / "dashboard.yml").write_text(yaml.safe_dump(scratch))
    done = promtool("check", "rules", "dashboard.yml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_dashboard_is_importable_grafana_json():
    doc = json.loads(DASHBOARD.read_text())
    assert doc["uid"] == "sctk-overview" and doc["title"] == "sctk"
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels():
        grid = p["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0, p["title"]
        assert p["datasource"]["uid"] == "${datasource}" and p["targets"], p["title"]
        assert all('instance=~"$instance"' in t["expr"] for t in p["targets"]), p["title"]
    # panels do not overlap
    cells = set()
    for p in doc["panels"]:
        g = p["gridPos"]
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not mine & cells, p["title"]
        cells |= mine
