"""A Python client for sctk's REST API, for notebooks and scripts.

    from sctk.client import Client

    with Client("http://127.0.0.1:8000", username="ada", password="...") as client:
        client.upload(frame, name="runs")
        model = client.train("runs", target="y", config={"epochs": 200})
        intervals = client.predict(model, new_rows)  # mean, lower, upper, sigma, psi

It talks HTTP only (httpx) and never imports the server's own modules, so that it stays
quick to import in a notebook. Every refusal raises `ApiError`, carrying the problem+json.
"""

from sctk.client.client import Client, ModelRef
from sctk.client.errors import ApiError
from sctk.client.types import (
    BackupCatalog,
    DatasetInfo,
    Evaluation,
    ImportResult,
    JobInfo,
    ModelInfo,
)

__all__ = [
    "ApiError",
    "BackupCatalog",
    "Client",
    "DatasetInfo",
    "Evaluation",
    "ImportResult",
    "JobInfo",
    "ModelInfo",
    "ModelRef",
]
