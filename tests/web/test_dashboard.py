"""The dashboard in headless Chromium against a real server: sign in, alerts appear and are
acknowledged, a backup is taken and listed, a job is followed to its end, a prediction is
drawn with its interval, bad input is answered next to its field, a viewer sees no admin
control and a forged admin request is refused; every page at desktop and phone width, with
no console error."""

from __future__ import annotations

import pytest

from sctk.storage.engine import make_engine, session_scope
from tests.web.support import alerting_on, shown_when_fired

# the browser's behaviour does not depend on the database: SQLite only
pytestmark = [pytest.mark.e2e, pytest.mark.parametrize("backend", ["sqlite"])]

PAGES = ["/", "/ui/metrics", "/ui/jobs", "/ui/operations"]


def open_incident(settings) -> int:
    from sctk.monitoring import incidents

    engine = make_engine(settings)
    try:
        with session_scope(engine) as s:
            return incidents.open_incident(s, "CPU saturated", "warning", actor="tests").id
    finally:
        engine.dispose()


def add_model_and_dataset(settings) -> int:
    """A dataset 'runs' with a feature x, and a tiny model on x (as backup_support does)."""
    import numpy as np
    import pandas as pd

    from sctk.pipeline import store
    from sctk.uq import registry
    from sctk.uq.hybrid import HybridRegressor

    engine = make_engine(settings)
    try:
        with session_scope(engine) as s:
            frame = pd.DataFrame({"x": [float(i) for i in range(25)]})
            frame["y"] = frame["x"] * 3.0 + 1.0
            out = store.Output("runs", frame, "parquet", {"origin": "import", "inputs": []})
            store.store(s, settings.home, [out], "import", "tests")
        X = np.arange(30, dtype=float)[:, None]
        fitted = HybridRegressor(epochs=1, hidden=(4,)).fit(
            X[:20], X[:20, 0], X_cal=X[20:], y_cal=X[20:, 0]
        )
        with session_scope(engine) as s:
            model_id = registry.save(
                s, settings.home, fitted, "tiny", lineage={"features": ["x"], "target": "y"}
            ).id
        from sctk.uq import evaluation

        with session_scope(engine) as s:  # labelled data: the model page's calibration curve
            evaluation.evaluate(s, settings.home, model_id, "runs", alpha=0.2)
        return model_id
    finally:
        engine.dispose()


