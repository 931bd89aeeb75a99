"""The model registry: fitted models on disk and in the `uq_models` table.

A model is of one kind (sctk.uq.model_kind: "tabular", "field", or a plugin's), which
writes and reads its file's state; this module does what is the same for every kind: rows,
files, loading (with a small cache of rebuilt models), deleting, recalibrating in place.
Prediction is in sctk.uq.prediction.

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

import torch
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from sctk import crashpoints
from sctk.errors import Conflict, NotFound, SctkError
from sctk.fsutil import fsync_dir, make_temp, space_errors
from sctk.pipeline.store import check_name, file_sha256
from sctk.storage.models import UqModel
from sctk.uq import model_kind
from sctk.uq.model_kind import MODEL_KINDS, kind_for

log = logging.getLogger(__name__)
MODELS_DIR = "results/models"
FILE_NAME = "model.pt"
# the kind of a model file written before files named theirs
TABULAR_NAME = "tabular"
_REF_RE = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]{0,119}):(?P<version>[0-9]{1,9})$")
_MAX_ID = 2**31 - 1


# --- the file -----------------------------------------------------------------------------


def state_of(model: Any) -> dict[str, Any]:
    """The state dict of a fitted model of any declared kind."""
    return kind_for(model).state(model)


def model_of(state: dict[str, Any]) -> Any:
    """The estimator a state dict describes (files from before kinds were named: tabular)."""
    name = state.get("kind", TABULAR_NAME) if isinstance(state, dict) else None
    if name not in MODEL_KINDS:
        raise SctkError("The model file is not an sctk model of a known kind.")
    return MODEL_KINDS[name].from_state(state)


def params_of(model: Any) -> dict[str, Any]:
    """The model's parameters as JSON values."""
    return kind_for(model).params(model)


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


label = model_kind.label


def next_version(session: Session, name: str) -> int:
    top = session.scalar(select(func.max(UqModel.version)).where(UqModel.name == name))
    return int(top or 0) + 1


def save(
    session: Session,
    home: Path,
    model: Any,
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
    if not isinstance(state, dict) or state.get("kind", TABULAR_NAME) != row.kind:
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
    from sctk.security import audit_log

    row = resolve(session, ref)
    path = model_file(home, row)
    gone = as_dict(row)
    session.delete(row)
    audit_log.record(
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
        from sctk.security import audit_log

        audit_log.record(
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
