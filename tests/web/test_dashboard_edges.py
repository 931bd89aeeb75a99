"""The dashboard's rough edges, in headless Chromium against one real server for the module:
the prediction form's default dataset, the calibration panel of an evaluation written with
--out, the alerts card at 1400 px, regular backups apart from safety snapshots, a backup
job's final message, and the operations report's time axis."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta

import pytest

from sctk import config
from sctk.storage.engine import make_engine, session_scope
from tests.web.conftest import DESKTOP, SCREENSHOTS, Browsing, Site, open_browsing, serve_site
from tests.web.support import alerting_on, shown_when_fired

# one served site for the whole module: its tests stay on one xdist worker
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("web-edges")]


def seed(settings) -> dict[str, int]:
    """Datasets 'runs' and 'samples' (x, y) and 'calendar' (no x); a model 'tiny' on x,
    trained on 'runs' and evaluated into a directory outside the data directory (--out);
    a model 'wide' on x and z, which no dataset holds."""
    import numpy as np
    import pandas as pd

    from sctk.pipeline import store
    from sctk.uq import evaluation, registry
    from sctk.uq.hybrid import HybridRegressor

    frame = pd.DataFrame({"x": [float(i) for i in range(25)]})
    frame["y"] = frame["x"] * 3.0 + 1.0
    X = np.arange(30, dtype=float)[:, None]
    fitted = HybridRegressor(epochs=1, hidden=(4,)).fit(
        X[:20], X[:20, 0], X_cal=X[20:], y_cal=X[20:, 0]
    )
    engine = make_engine(settings)
    try:
        with session_scope(engine) as s:
            outputs = [
                store.Output("samples", frame, "parquet", {"origin": "import", "inputs": []}),
                store.Output(
                    "calendar",
                    pd.DataFrame({"day": [1.0, 2.0, 3.0]}),
                    "parquet",
                    {"origin": "import", "inputs": []},
                ),
                store.Output("runs", frame, "parquet", {"origin": "import", "inputs": []}),
            ]
            store.store(s, settings.home, outputs, "import", "tests")
            tiny = registry.save(
                s,
                settings.home,
                fitted,
                "tiny",
                lineage={"features": ["x"], "target": "y", "dataset": {"name": "runs"}},
            ).id
            wide = registry.save(
                s, settings.home, fitted, "wide", lineage={"features": ["x", "z"], "target": "y"}
            ).id
        with session_scope(engine) as s:  # what `sctk uq evaluate tiny --out DIR` does
            elsewhere = settings.home.parent / "elsewhere"
            evaluation.evaluate(s, settings.home, tiny, "runs", alpha=0.2, out_dir=elsewhere)
    finally:
        engine.dispose()
    return {"tiny": tiny, "wide": wide}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[tuple[Site, dict[str, int]]]:
    """A data directory with a backup passphrase file, a regular backup and a safety
    snapshot, the seed's datasets and models; served with an admin account."""
    from sctk.backup.create import create_backup
    from sctk.backup.location import init_repo
    from sctk.ops.config_edit import set_value
    from sctk.ops.init_home import init_home
    from sctk.runtime import Runtime
    from tests.backup.backup_support import PASSPHRASE

    home = tmp_path_factory.mktemp("edges") / "home"
    init_home(home)
    key = home.parent / "backup.key"
    key.write_text(PASSPHRASE + "\n")
    key.chmod(0o600)
    # a file, not the environment: the served app's job processes read it from sctk.toml
    set_value(config.load(home).settings, "backup.passphrase_file", str(key), actor="tests")
    settings = config.load(home).settings
    init_repo(settings)
    with Runtime(settings) as rt:
        create_backup(rt, "manual", actor="tests")
        create_backup(rt, "pre-update", actor="tests")  # what a restore takes first
    models = seed(settings)
    with ExitStack() as stack:
        yield serve_site(stack, settings, "admin"), models


@pytest.fixture(scope="module")
def signed_in(browser, site) -> Iterator[Browsing]:
    """One page signed in as the admin for the module (signing in costs seconds)."""
    context, b = open_browsing(browser, site[0])
    b.login("admin")
    yield b
    context.close()


