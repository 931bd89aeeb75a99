"""examples/uq_client.ipynb runs from top to bottom in a real Jupyter kernel against a served
sctk: a CSV to a trained model, calibrated intervals, their coverage and a plot."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

# one worker for the package's tests, so that they share one served sctk (see conftest.py)
pytestmark = pytest.mark.xdist_group("client-server")
NOTEBOOK = Path(__file__).parents[2] / "examples" / "uq_client.ipynb"


def _text(cell) -> str:
    parts = []
    for output in cell.get("outputs", []):
        parts.append(output.get("text", ""))
        parts.append(output.get("data", {}).get("text/plain", ""))
        parts.append(output.get("data", {}).get("text/html", ""))
    return "\n".join(parts)


def test_the_example_notebook_runs_against_a_server(served, monkeypatch):
    account = served.accounts["analyst"]
    # the kernel inherits the environment: the notebook reads its server and login from it
    monkeypatch.setenv("SCTK_URL", served.url)
    monkeypatch.setenv("SCTK_USERNAME", account.username)
    monkeypatch.setenv("SCTK_PASSWORD", account.password)
    monkeypatch.setenv("SCTK_EXAMPLE_EPOCHS", "5")  # a tiny model: seconds, not minutes
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": NOTEBOOK.parent}},
    ).execute()  # raises CellExecutionError, with the cell's traceback, when a cell fails

    code = [c for c in notebook.cells if c.cell_type == "code"]
    every = "\n".join(_text(c) for c in code)
    assert "225 runs to train on, 75 held out" in every
    # the training job's progress, shown in place
    assert "<progress" in every and "uq.train: succeeded 100%" in every
    assert "of the held-out runs lie inside their 90 % interval" in every
    assert "'coverage'" in every and "'interval_score'" in every
    # the plot, as an image
    images = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) == 1
    # the last cell shows a refusal as the server worded it
    assert "400" in _text(code[-1]) and "lacks" in _text(code[-1])
