"""The model registry: fitted models on disk and in the `uq_models` table.

Two kinds: "tabular" (HybridRegressor, feature vectors) and "field" (FieldHybridRegressor,
velocity fields [B, C, H, W]; its state is described in sctk.uq.field_state).

A model is saved to <home>/results/models/NAME/vVERSION/model.pt as a plain dict of tensors,
numbers and strings (torch.save; loaded with weights_only=True, so opening a model file never
runs code from it). The physics function is stored by its registered 'module:function'
name, never pickled, and looked up in sctk.uq.physics_registry when the model is loaded: a
file naming anything else is refused. The file is written to a temporary name, fsynced and
renamed into place once its row is flushed; its sha256 is recorded and checked on every
load, so a file changed on disk is refused rather than trusted.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from sctk import crashpoints
from sctk.errors import Conflict, NotFound, SctkError
from sctk.fsutil import fsync_dir, make_temp, space_errors
from sctk.pipeline.store import check_name, file_sha256
from sctk.storage.models import UqModel
from sctk.uq import hybrid_state
from sctk.uq.conformal import check_alpha
from sctk.uq.hybrid import HybridRegressor, resolve_physics

log = logging.getLogger(__name__)
MODELS_DIR = "results/models"
FILE_NAME = "model.pt"
FORMAT = 1
KIND = "tabular"
MAX_PREDICT_ROWS = 100_000
_REF_RE = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]{0,119}):(?P<version>[0-9]{1,9})$")
_MAX_ID = 2**31 - 1


# --- the file -----------------------------------------------------------------------------


def model_state(model: HybridRegressor) -> dict[str, Any]:
    """The fitted MODEL as a dict of plain values and tensors (nothing executable)."""
    if not hasattr(model, "calibrator_"):
        raise SctkError("Only a fitted model can be saved; call fit() first.")
    params = model.get_params()
    if params["physics"] is not None and not isinstance(params["physics"], str):
        raise SctkError(
            "A model whose physics is a Python object cannot be saved; pass physics as a "
            "registered 'package.module:function' name instead (sctk.uq.physics_registry)."
        )
    params["hidden"] = list(params["hidden"])
    params["alpha_bounds"] = list(params["alpha_bounds"])
    return {
        "format": FORMAT,
        "kind": KIND,
        "params": params,
        "n_features_in": int(model.n_features_in_),
        **hybrid_state.full_state(model),
        "history": [dict(h) for h in getattr(model, "history_", [])],
    }


def model_from_state(state: dict[str, Any]) -> HybridRegressor:
    """The HybridRegressor a model_state() dict describes, ready to predict (files of the
    first form, an MLP without a 'method', too)."""
    if state.get("format") != FORMAT or state.get("kind") != KIND:
        raise SctkError("The model file is not a tabular sctk model of a known format.")
    params = dict(state["params"])
    params["hidden"] = tuple(params["hidden"])
    params["alpha_bounds"] = tuple(params["alpha_bounds"])
    if "method" not in params:  # saved before `method`: the network it always was
        params["method"] = "mlp"
    model = HybridRegressor(**params)
    model.physics_fn_ = resolve_physics(model.physics)
    model.n_features_in_ = int(state["n_features_in"])
    hybrid_state.restore(model, state)
    model.history_ = list(state.get("history", []))
    return model


def state_of(model: Any) -> dict[str, Any]:
    """The state dict of a fitted tabular or field model."""
    from sctk.uq import field_state
    from sctk.uq.field_hybrid import FieldHybridRegressor

    if isinstance(model, FieldHybridRegressor):
        return field_state.model_state(model)
    return model_state(model)


def model_of(state: dict[str, Any]) -> Any:
    """The estimator a state dict describes (tabular or field)."""
    from sctk.uq import field_state

    if isinstance(state, dict) and state.get("kind") == field_state.KIND:
        return field_state.model_from_state(state)
    return model_from_state(state)


def params_of(model: Any) -> dict[str, Any]:
    """The model's parameters as JSON values."""
    from sctk.uq import field_state
    from sctk.uq.field_hybrid import FieldHybridRegressor

    if isinstance(model, FieldHybridRegressor):
        return field_state.jsonable_params(model)
    return _jsonable(model.get_params())


def _write_atomic(state: dict[str, Any], final: Path) -> Path:
    """Write STATE to a temporary file next to FINAL (fsynced); return the temporary path."""
    with space_errors(final.parent, f"model file {final.name}"):
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = make_temp(final.parent, "model")
        try:
            with os.fdopen(fd, "wb") as fh:
                torch.save(state, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o640)
            return tmp
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