@pytest.fixture
def admin(signed_in) -> Iterator[Browsing]:
    """The module's signed-in page, at desktop size and with no console error left over."""
    signed_in.page.set_viewport_size(DESKTOP)
    signed_in.errors.clear()
    yield signed_in


def show_model(b: Browsing, model_id: int, name: str) -> None:
    b.goto("/ui/jobs")
    b.page.click(f"#models-table a[href='#model-{model_id}']")
    b.page.wait_for_selector(f"#model-detail h2:has-text('Model {name} ')")


def test_the_prediction_form_starts_on_a_dataset_the_model_reads(site, admin):
    _, models = site
    page = admin.page
    show_model(admin, models["tiny"], "tiny")
    form = "#predict-form"
    # 'calendar' comes first but lacks x, 'samples' fits too: the one it was trained on
    assert page.input_value(f"{form} input[name=dataset]") == "runs"
    offered = page.eval_on_selector_all("#dataset-names option", "os => os.map(o => o.value)")
    assert offered == ["runs", "samples"]
    assert page.is_hidden(f"{form} .field-error[data-error-for=dataset]")
    page.click(f"{form} button[type=submit]")  # nothing chosen: it just works
    page.wait_for_selector("#prediction-plot svg.chart polygon.band")
    assert page.get_attribute("#prediction-plot", "data-rows") == "25"
    assert page.is_hidden(f"{form} .field-error[data-error-for=dataset]")
    admin.shoot("model-default-dataset")

    # no stored dataset has 'z': no default, and a sentence rather than an error
    show_model(admin, models["wide"], "wide")
    assert page.input_value(f"{form} input[name=dataset]") == ""
    assert "No stored dataset has the column(s) x, z" in page.inner_text("#predict-hint")
    assert page.is_hidden(f"{form} .field-error[data-error-for=dataset]")
    assert admin.take_errors() == []


def test_the_calibration_panel_finds_an_evaluation_written_with_out(site, admin):
    _, models = site
    page = admin.page
    show_model(admin, models["tiny"], "tiny")
    page.wait_for_selector("#model-calibration svg.chart")
    text = page.inner_text("#model-calibration")
    assert "On runs" in text and "alpha 0.2" in text and "miscalibration area" in text
    # the API says where the data came from, never where on the server the report lies
    body = page.evaluate(
        """async (id) => {
            const headers = {Authorization: `Bearer ${sessionStorage.getItem("sctk.token")}`};
            return await (await fetch(`/api/v1/models/${id}/evaluation`, {headers})).text();
        }""",
        models["tiny"],
    )
    assert "elsewhere" not in body and "written_to" not in body
    admin.shoot("model-calibration-out")
    assert admin.take_errors() == []


def test_acknowledge_is_within_the_alerts_card_at_1400_px(site, admin):
    page = admin.page
    admin.goto("/ui/operations")
    with alerting_on(site[0], "memory_percent", 0.5) as alerts:
        shown_when_fired(admin, alerts, "#alerts-table button.ack")
        for width in (1400, 1280, 1024, 720, 641):
            page.set_viewport_size({"width": width, "height": 900})
            # the button lies inside the card, and its table needs no sideways scrolling
            geometry = page.evaluate(
                """() => {
                    const b = document.querySelector("#alerts-table button.ack");
                    const card = document.getElementById("alerts");
                    const scroller = b.closest(".scroll");
                    return {button: b.getBoundingClientRect().right,
                            card: card.getBoundingClientRect().right,
                            hidden: scroller.scrollWidth - scroller.clientWidth};
                }"""
            )
            assert geometry["button"] <= geometry["card"], (width, geometry)
            assert geometry["hidden"] <= 1, (width, geometry)
            if width == 1400:
                shot = SCREENSHOTS / "operations-alerts-1400.png"
                page.screenshot(path=str(shot), full_page=True)
        page.set_viewport_size({"width": 1400, "height": 900})
        page.click("#alerts-table button.ack")
        page.wait_for_selector("#alerts-table td[data-label=Acknowledged] >> text=ada.admin")
        admin.shoot("operations-alerts")
    assert admin.take_errors(allowed_status=(503,)) == []