def test_admin_sees_an_alert_fire_acknowledges_it_and_every_page_is_clean(start_site, browse):
    site = start_site("admin")
    b = browse(site)
    b.login("admin")
    page = b.page
    page.wait_for_selector("#tiles .tile")
    assert page.inner_text("#alerts-tile").endswith("0")

    b.goto("/ui/operations")
    page.wait_for_selector("#alerts >> text=No alert.")
    with alerting_on(site, "memory_percent", 0.5) as alerts:
        # the page polls: the alert appears without a reload
        row = shown_when_fired(b, alerts, "#alerts-table tbody tr:has-text('memory_percent is')")
        assert "firing" in row.inner_text() and "warning level 0.5" in row.inner_text()
        page.click("#alerts-table button.ack")
        page.wait_for_selector("#alerts-table td[data-label=Acknowledged] >> text=ada.admin")
        # silence it: a duration the API cannot read is answered next to the field
        silence = "#alerts-table .row-form"
        page.fill(f"{silence} input[name=duration]", "soon")
        page.click(f"{silence} button[type=submit]")
        page.wait_for_selector(f"{silence} .field-error:not([hidden])")
        assert "soon" in page.inner_text(f"{silence} .field-error")
        page.fill(f"{silence} input[name=duration]", "2h")
        page.click(f"{silence} button[type=submit]")
        page.wait_for_selector("#alerts-table td[data-label='Silenced until'] >> text=UTC")

    # a maintenance task run from the page is recorded and listed
    page.select_option("#maintenance-form select[name=task]", "tmp")
    page.click("#maintenance-form button[type=submit]")
    page.wait_for_selector("#maintenance-table td[data-label=Task] >> text=tmp")
    assert "tmp:" in page.inner_text("#maintenance-result")

    # an incident: its timeline, a note, closing it
    incident = open_incident(site.settings)
    b.refreshed(f"#incidents-table a[href='#incident-{incident}']").click()
    page.fill("#note-form input[name=text]", "restarted the worker")
    page.click("#note-form button[type=submit]")
    page.wait_for_selector("#incident-detail .timeline >> text=restarted the worker")
    page.click("#close-form button[type=submit]")  # empty: the API says what it needs
    slot = "#close-form .field-error[data-error-for=resolution]"
    page.wait_for_selector(f"{slot}:not([hidden])")
    assert page.inner_text(slot).startswith("Invalid resolution")
    page.fill("#close-form input[name=resolution]", "load test ended")
    page.click("#close-form button[type=submit]")
    page.wait_for_selector("#incident-detail h3 >> text=closed")
    assert b.take_errors(allowed_status=(400, 422, 503)) == []

    for path in PAGES:
        b.goto(path)
        page.wait_for_load_state("networkidle")
        name = path.strip("/").split("/")[-1] or "overview"
        if path == "/":
            page.wait_for_selector("#alerts-tile:has-text('1')")
            # this site has no backup passphrase: the overview says so
            page.wait_for_selector("#backup-unconfigured:has-text('Backups are not configured')")
        b.shoot(f"{name}-admin")
    # the metrics page drew its charts from the API
    b.goto("/ui/metrics")
    page.wait_for_selector("#chart-cpu svg.chart path.line", state="attached")
    page.wait_for_selector("#chart-latency svg.chart path.line", state="attached")
    # the alert is marked on the memory chart where it began
    page.wait_for_selector("#chart-memory svg .marker line", state="attached")
    assert "memory_percent is" in (page.text_content("#chart-memory svg .marker title") or "")
    for hours in ("24", "720"):  # the stored aggregates
        page.click(f".picker button[data-hours='{hours}']")
        page.wait_for_selector(f".picker button.on[data-hours='{hours}']")
        page.wait_for_load_state("networkidle")
        assert page.is_hidden("#banner")
    # a 503 from /health/ready is the overview's reading of a failing check, not a page error
    assert b.take_errors(allowed_status=(503,)) == []


def test_admin_takes_a_backup_and_sees_it_listed(start_site, browse, monkeypatch):
    from sctk.backup.location import init_repo
    from tests.backup.backup_support import set_passphrase

    set_passphrase(monkeypatch)  # the server's job processes inherit it
    site = start_site("admin")
    init_repo(site.settings)
    b = browse(site)
    b.login("admin")
    b.goto("/ui/operations")
    page = b.page
    page.wait_for_selector("#backups >> text=No snapshot yet.")
    page.click("#backup-form button[type=submit]")
    page.wait_for_selector("#snapshots-table tbody tr", timeout=120_000)
    assert "succeeded" in page.inner_text("#backup-status")
    assert "unverified" in page.inner_text("#snapshots-table")
    assert "regular" in page.inner_text("#snapshots-table")  # its kind
    assert page.locator("#backup-unconfigured").count() == 0
    page.click("#snapshots-table button:has-text('Verify')")
    page.wait_for_selector("#snapshots-table td[data-label=Verified] .s-verified", timeout=120_000)
    assert "unverified" not in page.inner_text("#snapshots-table")
    assert "succeeded" in page.inner_text("#backup-status")
    b.goto("/")
    page.wait_for_selector("#backup >> text=Snapshot")
    b.shoot("overview-after-backup")
    assert b.take_errors(allowed_status=(503,)) == []