# --- rows ---------------------------------------------------------------------------------


def label(row: UqModel) -> str:
    return f"'{row.name}' v{row.version}"


def next_version(session: Session, name: str) -> int:
    top = session.scalar(select(func.max(UqModel.version)).where(UqModel.name == name))
    return int(top or 0) + 1


def save(
    session: Session,
    home: Path,
    model: HybridRegressor,
    name: str,
    *,
    config: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    lineage: dict[str, Any] | None = None,
    owner: str = "system",
) -> UqModel:
    """Store fitted MODEL as the next version of NAME, and commit: file and row, or neither."""
    check_name(name)
    state = state_of(model)
    version = next_version(session, name)
    relative = f"{MODELS_DIR}/{name}/v{version}/{FILE_NAME}"
    final = Path(home) / relative
    try:
        tmp = _write_atomic(state, final)
    except BaseException:
        _prune(Path(home), final.parent)  # the version folder made for it, now empty
        raise
    crashpoints.reached("model.written")
    placed = False
    try:
        row = UqModel(
            name=name,
            version=version,
            kind=state["kind"],
            path=relative,
            sha256=file_sha256(tmp),
            config=config if config is not None else params_of(model),
            metrics=metrics or {},
            lineage=lineage or {},
            owner=str(owner)[:64],
        )
        session.add(row)
        try:
            session.flush()
        except IntegrityError:
            raise Conflict(
                f"Model '{name}' v{version} was saved by another run meanwhile; try again."
            ) from None
        # the flushed row claims (name, version) until this transaction ends, so a file
        # already at FINAL is no live save's: one killed between its rename and its commit
        # left it, and it is replaced
        if final.exists():
            log.warning("replacing %s, left without a registry row by a killed save", relative)
        os.replace(tmp, final)
        placed = True
        fsync_dir(final.parent)
        crashpoints.reached("model.placed")
        session.commit()
    except BaseException:
        session.rollback()
        tmp.unlink(missing_ok=True)
        if placed:
            final.unlink(missing_ok=True)
        _prune(Path(home), final.parent)
        raise
    return row


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    out = dict(params)
    for key in ("hidden", "alpha_bounds"):
        out[key] = list(out[key])
    if out.get("boost") is not None:
        out["boost"] = dict(out["boost"])
    if out.get("physics") is not None and not isinstance(out["physics"], str):
        out["physics"] = repr(out["physics"])
    return out


def _not_found(ref: Any) -> NotFound:
    return NotFound(
        f"No model is {str(ref)[:140]!r}; 'sctk uq models list' (or GET /api/v1/models) shows "
        "the models there are."
    )


def get(session: Session, model_id: int) -> UqModel:
    row = session.get(UqModel, model_id) if 1 <= model_id <= _MAX_ID else None
    if row is None:
        raise _not_found(model_id)
    return row


def resolve(session: Session, ref: str | int) -> UqModel:
    """The model REF names: a numeric id, 'name:version', or 'name' (its latest version)."""
    if isinstance(ref, int) or str(ref).isdigit():
        if len(str(ref)) > 10:
            raise _not_found(ref)
        return get(session, int(ref))
    ref = str(ref)
    match = _REF_RE.match(ref)
    if match:
        query = select(UqModel).where(
            UqModel.name == match["name"], UqModel.version == int(match["version"])
        )
    else:
        query = select(UqModel).where(UqModel.name == ref).order_by(UqModel.version.desc()).limit(1)
    row = session.scalar(query)
    if row is None:
        raise _not_found(ref)
    return row


def list_models(session: Session) -> list[UqModel]:
    return list(session.scalars(select(UqModel).order_by(UqModel.name, UqModel.version)))


def as_dict(row: UqModel) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "version": row.version,
        "kind": row.kind,
        "path": row.path,
        "sha256": row.sha256,
        "config": row.config,
        "metrics": row.metrics,
        "lineage": row.lineage,
        "owner": row.owner,
        "created_at": row.created_at.isoformat() if row.created_at else None,
    }


def model_file(home: Path, row: UqModel) -> Path:
    """The file of ROW; a path stored in the row may not point outside results/models/."""
    base = (Path(home) / MODELS_DIR).resolve()
    path = (Path(home) / row.path).resolve()
    if base not in path.parents:
        raise SctkError(
            f"Model {label(row)} names the file {row.path!r}, outside {MODELS_DIR}/; the row "
            "was edited by hand: delete the model and train it again."
        )
    return path


