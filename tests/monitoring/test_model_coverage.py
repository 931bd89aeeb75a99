"""Each model's interval coverage on recently labelled data, exported at /metrics."""

from __future__ import annotations

import pandas as pd

from sctk.monitoring.appmetrics import AppMetrics
from sctk.pipeline import store
from sctk.storage.engine import session_scope
from sctk.uq import evaluation


def test_the_newest_evaluation_gives_the_model_coverage_gauge(settings, engine):
    import numpy as np

    from sctk.uq import registry
    from sctk.uq.hybrid import HybridRegressor

    X = np.arange(60, dtype=float)[:, None]
    fitted = HybridRegressor(epochs=2, hidden=(4,)).fit(X[:30], X[:30, 0], X[30:], X[30:, 0])
    with session_scope(engine) as s:
        model_id = registry.save(
            s, settings.home, fitted, "tiny", lineage={"features": ["x"], "target": "y"}
        ).id
    frame = pd.DataFrame({"x": [float(i) for i in range(200)]})
    frame["y"] = frame["x"]
    with session_scope(engine) as s:
        out = store.Output("labelled", frame, "parquet", {"origin": "import", "inputs": []})
        store.store(s, settings.home, [out], "import", "tests")
    assert b"sctk_model_interval_coverage" not in AppMetrics(engine, home=settings.home).render()

    with session_scope(engine) as s:
        scores = evaluation.evaluate(s, settings.home, model_id, "labelled", alpha=0.2)
    text = AppMetrics(engine, home=settings.home).render().decode()
    line = next(x for x in text.splitlines() if x.startswith("sctk_model_interval_coverage{"))
    assert 'model="tiny"' in line and 'version="1"' in line
    assert abs(float(line.rsplit(" ", 1)[1]) - scores["coverage"]) < 1e-9
    assert 'sctk_model_interval_nominal_coverage{model="tiny",version="1"} 0.8' in text
