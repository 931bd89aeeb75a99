"""`Client`: sctk's REST API from Python, for notebooks and scripts."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, overload

import httpx
import numpy as np
import pandas as pd

from sctk.client.errors import ApiError, unreachable
from sctk.client.progress import JobProgress
from sctk.client.types import (
    BackupCatalog,
    DatasetInfo,
    Evaluation,
    ImportResult,
    JobInfo,
    ModelInfo,
)

API = "/api/v1"
FINISHED = frozenset({"succeeded", "failed", "cancelled", "dead"})
PREDICTIONS = ("mean", "lower", "upper", "sigma", "psi")
# One prediction request holds at most this many rows (the API's own limit is 10,000) and
# this many values (data.max_predict_cells is 1,000,000 by default); larger frames are sent
# in parts.
ROWS_PER_REQUEST = 5_000
CELLS_PER_REQUEST = 500_000
_RELOGIN_MARGIN = 30.0  # seconds before a login JWT expires that the client logs in again
_POLL_FIRST, _POLL_MAX = 0.2, 1.0  # seconds between looks at a job, growing

ModelRef = int | str | Mapping[str, Any]
"""A model: its id, its name (the newest version), or a ModelInfo."""


class Client:
    """A session with an sctk server: datasets, training, predictions, jobs and backups.

    Log in with a username and password (the OAuth2 password flow of
    POST /api/v1/auth/token; the client logs in again when the login expires) or give a
    personal API token (`sctk tokens create`). Every refusal raises `ApiError`, which
    carries the server's problem+json.

        client = Client("http://127.0.0.1:8000", username="ada", password="...")
        client.upload(frame, name="runs")
        model = client.train("runs", target="y")
        intervals = client.predict(model, new_rows)
    """

    def __init__(
        self,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        timeout: float = 60.0,
        verify: bool | str = True,
        transport: httpx.BaseTransport | None = None,
    ):
        """Connect to the server at URL (e.g. http://127.0.0.1:8000, or behind a proxy
        https://host/sctk). VERIFY is httpx's: False, or a CA bundle's path, for a
        self-signed certificate."""
        if token is not None and (username is not None or password is not None):
            raise ValueError("Give either token or username and password, not both.")
        if token is None and (username is None or password is None):
            raise ValueError("Give token, or both username and password.")
        self.url = url.rstrip("/")
        self._username, self._password = username, password
        self._token = token
        self._expires_at = float("inf") if token is not None else 0.0
        self._http = httpx.Client(
            base_url=self.url, timeout=timeout, verify=verify, transport=transport
        )
        if token is None:
            try:
                self._login()  # wrong credentials are reported here, not at the first call
            except BaseException:
                self._http.close()
                raise

    # --- the session ----------------------------------------------------------------------

    def close(self) -> None:
        """Close the connections (the client is unusable afterwards)."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        who = self._username if self._username is not None else "token"
        return f"Client({self.url!r}, {who})"

    def _login(self) -> None:
        form = {"grant_type": "password", "username": self._username, "password": self._password}
        started = time.monotonic()
        answer = self._send("POST", f"{API}/auth/token", data=form, authenticated=False)
        self._token = answer["access_token"]
        lifetime = float(answer["expires_in"])
        self._expires_at = started + lifetime - min(_RELOGIN_MARGIN, lifetime / 4)

    def _send(self, method: str, path: str, *, authenticated: bool = True, **kwargs: Any) -> Any:
        """The JSON of a 2xx answer to METHOD PATH; ApiError for anything else."""
        headers = dict(kwargs.pop("headers", None) or {})
        if authenticated:
            if time.monotonic() >= self._expires_at:
                self._login()
            headers["Authorization"] = f"Bearer {self._token}"
        try:
            response = self._http.request(method, path, headers=headers, **kwargs)
        except httpx.TransportError as exc:
            raise unreachable(self.url, exc) from None
        if response.is_error:
            raise ApiError.from_response(response)
        return response.json() if response.content else None

    # --- datasets -------------------------------------------------------------------------

    def upload(
        self,
        data: pd.DataFrame | str | os.PathLike[str],
        name: str | None = None,
        *,
        schema: str | None = None,
        schema_of: str | None = None,
        replace: bool = False,
    ) -> ImportResult:
        """Import DATA as dataset NAME: a DataFrame (sent as Parquet; NAME is required) or a
        file (.csv, .parquet, .jsonl, .ndjson, .npz; NAME defaults to its stem). SCHEMA is
        a schema's TOML text, SCHEMA_OF a dataset whose schema to check against. REPLACE
        deletes a dataset of that name first (so that a notebook can run again)."""
        if isinstance(data, pd.DataFrame) and name is None:
            raise ValueError("Give a name to upload a DataFrame under.")
        params = {"name": name, "schema": schema, "schema_of": schema_of}
        if replace:
            stem = name if name is not None else Path(str(data)).stem
            try:
                self.delete_dataset(stem)
            except ApiError as exc:
                if exc.status != 404:
                    raise
        if isinstance(data, pd.DataFrame):
            buffer = io.BytesIO()
            data.to_parquet(buffer)
            params["filename"] = f"{name}.parquet"
            return self._post_file(params, buffer.getvalue())
        path = Path(data).expanduser()
        params["filename"] = path.name
        with path.open("rb") as fh:  # streamed: files may be large
            return self._post_file(params, fh)

    def _post_file(self, params: dict[str, Any], content: Any) -> ImportResult:
        query = {k: v for k, v in params.items() if v is not None}
        headers = {"Content-Type": "application/octet-stream"}
        return self._send("POST", f"{API}/datasets", params=query, content=content, headers=headers)

    def datasets(self) -> list[DatasetInfo]:
        """The stored datasets."""
        return self._send("GET", f"{API}/datasets")

    def dataset(self, name: str) -> DatasetInfo:
        """One dataset, with its lineage."""
        return self._send("GET", f"{API}/datasets/{_segment(name)}")

    def delete_dataset(self, name: str, *, force: bool = False) -> DatasetInfo:
        """Delete a dataset and its file (FORCE: even when others derive from it)."""
        params = {"force": "true"} if force else None
        return self._send("DELETE", f"{API}/datasets/{_segment(name)}", params=params)

    # --- models ---------------------------------------------------------------------------

    def models(self) -> list[ModelInfo]:
        """The registered models."""
        return self._send("GET", f"{API}/models")

    def model(self, model: ModelRef) -> ModelInfo:
        """One model: by id, by name (its newest version), or a ModelInfo afresh."""
        return self._send("GET", f"{API}/models/{self._model_id(model)}")

    def _model_id(self, model: ModelRef) -> int:
        if isinstance(model, Mapping):
            return int(model["id"])
        if isinstance(model, int):
            return model
        versions = [m for m in self.models() if m["name"] == model]
        if not versions:
            raise ApiError(
                {
                    "title": "Not found",
                    "status": 404,
                    "detail": f"No model is named '{model}'; Client.models() lists them.",
                }
            )
        return max(versions, key=lambda m: m["version"])["id"]

    @overload
    def train(
        self,
        dataset: str,
        target: str | None = ...,
        features: Sequence[str] | None = ...,
        config: Mapping[str, Any] | None = ...,
        name: str | None = ...,
        *,
        calibration: float | str = ...,
        wait: Literal[True] = ...,
        progress: bool = ...,
        timeout: float | None = ...,
    ) -> ModelInfo: ...

    @overload
    def train(
        self,
        dataset: str,
        target: str | None = ...,
        features: Sequence[str] | None = ...,
        config: Mapping[str, Any] | None = ...,
        name: str | None = ...,
        *,
        calibration: float | str = ...,
        wait: Literal[False],
        progress: bool = ...,
        timeout: float | None = ...,
    ) -> JobInfo: ...

    def train(
        self,
        dataset: str,
        target: str | None = None,
        features: Sequence[str] | None = None,
        config: Mapping[str, Any] | None = None,
        name: str | None = None,
        *,
        calibration: float | str = 0.25,
        wait: bool = True,
        progress: bool = True,
        timeout: float | None = None,
    ) -> ModelInfo | JobInfo:
        """Train a model on DATASET to predict TARGET from FEATURES (default: the other
        numeric columns), as a uq.train job on the server.

        CONFIG holds the model's parameters (epochs, hidden, ...; see the API reference),
        NAME the model's name (default DATASET-TARGET), CALIBRATION the share of rows held
        out to calibrate the intervals, or a calibration dataset's name. With WAIT the call
        returns the trained model once the job succeeds (showing its PROGRESS; ApiError
        when it fails or TIMEOUT seconds pass); otherwise the queued job at once.
        """
        body: dict[str, Any] = {"dataset": dataset, "calibration": calibration}
        if target is not None:
            body["target"] = target
        if features is not None:
            body["features"] = list(features)
        if config is not None:
            body["config"] = dict(config)
        if name is not None:
            body["name"] = name
        accepted = self._send("POST", f"{API}/models", json=body)
        if not wait:
            return self.job(accepted["job"])
        done = self.wait(accepted["job"], timeout=timeout, progress=progress)
        return (done["result"] or {})["model"]

    def predict(
        self, model: ModelRef, data: pd.DataFrame | str, *, alpha: float = 0.1
    ) -> pd.DataFrame:
        """Predictions of MODEL with intervals that cover 1 - ALPHA of the truth.

        DATA is a DataFrame holding the model's features (other columns are kept, not sent)
        or a stored dataset's name. The answer is DATA with the columns mean, lower, upper,
        sigma and psi (the confidence score) beside the inputs (replacing columns of those
        names); for a dataset, those columns alone, one row per dataset row. `attrs` holds
        the model, alpha and whether the server answered from its cache.
        """
        info = model if isinstance(model, Mapping) else self.model(model)
        url = f"{API}/models/{int(info['id'])}/predict"
        if isinstance(data, str):
            answer = self._send("POST", url, json={"dataset": data, "alpha": alpha})
            out = pd.DataFrame({key: answer[key] for key in PREDICTIONS})
            out.attrs.update(model=answer["model"], alpha=alpha, cached=answer["cached"])
            return out
        features = (info.get("lineage") or {}).get("features")
        # the model's features the frame holds; a missing one is for the server to name
        columns = [c for c in features if c in data.columns] if features else list(data.columns)
        rows = _rows(data, columns)
        step = max(1, min(ROWS_PER_REQUEST, CELLS_PER_REQUEST // max(1, len(columns))))
        parts = [
            self._send("POST", url, json={"rows": rows[i : i + step], "alpha": alpha})
            for i in range(0, len(rows), step)
        ]
        out = data.copy()
        for key in PREDICTIONS:
            out[key] = np.concatenate([np.asarray(p[key], dtype=float) for p in parts] or [[]])
        out.attrs.update(alpha=alpha, cached=all(p["cached"] for p in parts))
        out.attrs["model"] = parts[0]["model"] if parts else _summary(info)
        return out

    def evaluate(self, model: ModelRef, dataset: str, *, alpha: float = 0.1) -> Evaluation:
        """Score MODEL's intervals at ALPHA on DATASET (which holds the target): coverage,
        width, interval score, NLL, CRPS, the calibration curve. The server keeps the report
        (the dashboard's calibration panel shows the newest)."""
        body = {"dataset": dataset, "alpha": alpha}
        return self._send("POST", f"{API}/models/{self._model_id(model)}/evaluate", json=body)

    # --- jobs -----------------------------------------------------------------------------

    def jobs(
        self, status: str | None = None, *, owner: str | None = None, limit: int = 100
    ) -> list[JobInfo]:
        """Jobs, newest first; only those with STATUS, or OWNER's, when given."""
        params = {"status": status, "owner": owner, "limit": limit}
        query = {k: v for k, v in params.items() if v is not None}
        return self._send("GET", f"{API}/jobs", params=query)

    def submit(
        self, kind: str, params: Mapping[str, Any] | None = None, *, wait: bool = False
    ) -> JobInfo:
        """Queue a job of KIND (GET /api/v1/jobs/kinds lists them) with PARAMS; with WAIT,
        the job once it has succeeded (see `wait`)."""
        job = self._send("POST", f"{API}/jobs", json={"kind": kind, "params": dict(params or {})})
        return self.wait(job) if wait else job

    def job(self, job: int | Mapping[str, Any]) -> JobInfo:
        """One job, as it is now."""
        return self._send("GET", f"{API}/jobs/{_job_id(job)}")

    def cancel(self, job: int | Mapping[str, Any]) -> JobInfo:
        """Ask a queued or running job to stop."""
        return self._send("POST", f"{API}/jobs/{_job_id(job)}/cancel")

    def wait(
        self,
        job: int | Mapping[str, Any],
        *,
        timeout: float | None = None,
        progress: bool = True,
    ) -> JobInfo:
        """Wait for JOB to finish, showing its PROGRESS; the succeeded job, or ApiError when
        it failed, was cancelled or TIMEOUT seconds passed (the job itself runs on)."""
        job_id = _job_id(job)
        shown = JobProgress() if progress else None
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = _POLL_FIRST
        try:
            while True:
                state = self.job(job_id)
                if shown is not None:
                    shown.show(state)
                if state["status"] in FINISHED:
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    raise ApiError(
                        {
                            "title": "Timed out",
                            "status": None,
                            "detail": f"Job {job_id} is still {state['status']} after "
                            f"{timeout:g} s; it runs on (Client.wait({job_id}) waits again).",
                            "job": job_id,
                        }
                    )
                time.sleep(pause)
                pause = min(_POLL_MAX, pause * 1.5)
        finally:
            if shown is not None:
                shown.close()
        if state["status"] != "succeeded":
            reason = state.get("error") or state.get("message") or "no reason was recorded"
            raise ApiError(
                {
                    "title": f"Job {state['status']}",
                    "status": None,
                    "detail": f"Job {job_id} ({state['kind']}) {state['status']}: {reason}",
                    "job": job_id,
                }
            )
        return state

    # --- backups --------------------------------------------------------------------------

    def backups(self, *, runs: int = 20) -> BackupCatalog:
        """The backup snapshots (newest first) and the last RUNS backup runs (admins)."""
        return self._send("GET", f"{API}/backups", params={"runs": runs})


def _summary(model: Mapping[str, Any]) -> dict[str, Any]:
    return {key: model[key] for key in ("id", "name", "version") if key in model}


def _job_id(job: int | Mapping[str, Any]) -> int:
    if isinstance(job, Mapping):
        return int(job.get("id", job.get("job", 0)))
    return int(job)


def _segment(name: str) -> str:
    """NAME as one path segment (a name holding '/' must not become two)."""
    from urllib.parse import quote

    return quote(name, safe="")


def _rows(frame: pd.DataFrame, columns: list[str]) -> list[dict[str, Any]]:
    """FRAME's COLUMNS as JSON rows: numbers as floats, missing values as null (which the
    server refuses, naming the column); other values as text, for the server to name."""
    values: list[list[Any]] = []
    for column in columns:
        series = frame[column]
        if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
            numbers = series.to_numpy(dtype=float, na_value=np.nan).tolist()
            values.append([None if v != v else v for v in numbers])  # NaN != NaN
        else:
            values.append(series.astype(str).tolist())
    return [dict(zip(columns, row, strict=True)) for row in zip(*values, strict=True)]