# Models rebuilt lately, by file and sha256: a prediction still reads and hashes the file
# each time (so a file changed on disk is refused at once), but does not unpickle it and
# rebuild the network again, which was most of the cost of a 1,000-row prediction.
_LOADED_MAX = 8
_loaded: OrderedDict[tuple[str, str], Any] = OrderedDict()
_loaded_lock = threading.Lock()


def load(home: Path, row: UqModel, private: bool = False) -> Any:
    """The estimator ROW stores, after checking its file against the recorded sha256.

    The instance may be shared with other threads of the process; a caller that changes it
    (recalibration) asks for a PRIVATE one."""
    path = model_file(home, row)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SctkError(
            f"The file of model {label(row)} ({row.path}) is missing; restore it from a backup "
            "or delete the model."
        ) from None
    if hashlib.sha256(data).hexdigest() != row.sha256:
        raise SctkError(
            f"The file of model {label(row)} ({row.path}) has changed since it was saved (its "
            "sha256 differs), so it is not used; restore it from a backup or train it again."
        )
    if private:
        return _rebuild(data, row, home)
    key = (str(path), row.sha256)
    with _loaded_lock:
        model = _loaded.get(key)
        if model is not None:
            _loaded.move_to_end(key)
            return model
    model = _rebuild(data, row, home)
    with _loaded_lock:
        _loaded[key] = model
        while len(_loaded) > _LOADED_MAX:
            _loaded.popitem(last=False)
    return model


def _rebuild(data: bytes, row: UqModel, home: Path) -> Any:
    """The estimator in a model file's DATA (checked already); one sentence when it is not.

    Its physics is looked up in the registry (with HOME's admin-listed names), never imported
    as the file names it: a file is only as trustworthy as whoever could write it."""
    import io

    from sctk.uq import physics_registry

    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception:
        raise SctkError(
            f"The file of model {label(row)} cannot be read as a model; train it again."
        ) from None
    if not isinstance(state, dict) or state.get("kind", KIND) != row.kind:
        raise SctkError(
            f"The file of model {label(row)} holds another kind of model than its row says; "
            "delete the model and train it again."
        )
    try:
        return model_of(state)
    except physics_registry.PhysicsNotRegistered:
        pass  # perhaps one an admin lists: the settings are read only then (about 20 ms)
    try:
        with physics_registry.admitted(physics_registry.admin_listed(home)):
            return model_of(state)
    except physics_registry.PhysicsNotRegistered as exc:
        raise Conflict(
            f"Model {label(row)} names the physics {exc.name}, which is not registered, so it "
            f"is not loaded; train it again with one of {', '.join(physics_registry.choices())}"
            f" (or, if that function is trusted, an admin lists it under "
            f"{physics_registry.SETTING} in sctk.toml)."
        ) from None


def _prune(home: Path, directory: Path) -> None:
    """Remove DIRECTORY and its parent when they are empty (never above results/models)."""
    base = (home / MODELS_DIR).resolve()
    for d in (directory, directory.parent):
        d = d.resolve()
        if base in d.parents:
            try:
                d.rmdir()
            except FileNotFoundError:
                continue
            except OSError:  # not empty: other versions remain
                return