def rows(page, selector: str) -> list[str]:
    return page.eval_on_selector_all(f"{selector} tbody tr", "rs => rs.map(r => r.innerText)")


def test_the_backups_table_keeps_safety_snapshots_apart(site, admin):
    page = admin.page
    admin.goto("/ui/operations")
    table = "#snapshots-table"
    page.wait_for_selector(f"{table} tbody tr")
    assert page.get_attribute("#snapshot-filter button.on", "data-kind") == "regular"
    regular = rows(page, table)
    assert regular and not any("pre-update" in r for r in regular)
    assert all("regular" in r for r in regular)

    page.click("#snapshot-filter button[data-kind=safety]")
    page.wait_for_selector("#backups [data-view=safety]")
    safety = rows(page, table)
    assert len(safety) == 1 and "pre-update" in safety[0] and "safety" in safety[0]
    assert page.inner_text("#snapshot-filter button[data-kind=safety]") == "Safety snapshots (1)"
    admin.shoot("operations-safety-snapshots")

    page.click("#snapshot-filter button[data-kind=all]")
    page.wait_for_selector("#backups [data-view=all]")
    assert len(rows(page, table)) == len(regular) + 1
    assert admin.take_errors(allowed_status=(503,)) == []


def test_a_finished_backup_job_says_its_final_size(site, admin):
    page = admin.page
    admin.goto("/ui/operations")
    page.wait_for_selector("#snapshots-table tbody tr")
    page.click("#backup-form button[type=submit]")
    page.wait_for_selector("#backup-status:has-text('succeeded')", timeout=120_000)
    said = page.inner_text("#backup-status")
    job_id = int(re.search(r"Backup job (\d+)", said).group(1))
    newest = page.evaluate(
        """async (id) => {
            const headers = {Authorization: `Bearer ${sessionStorage.getItem("sctk.token")}`};
            const get = async (url) => (await fetch(url, {headers})).json();
            const job = await get(`/api/v1/jobs/${id}`);
            return {job, catalog: await get("/api/v1/backups")};
        }""",
        job_id,
    )
    job = newest["job"]
    taken = job["result"]["snapshot"]["id"]
    snap = next(s for s in newest["catalog"]["snapshots"] if s["id"] == taken)
    # the job's own message: the snapshot and its size, not "N of M bytes" read so far
    assert job["message"].startswith(f"Snapshot {snap['short_id']} (manual)")
    assert f"{snap['files']} files, {snap['size']} bytes" in job["message"]
    assert " of " not in job["message"] and job["progress"] == 1.0
    assert job["message"] in said
    admin.shoot("operations-backup-done")
    assert admin.take_errors(allowed_status=(503,)) == []


def test_the_operations_report_charts_span_its_period(site, browse):
    from matplotlib.dates import num2date

    from sctk.ops import reports
    from sctk.storage.models import MaintenanceRun

    served, _ = site
    end = datetime.now(UTC)
    engine = make_engine(served.settings)
    try:
        with session_scope(engine) as s:  # one point in the month: a single audit
            s.add(
                MaintenanceRun(
                    task="compliance_audit",
                    status="ok",
                    trigger="manual",
                    started_at=end - timedelta(days=3),
                    finished_at=end - timedelta(days=3),
                    summary="score 90",
                    details={"score": 90},
                )
            )
    finally:
        engine.dispose()
    report = reports.build(served.settings, "month", end=end)
    assert len(report.series["audit score"]) == 1
    fig = reports.chart("audit score", report.series["audit score"], report.start, report.end)
    lo, hi = (num2date(v).date() for v in fig.axes[0].get_xlim())
    # the month, not the four years around a lone point
    assert (lo, hi) == (report.start.date(), report.end.date() + timedelta(days=1))
    fig.canvas.draw()
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels() if t.get_text()]
    assert len(labels) >= 3, labels

    path = reports.write(served.settings, report, "html")
    b = browse(served)
    b.page.goto(path.as_uri())
    loaded = "() => document.images.length > 0 && [...document.images].every(i => i.naturalWidth)"
    b.page.wait_for_function(loaded)
    b.shoot("operations-report")
    assert b.take_errors() == []