def test_analyst_follows_a_job_and_draws_a_prediction(start_site, browse):
    site = start_site("analyst")
    model_id = add_model_and_dataset(site.settings)
    b = browse(site)
    b.login("analyst")
    b.goto("/ui/jobs")
    page = b.page

    page.select_option("#job-form select[name=kind]", "sleep")
    page.fill("#job-form textarea[name=params]", '{"seconds": 1.5, "steps": 5}')
    page.click("#job-form button[type=submit]")
    page.wait_for_selector("#job-detail[data-final]", timeout=60_000)
    assert page.get_attribute("#job-detail", "data-final") == "succeeded"
    assert page.get_attribute("#job-detail", "data-via") == "websocket"
    assert "100 %" in page.inner_text("#job-progress")
    assert "step 5 of 5" in page.inner_text("#job-detail")

    page.click(f"#models-table a[href='#model-{model_id}']")
    page.wait_for_selector("#model-calibration svg.chart")
    assert "miscalibration area" in page.inner_text("#model-calibration")
    form = "#predict-form"
    page.fill(f"{form} input[name=dataset]", "runs")
    page.fill(f"{form} input[name=alpha]", "0.2")
    page.click(f"{form} button[type=submit]")
    page.wait_for_selector("#prediction-plot svg.chart polygon.band")
    assert page.get_attribute("#prediction-plot", "data-rows") == "25"
    assert "80 % intervals" in page.inner_text("#prediction-summary")
    b.shoot("model-prediction")
    assert b.take_errors() == []

    # bad input: the API's sentence next to the field it is about, the page still there
    def sentence(name: str) -> str:
        slot = f"{form} .field-error[data-error-for={name}]"
        page.wait_for_selector(f"{slot}:not([hidden])")
        return page.inner_text(slot)

    page.fill(f"{form} input[name=alpha]", "1.5")
    page.click(f"{form} button[type=submit]")
    assert "alpha must lie strictly between 0 and 1" in sentence("alpha")

    page.fill(f"{form} input[name=alpha]", "0.1")
    page.fill(f"{form} input[name=dataset]", "no-such-data")
    page.click(f"{form} button[type=submit]")
    assert "no-such-data" in sentence("dataset")
    assert page.is_hidden(f"{form} .field-error[data-error-for=alpha]")

    page.fill(f"{form} input[name=dataset]", "")
    page.click(f"{form} button[type=submit]")
    assert sentence("dataset").startswith("Invalid dataset")
    assert page.is_visible("#prediction-plot svg.chart")  # the last good result stays
    b.shoot("model-bad-input")
    # only the refused requests themselves: 400 out of range, 404 unknown, 422 empty
    assert b.take_errors(allowed_status=(400, 404, 422)) == []


def test_viewer_sees_no_admin_controls_and_a_forged_request_is_refused(start_site, browse):
    site = start_site("viewer")
    b = browse(site)
    # a wrong password: the API's sentence in the form, no page change
    b.page.goto(site.url + "/ui/login")
    b.page.fill("#login-form input[name=username]", site.accounts["viewer"].username)
    b.page.fill("#login-form input[name=password]", "not-the-password")
    b.page.click("#login-form button[type=submit]")
    b.page.wait_for_selector("#login-form .field-error:not([hidden])")
    assert "password" in b.page.inner_text("#login-form .field-error:not([hidden])").lower()
    assert b.take_errors(allowed_status=(401,)) == []
    b.login("viewer")
    page = b.page
    assert page.inner_text("#who-role") == "viewer"
    page.wait_for_selector("#backup >> text=administrators")

    b.goto("/ui/operations")
    page.wait_for_selector("#maintenance-table, #maintenance >> text=No maintenance run")
    for hidden in ("#backups", "#backup-form", "#maintenance-form", "#users", "button.ack"):
        assert page.query_selector(hidden) is None, hidden
    b.shoot("operations-viewer")

    b.goto("/ui/jobs")
    page.wait_for_selector("#models")
    assert page.query_selector("#job-form") is None
    b.goto("/ui/metrics")
    page.wait_for_selector("#chart-cpu svg.chart path.line", state="attached")
    # no page asked for anything the role may not see
    assert b.take_errors(allowed_status=(503,)) == []

    # the page hides the button, the API refuses the request anyway
    forged = page.evaluate(
        """async () => {
            const headers = {Authorization: `Bearer ${sessionStorage.getItem("sctk.token")}`,
                             "Content-Type": "application/json"};
            const out = [];
            for (const url of ["/api/v1/backups", "/api/v1/maintenance/run/tmp"]) {
                const r = await fetch(url, {method: "POST", headers, body: "{}"});
                out.push([r.status, (await r.json()).detail]);
            }
            return out;
        }"""
    )
    assert [status for status, _ in forged] == [403, 403], forged
    assert "needs 'backups.manage'" in forged[0][1]
    assert "needs 'maintenance.run'" in forged[1][1]
    assert b.take_errors(allowed_status=(403, 503)) == []