def delete(
    session: Session, home: Path, ref: str | int, cache: Any = None, actor: str = "system"
) -> dict[str, Any]:
    """Delete a model's row and its files, forget its cached predictions; commits (audited).

    Returns what the row held (as_dict)."""
    from sctk.security import audit

    row = resolve(session, ref)
    path = model_file(home, row)
    gone = as_dict(row)
    session.delete(row)
    audit.record(
        session,
        "model.deleted",
        actor=actor,
        target=f"{gone['name']}:{gone['version']}",
        details={"id": gone["id"], "sha256": gone["sha256"]},
    )
    session.commit()
    # the row goes first: a crash now leaves an orphan file, never a row without its file
    if path.parent.name == f"v{gone['version']}":
        shutil.rmtree(path.parent, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
    _prune(Path(home), path.parent)
    if cache is not None:
        cache.invalidate(gone["id"])
    return gone


# --- prediction ---------------------------------------------------------------------------


def features_of(row: UqModel) -> list[str]:
    return list((row.lineage or {}).get("features") or [])


def _missing_columns(what: str, missing: list[str], features: list[str]) -> SctkError:
    return SctkError(
        f"{what} lacks the column(s) {', '.join(missing[:10])} the model was trained on; "
        f"it needs {', '.join(features[:20])}."
    )


def checked_finite(X: np.ndarray, features: list[str], what: str) -> np.ndarray:
    finite = np.isfinite(X)
    if not finite.all():
        cols = [features[j] for j in np.flatnonzero(~finite.all(axis=0))]
        rows = np.flatnonzero(~finite.all(axis=1))
        raise SctkError(
            f"{what} holds missing, NaN or infinite values in column(s) {', '.join(cols[:10])} "
            f"(first at row {int(rows[0])}); fill or remove them first."
        )
    return X


def feature_matrix(frame: pd.DataFrame, features: list[str], what: str) -> np.ndarray:
    """FRAME's FEATURES as a float matrix, or one sentence saying what is wrong with them."""
    missing = [f for f in features if f not in frame.columns]
    if missing:
        raise _missing_columns(what, missing, features)
    if len(frame) == 0:
        raise SctkError(f"{what} has no rows; give at least one.")
    bad = [
        f
        for f in features
        if not pd.api.types.is_numeric_dtype(frame[f]) or pd.api.types.is_bool_dtype(frame[f])
    ]
    if bad:
        raise SctkError(
            f"{what}: column(s) {', '.join(bad[:10])} are not numeric; the model needs numbers."
        )
    return checked_finite(frame[features].to_numpy(dtype=np.float64), features, what)


def rows_matrix(rows: list[dict[str, float | None]], features: list[str], what: str) -> np.ndarray:
    """ROWS (objects of numbers or None, as the API takes them) as FEATURES' float matrix, with
    the sentences of `feature_matrix`; built column by column, without a DataFrame (a tenth
    of the cost on 1,000 rows)."""
    if not rows:
        raise SctkError(f"{what} has no rows; give at least one.")
    present = set().union(*rows)
    missing = [f for f in features if f not in present]
    if missing:
        raise _missing_columns(what, missing, features)
    # None (and a key absent from a row) becomes NaN, refused below with the others
    columns = [np.array([r.get(f) for r in rows], dtype=np.float64) for f in features]
    return checked_finite(np.column_stack(columns), features, what)


def _check_kind(row: UqModel, kind: str) -> None:
    if row.kind != kind:
        given = "fields [B, C, H, W]" if kind == "field" else "rows of feature columns"
        need = "fields [B, C, H, W]" if row.kind == "field" else "rows of feature columns"
        raise SctkError(
            f"Model {label(row)} is a {row.kind} model and predicts from {need}, not from {given}."
        )


def _cached(home: Path, row: UqModel, X: np.ndarray, alpha: float, cache: Any, render):
    """RENDER(model output arrays) for X at ALPHA; the arrays come from CACHE when it holds
    them (rendering after the cache keeps its entries compact: arrays, not lists)."""
    key = out = None
    if cache is not None:
        from sctk.uq.cache import input_digest

        key = (row.id, input_digest(X, row.sha256), alpha)
        out = cache.get(key)
    hit = out is not None
    if not hit:
        out = load(home, row).predict_interval(X, alpha=alpha)
        if key is not None:
            cache.put(key, out)
    return {
        "model": {"id": row.id, "name": row.name, "version": row.version},
        "kind": row.kind,
        "alpha": alpha,
        "rows": int(X.shape[0]),
        **render(out),
        "cached": hit,
    }


def predict(
    home: Path,
    row: UqModel,
    frame: pd.DataFrame,
    alpha: float = 0.1,
    cache: Any = None,
    what: str = "The input",
) -> dict[str, Any]:
    """mean, lower, upper, sigma and psi lists for FRAME's rows, from cache when possible.

    For a field model FRAME holds one flattened field per row in the model's input column."""
    alpha = check_alpha(alpha)
    if row.kind == "field":
        from sctk.uq import fields

        X = fields.from_frame(frame, input_column(row), field_shape(row), what)
        return predict_fields(home, row, X, alpha, cache, what)
    _check_kind(row, KIND)
    if len(frame) > MAX_PREDICT_ROWS:
        raise _too_many(what, len(frame))
    return predict_matrix(home, row, feature_matrix(frame, features_of(row), what), alpha, cache)


def _too_many(what: str, rows: int) -> SctkError:
    return SctkError(
        f"{what} has {rows} rows, more than the {MAX_PREDICT_ROWS} one prediction takes; "
        "predict a dataset of any size with the uq.predict job or 'sctk uq predict --out'."
    )


def predict_matrix(
    home: Path, row: UqModel, X: np.ndarray, alpha: float = 0.1, cache: Any = None
) -> dict[str, Any]:
    """As `predict`, for a tabular model's feature matrix X (columns in `features_of(row)`
    order, checked by `feature_matrix` or `rows_matrix`)."""
    alpha = check_alpha(alpha)
    _check_kind(row, KIND)
    if X.shape[0] > MAX_PREDICT_ROWS:
        raise _too_many("The input", X.shape[0])
    return _cached(
        home,
        row,
        X,
        alpha,
        cache,
        lambda out: {k: out[k].tolist() for k in ("mean", "lower", "upper", "sigma", "psi")},
    )


# --- field models -------------------------------------------------------------------------


def field_shape(row: UqModel) -> tuple[int, ...]:
    return tuple(int(v) for v in (row.lineage or {}).get("shape") or ())


def input_column(row: UqModel) -> str:
    return str((row.lineage or {}).get("input") or "x")


def target_column(row: UqModel) -> str:
    return str((row.lineage or {}).get("target") or "y")


def check_fields(row: UqModel, X: Any, what: str) -> np.ndarray:
    """X as fields of ROW's shape, or one sentence naming what is wrong."""
    from sctk.uq.field_hybrid import as_fields

    X = as_fields(X, what)
    shape = field_shape(row)
    if shape and tuple(X.shape[1:]) != shape:
        raise SctkError(
            f"{what} has fields of shape {list(X.shape[1:])} (C, H, W); model {label(row)} "
            f"takes {list(shape)}."
        )
    return X


def predict_fields(
    home: Path,
    row: UqModel,
    X: Any,
    alpha: float = 0.1,
    cache: Any = None,
    what: str = "The fields",
) -> dict[str, Any]:
    """mean, lower, upper, sigma (nested lists [B, C, H, W]) and psi (one per field)."""
    alpha = check_alpha(alpha)
    _check_kind(row, "field")
    X = check_fields(row, X, what)
    if X.size > MAX_PREDICT_ROWS * 40:
        raise SctkError(
            f"{what} holds {X.shape[0]} fields, more than one prediction takes; split them."
        )
    return _cached(
        home,
        row,
        X,
        alpha,
        cache,
        lambda out: {
            "shape": [int(v) for v in X.shape[1:]],
            **{k: out[k].tolist() for k in ("mean", "lower", "upper", "sigma")},
            "psi": out["psi"].tolist(),
        },
    )


# --- recalibration --------------------------------------------------------------------------


def replace_calibration(
    session: Session,
    home: Path,
    row: UqModel,
    model: Any,
    calibration: dict[str, Any],
    metrics: dict[str, Any],
    cache: Any = None,
    actor: str = "system",
) -> UqModel:
    """Store MODEL (ROW's network with new conformal scores) in ROW's place; commit (audited).

    The file is replaced atomically and the row's sha256, metrics and lineage follow it in
    the same commit; the old file is kept aside until then, so a failed commit puts it back.
    The cached predictions of ROW are dropped (other processes never serve theirs: their
    keys hold the old file's sha256)."""
    path = model_file(home, row)
    state = state_of(model)
    if state["kind"] != row.kind:
        raise SctkError(f"Model {label(row)} is a {row.kind} model; its kind cannot change.")
    tmp = _write_atomic(state, path)
    aside = path.with_name(f".{path.name}.previous")
    moved = False
    try:
        lineage = dict(row.lineage or {})
        history = list(lineage.get("recalibrations") or [])
        history.append(
            {
                "previous_sha256": row.sha256,
                "previous_calibration": lineage.get("calibration"),
                "at": _now(),
            }
        )
        lineage["calibration"] = calibration
        lineage["recalibrations"] = history
        row.sha256 = file_sha256(tmp)
        row.metrics = {**(row.metrics or {}), **metrics}
        row.lineage = lineage
        from sctk.security import audit

        audit.record(
            session,
            "model.recalibrated",
            actor=actor,
            target=f"{row.name}:{row.version}",
            details={"id": row.id, "sha256": row.sha256, "calibration": calibration},
        )
        session.flush()
        if path.exists():
            os.replace(path, aside)
            moved = True
        os.replace(tmp, path)
        fsync_dir(path.parent)
        session.commit()
    except BaseException:
        session.rollback()
        tmp.unlink(missing_ok=True)
        if moved:
            os.replace(aside, path)
        raise
    aside.unlink(missing_ok=True)
    if cache is not None:
        cache.invalidate(row.id)
    return row


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat(timespec="seconds")
