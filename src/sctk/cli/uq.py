"""`sctk uq train|predict|evaluate|calibrate|observe|adaptive|demo|models`: hybrid UQ models,
trained as jobs and kept in a registry, and their coverage watched in production."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import typer

from sctk import tomltext
from sctk.cli.common import (
    console,
    db_session,
    err_console,
    json_option,
    operator,
    print_json,
    settings,
    table,
)
from sctk.cli.job_runner import run_inline, wait_for
from sctk.errors import SctkError
from sctk.fsutil import make_temp

app = typer.Typer(help="Hybrid UQ models: train, predict, and the model registry.")
models_app = typer.Typer(help="The model registry: list, show, delete.", no_args_is_help=True)
app.add_typer(models_app, name="models")

MODEL = typer.Argument(..., help="NAME (its latest version), NAME:VERSION or the numeric id.")


@app.callback(no_args_is_help=True)
def _root() -> None:
    """Hybrid UQ models: train, predict, and the model registry."""


def _read_config(path: Path) -> dict[str, Any]:
    try:
        data = tomltext.loads(path.read_text(encoding="utf-8"), str(path))
    except FileNotFoundError:
        raise SctkError(f"The config file {path} does not exist; check the path.") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SctkError(f"{path} is not valid TOML ({str(exc).rstrip('.')}); fix it.") from None
    # either the HybridRegressor parameters at the top level, or under [model]
    return dict(data.get("model", data))


def _calibration(value: str) -> float | str:
    try:
        return float(value)
    except ValueError:
        return value


@app.command("train")
def train(
    ctx: typer.Context,
    data: str = typer.Option(
        ...,
        "--data",
        help="The training dataset's name (field models: or an .npz file of [N, C, H, W] "
        "arrays, stored as a dataset first).",
    ),
    target: str | None = typer.Option(
        None, "--target", help="The column to predict (field models: default y)."
    ),
    input_col: str | None = typer.Option(
        None, "--input", help="Field models: the column of the input fields (default x)."
    ),
    features: str | None = typer.Option(
        None, "--features", help="Comma-separated feature columns (default: all other numeric)."
    ),
    config_file: Path | None = typer.Option(
        None,
        "--config",
        help='A TOML file of model parameters (or a [model] table); kind = "field" trains '
        "a field model.",
    ),
    name: str | None = typer.Option(None, "--name", help="Model name (default: DATA-TARGET)."),
    calibration: str | None = typer.Option(
        None,
        "--calibration",
        help="A fraction of DATA held out, or a dataset's name (field models: or an .npz file); "
        "default: CV+ over folds of every row below the model's cv_below rows (2,000), else 0.25.",
    ),
    wait: bool = typer.Option(False, "--wait", help="Wait for the job and show its progress."),
    inline: bool = typer.Option(
        False, "--inline", help="Train here and now instead of submitting a uq.train job."
    ),
    as_json: bool = json_option(),
) -> None:
    """Train a model: submitted as a `uq.train` job (run by the workers of `sctk serve`), or
    in this process with --inline; the model is stored with its metrics and lineage. With
    kind = "field" in the config it is a field model trained on fields (a dataset of them, or
    an .npz file holding x and y as [N, C, H, W] arrays)."""
    from sctk.uq import jobs as uq_jobs
    from sctk.uq import physics_registry
    from sctk.uq.model_kind import kind_named

    s = settings(ctx)
    # the names an admin lists in sctk.toml count as registered physics for the checks below
    admitted = s.uq.physics_allowed
    params: dict[str, Any] = {
        "dataset": data,
        "config": _read_config(config_file) if config_file else {},
    }
    if calibration is not None:
        params["calibration"] = _calibration(calibration)
    for key, value in (("target", target), ("input", input_col), ("name", name)):
        if value:
            params[key] = value
    if features:
        params["features"] = [f.strip() for f in features.split(",") if f.strip()]
    with physics_registry.admitted(admitted):  # bad settings: before storing data
        kind = kind_named(uq_jobs.parse_params(params).kind)
    with db_session(ctx) as session:
        for key in ("dataset", "calibration"):
            value = params.get(key)
            if not (isinstance(value, str) and value.lower().endswith(".npz")):
                continue
            params[key] = _store_file(session, s.home, kind, Path(value), params).name
            if key == "dataset" and not name:
                params["name"] = params["dataset"]
        with physics_registry.admitted(admitted):
            params = uq_jobs.check(session, params).to_params()
    if inline:
        # the job's own log line ("stored model ...") is what _print_model says in full
        result = run_inline(s.home, "training", uq_jobs.uq_train, params, as_json, show_log=False)
        _print_model(result["model"], as_json)
        return
    from sctk.jobs import queue

    with db_session(ctx, with_bus=True) as session, physics_registry.admitted(admitted):
        job_id = queue.submit(session, uq_jobs.KIND, params, owner=operator()).id
    if not wait:
        if as_json:
            print_json({"job": job_id, "status": "queued"})
        else:
            console.print(
                f"submitted job {job_id} ({uq_jobs.KIND}); 'sctk jobs show {job_id}' follows it",
                highlight=False,
            )
        return
    view = wait_for(ctx, queue, job_id, as_json)
    if view["status"] != "succeeded":
        error = (view.get("error") or view.get("message") or view["status"]).strip()
        raise SctkError(f"Job {job_id} {view['status']}: {error.rstrip('.')}.")
    _print_model((view.get("result") or {}).get("model") or {}, as_json)


def _store_file(session, home: Path, kind, path: Path, params: dict[str, Any]):
    """The dataset holding the data of the training file PATH (stored now, or before)."""
    dataset = kind.store_training_file(session, home, path, params, operator())
    err_console.print(
        f"stored the {kind.unit}s of {path.name} as dataset '{dataset.name}'",
        highlight=False,
        markup=False,
    )
    return dataset


def _print_model(model: dict[str, Any], as_json: bool) -> None:
    from sctk.uq.model_kind import kind_named

    if as_json:
        print_json(model)
        return
    m = model.get("metrics") or {}
    console.print(
        f"stored model '{model.get('name')}' v{model.get('version')} (id {model.get('id')}): "
        f"coverage {m.get('coverage', float('nan')):.3f}, mean width "
        f"{m.get('mean_width', float('nan')):.4g} at alpha {m.get('alpha', 0.1)} on "
        f"{m.get('n_calibration', '?')} calibration "
        f"{kind_named(model.get('kind') or '').value_unit}",
        highlight=False,
        markup=False,
    )
    sample = ((model.get("lineage") or {}).get("dataset") or {}).get("sample")
    if sample:
        console.print(
            f"trained on a sample of {sample['rows']:,} of {sample['of']:,} rows "
            f"(seed {sample['seed']}, sha256 {sample['sha256'][:12]})",
            highlight=False,
            markup=False,
        )


def _write_table(frame, out: Path) -> None:
    """Write FRAME to OUT (.csv or .parquet) atomically."""
    suffix = out.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise SctkError(f"Cannot write {out.name}: use a .csv or .parquet file name.")
    directory = out.parent if str(out.parent) else Path(".")
    if not directory.is_dir():
        raise SctkError(f"The directory {directory} does not exist; create it first.")
    fd, tmp = make_temp(directory, out.name)
    try:
        with os.fdopen(fd, "wb") as fh:
            if suffix == ".csv":
                from sctk.security.spreadsheet import escape_frame

                fh.write(escape_frame(frame).to_csv(index=False).encode("utf-8"))
            else:
                frame.to_parquet(fh, index=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@app.command("predict")
def predict(
    ctx: typer.Context,
    model: str = MODEL,
    data: str = typer.Option(
        ..., "--data", help="The dataset to predict for (field models: or an .npz file)."
    ),
    alpha: float = typer.Option(0.1, "--alpha", help="Miscoverage: intervals cover 1 - alpha."),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Write the inputs with mean, lower, upper, sigma, psi (.csv/.parquet; field "
        "models: .npz).",
    ),
    as_json: bool = json_option(),
) -> None:
    """Predict with calibrated intervals for every row (or field) of the data (in this process).
    With --out, a tabular model reads the dataset a partition at a time and writes as it goes:
    no row limit, memory bounded by one partition (the `uq.predict` job stores the same as a
    dataset, on a Dask cluster too)."""
    from sctk.uq import cache, prediction, registry
    from sctk.uq.conformal import check_alpha
    from sctk.uq.inputs import load_inputs
    from sctk.uq.model_kind import kind_of

    s = settings(ctx)
    check_alpha(alpha)
    with db_session(ctx) as session:
        row = registry.resolve(session, model)
        kind = kind_of(row)
        allowed = kind.out_suffixes
        if out is not None and out.suffix.lower() not in allowed:
            raise SctkError(f"Cannot write {out.name}: use a {' or '.join(allowed)} file name.")
        if out is not None and kind.streams:
            _predict_streamed(s.home, session, row, data, alpha, out, as_json)
            return
        inputs = load_inputs(session, s.home, row, data)
        c = cache.get_cache(s.cache)
        result = prediction.predict(session, s.home, row, inputs.X, alpha, c, inputs.what)
    keys = ("mean", "lower", "upper", "sigma", "psi")
    label = f"'{row.name}' v{row.version}"
    if out is not None:  # a kind that does not stream: its arrays in one .npz
        _write_npz({k: np.asarray(result[k]) for k in keys}, out)
    if as_json:
        print_json(
            result
            if out is None
            else {**{k: result[k] for k in result if k not in keys}, "out": str(out)}
        )
        return
    if out is not None:
        console.print(
            f"predicted {result['rows']} {kind.unit}s of "
            f"{data} with model {label} at alpha {result['alpha']}; wrote {out}",
            highlight=False,
            markup=False,
        )
        return
    shown = min(result["rows"], 20)
    tail, columns, rows = kind.summary(result, shown)
    table(f"model {label}, alpha {result['alpha']}{tail}", columns, rows)


def _predict_streamed(home: Path, session, row, data: str, alpha: float, out: Path, as_json):
    """A tabular model over a whole dataset, a partition at a time, into OUT: no row limit,
    memory bounded by one partition."""
    from sctk.cli.progress import progress
    from sctk.pipeline import export, store
    from sctk.uq import batch
    from sctk.uq.inputs import is_file

    if is_file(data):
        raise SctkError(
            f"Model '{row.name}' v{row.version} is a tabular model: give it a stored dataset's "
            f"name, not the file {data}."
        )
    ds = store.get(session, data)
    fmt = export.format_of(out.name)
    with progress(f"predict {ds.name}", err_console, enabled=not as_json) as update:
        tables = export.ahead(batch.predictions(home, row, ds, alpha, progress=update))
        if fmt == "parquet":
            export.write_parquet(tables, out, export.FAST_PARQUET)
        else:
            export.write_file(export.frame_chunks(tables, fmt), out)
    summary = {
        "model": {"id": row.id, "name": row.name, "version": row.version},
        "kind": row.kind,
        "alpha": alpha,
        "rows": ds.rows,
        "out": str(out),
    }
    if as_json:
        print_json(summary)
        return
    console.print(
        f"predicted {ds.rows} rows of {ds.name} with model '{row.name}' v{row.version} at "
        f"alpha {alpha}; wrote {out}",
        highlight=False,
        markup=False,
    )


def _write_npz(arrays: dict[str, Any], out: Path) -> None:
    """Write ARRAYS to the .npz file OUT atomically."""
    import io

    from sctk.fsutil import atomic_write

    directory = out.parent if str(out.parent) else Path(".")
    if not directory.is_dir():
        raise SctkError(f"The directory {directory} does not exist; create it first.")
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write(out, buffer.getvalue())


@app.command("evaluate")
def evaluate(
    ctx: typer.Context,
    model: str = MODEL,
    data: str = typer.Option(
        ..., "--data", help="A dataset holding the target (field models: or an .npz with x, y)."
    ),
    alpha: float = typer.Option(0.1, "--alpha", help="Miscoverage: intervals cover 1 - alpha."),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="The report's directory (default: <home>/reports/uq/NAME-vN-TIME; a report written "
        "elsewhere leaves a copy of its report.json there, for the dashboard and /metrics).",
    ),
    as_json: bool = json_option(),
) -> None:
    """Score a model on data with known targets; write report.json and two PNG plots."""
    from sctk.uq import evaluation

    s = settings(ctx)
    with db_session(ctx) as session:
        result = evaluation.evaluate(session, s.home, model, data, alpha, out)
    if as_json:
        print_json(result)
        return
    m = result["model"]
    cal = result.get("calibration") or {}
    lines = [
        f"model '{m['name']}' v{m['version']} on {data} ({result['n']} values), alpha "
        f"{result['alpha']}:",
        f"  coverage {result['coverage']:.3f}, mean width {result['mean_width']:.4g}, "
        f"interval score {result['interval_score']:.4g}",
        f"  gaussian NLL {_num(result.get('gaussian_nll'), 4)}, CRPS "
        f"{_num(result.get('crps'), 4)}, miscalibration area "
        f"{_num(cal.get('miscalibration_area'), 4)}",
        f"  psi mean {result['psi']['mean']:.3f} (min {result['psi']['min']:.3f})",
        *(
            [
                f"  {result['band']} bands: per-pixel coverage {result['pixel_coverage']:.3f}, "
                f"whole-field coverage {result['field_coverage']:.3f}"
            ]
            if "field_coverage" in result
            else []
        ),
        "  coverage by decile of interval width (narrowest first): "
        + " ".join(_num(d["coverage"], 2) for d in result["coverage_by_width_decile"]),
        *(
            f"  coverage in {result['group']} = {g['group']}: {_num(g['coverage'])} "
            f"({g['n']} values, mean width {g['mean_width']:.4g})"
            for g in result.get("coverage_by_group") or []
        ),
        f"  report: {result['report']['json']}",
        f"          {result['report']['calibration']}",
        f"          {result['report']['intervals']}",
    ]
    for line in lines:
        console.print(line, highlight=False, markup=False, soft_wrap=True)


@app.command("calibrate")
def calibrate(
    ctx: typer.Context,
    model: str = MODEL,
    data: str | None = typer.Option(
        None, "--data", help="A dataset holding the target (field models: or an .npz with x, y)."
    ),
    from_observations: bool = typer.Option(
        False,
        "--from-observations",
        help="Calibrate on the model's newest observations (uq.coverage_window of them) "
        "instead of a dataset.",
    ),
    as_json: bool = json_option(),
) -> None:
    """Recompute a model's conformal calibration on new data (in place; cache entries dropped)."""
    from sctk.uq import cache, evaluation, observations, registry

    if (data is None) == (not from_observations):
        raise SctkError("Give exactly one of --data DATASET or --from-observations.")
    s = settings(ctx)
    with db_session(ctx) as session:
        if from_observations:
            row = registry.resolve(session, model)
            m = observations.recalibrate(
                session, s, row, cache=cache.get_cache(s.cache), actor=operator()
            )
        else:
            m = evaluation.recalibrate(
                session, s.home, model, data, cache=cache.get_cache(s.cache), actor=operator()
            )
    if as_json:
        print_json(m)
        return
    metrics = m["metrics"]
    source = f"its {metrics['n_calibration']} newest observations" if from_observations else data
    console.print(
        f"recalibrated model '{m['name']}' v{m['version']} (id {m['id']}) on {source}: coverage "
        f"{metrics['coverage']:.3f}, mean width {metrics['mean_width']:.4g} at alpha "
        f"{metrics['alpha']} on {metrics['n_calibration']} calibration values",
        highlight=False,
        markup=False,
    )


@app.command("observe")
def observe(
    ctx: typer.Context,
    model: str = MODEL,
    data: str = typer.Option(
        ...,
        "--data",
        help="A stored dataset of observed rows: the model's features and the true target, in "
        "the order observed.",
    ),
    alpha: float = typer.Option(
        0.1, "--alpha", help="Miscoverage of the intervals checked (adaptive mode: its own)."
    ),
    as_json: bool = json_option(),
) -> None:
    """Record true values for rows the model predicts; show the rolling coverage and its test."""
    from sctk.uq import observations, registry
    from sctk.uq.conformal import check_alpha

    check_alpha(alpha)
    s = settings(ctx)
    with db_session(ctx) as session:
        row = registry.resolve(session, model)
        X, y = observations.dataset_inputs(session, s.home, row, data)
        result = observations.record(session, s, row, X, y, alpha, actor=operator())
    if as_json:
        print_json(result)
        return
    w = result["window"]
    lines = [
        f"recorded {result['recorded']} observation(s) of model '{row.name}' v{row.version}: "
        f"coverage {result['batch_coverage']:.3f} at alpha {result['alpha']:g}",
        f"  rolling coverage {w['coverage']:.3f} over the last {w['n']} (target "
        f"{w['target']:.3f}); binomial p = {w['p_value']:.3g}"
        + ("  BELOW TARGET" if w["low"] else ""),
    ]
    if result["adaptive"] and result["adaptive"]["enabled"]:
        lines.append(f"  adaptive: alpha_t {result['adaptive']['alpha_t']:.4f}")
    for line in lines:
        console.print(line, highlight=False, markup=False, soft_wrap=True)


@app.command("adaptive")
def adaptive(
    ctx: typer.Context,
    model: str = MODEL,
    on: bool = typer.Option(..., "--on/--off", help="Turn adaptive conformal inference on or off."),
    alpha: float = typer.Option(0.1, "--alpha", help="The target miscoverage alpha_t tracks."),
    gamma: float | None = typer.Option(
        None, "--gamma", help="The step of alpha_t (default: uq.adaptive_gamma)."
    ),
    as_json: bool = json_option(),
) -> None:
    """Adaptive conformal inference: alpha_t moved by each observation, used by predictions."""
    from sctk.uq import observations, registry

    s = settings(ctx)
    with db_session(ctx) as session:
        row = registry.resolve(session, model)
        state = observations.set_adaptive(
            session, row, on, alpha, gamma, s.uq.adaptive_gamma, actor=operator()
        )
    if as_json:
        print_json({"model": {"id": row.id, "name": row.name}, "adaptive": state})
        return
    if on:
        console.print(
            f"model '{row.name}' v{row.version}: adaptive mode on at alpha {state['alpha']:g}, "
            f"gamma {state['gamma']:g}",
            highlight=False,
            markup=False,
        )
    else:
        console.print(f"model '{row.name}' v{row.version}: adaptive mode off", highlight=False)


@app.command("demo")
def demo(
    ctx: typer.Context,
    samples: int = typer.Option(200, "--samples", help="Flows to simulate (half for training)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random initial conditions."),
    epochs: int = typer.Option(20, "--epochs", help="Training epochs."),
    as_json: bool = json_option(),
) -> None:
    """Simulate the flow demo, train and calibrate a hybrid field model ('flow-demo'), and
    report its intervals next to the physics alone."""
    from sctk.cli.progress import progress
    from sctk.uq import demo as demo_mod

    s = settings(ctx)
    demo_mod.check(samples, seed, epochs)
    with (
        db_session(ctx) as session,
        progress("flow demo", err_console, enabled=not as_json) as update,
    ):
        result = demo_mod.run(
            session,
            s.home,
            samples=samples,
            seed=seed,
            epochs=epochs,
            owner=operator(),
            progress=update,
        )
    if as_json:
        print_json(result)
        return
    m, h, p, psi = result["model"], result["hybrid"], result["physics_only"], result["psi"]
    lines = [
        f"flow demo: {samples} simulated flows (seed {seed}): "
        f"{', '.join(result['datasets'].values())}",
        f"model '{m['name']}' v{m['version']} (id {m['id']}), trained in "
        f"{result['seconds']['train']:.1f} s ({result['seconds']['total']:.1f} s in all)",
        f"on the test fields, alpha {result['alpha']} (intervals for {1 - result['alpha']:.0%}):",
        f"  hybrid        coverage {h['coverage']:.3f}  mean width {h['mean_width']:.4g}  "
        f"median width {h['median_width']:.4g}  interval score {h['interval_score']:.4g}  "
        f"RMSE {h['rmse']:.4g}",
        f"  physics only  coverage {p['coverage']:.3f}  mean width {p['mean_width']:.4g}  "
        f"(split conformal)  interval score {p['interval_score']:.4g}  RMSE {p['rmse']:.4g}",
        f"  psi           mean {psi['mean']:.3f}  min {psi['min']:.3f}  max {psi['max']:.3f}",
        f"report: {result['report']['json']} (+ calibration.png, intervals.png)",
        f"next: sctk uq models show {m['name']}; sctk uq predict {m['name']} --data "
        f"{result['datasets']['test']}",
    ]
    for line in lines:
        console.print(line, highlight=False, markup=False, soft_wrap=True)


@models_app.command("list")
def list_(ctx: typer.Context, as_json: bool = json_option()) -> None:
    """List the registered models."""
    from sctk.uq import registry

    with db_session(ctx) as session:
        found = [registry.as_dict(r) for r in registry.list_models(session)]
    if as_json:
        print_json(found)
        return
    table(
        None,
        ["id", "name", "version", "kind", "dataset", "target", "coverage", "owner", "created"],
        [
            [
                m["id"],
                m["name"],
                m["version"],
                m["kind"],
                (m["lineage"].get("dataset") or {}).get("name"),
                m["lineage"].get("target"),
                _num(m["metrics"].get("coverage")),
                m["owner"],
                (m["created_at"] or "")[:16].replace("T", " "),
            ]
            for m in found
        ],
    )


def _num(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) else ""


@models_app.command("show")
def show(ctx: typer.Context, model: str = MODEL, as_json: bool = json_option()) -> None:
    """One model: its file, hash, metrics, configuration and lineage."""
    import json

    from sctk.uq import registry

    with db_session(ctx) as session:
        m = registry.as_dict(registry.resolve(session, model))
    if as_json:
        print_json(m)
        return
    for label_, value in (
        ("id", m["id"]),
        ("name", f"{m['name']} v{m['version']} ({m['kind']})"),
        ("file", m["path"]),
        ("sha256", m["sha256"]),
        ("owner", m["owner"]),
        ("created", m["created_at"]),
        *(("method", line) for line in _method_lines(m["metrics"])),
        ("metrics", json.dumps(m["metrics"])),
        ("config", json.dumps(m["config"])),
        ("lineage", json.dumps(m["lineage"])),
    ):
        console.print(f"{label_:>8}  {value}", highlight=False, markup=False, soft_wrap=True)


def _method_lines(metrics: dict[str, Any]) -> list[str]:
    """The method a tabular model uses and, when chosen automatically, each candidate's
    validation interval score (best first)."""
    if not metrics.get("method"):
        return []
    sel = metrics.get("selection") or {}
    head = f"{metrics['method']}, calibrated by {metrics.get('calibration_mode', 'split')}"
    candidates = sel.get("candidates") or {}
    if not candidates:
        return [f"{head} ({sel.get('reason', 'given')})"]
    if str(sel.get("reason", "")).endswith("cross-conformal"):
        where = f"by CV+ over all {sel.get('validation_rows')} rows (cross-conformal"
    elif (sel.get("folds") or 1) > 1:  # every training row validated once, fold by fold
        where = f"over {sel['folds']} folds of the {sel.get('validation_rows')} training rows ("
    else:
        where = f"on {sel.get('validation_rows')} validation rows of the training data ("
    lines = [
        f"{head}; chosen automatically {where}interval score at alpha {sel.get('alpha')}, "
        "lower is better):"
    ]
    for name, score in sorted(candidates.items(), key=lambda kv: kv[1]):
        lines.append(
            f"  {name:<15} {score:.5g}{'  <- chosen' if name == metrics['method'] else ''}"
        )
    if sel.get("floor"):  # the held-out choice's bar for leaving the preferred method
        lines.append(
            f"another method replaces {sel.get('preferred')} only when better by more than "
            f"{sel['floor']:.0%} and one standard error"
        )
    if sel.get("leaf_scores"):  # the boosted learners' trees, chosen on the same rows
        moved = {str(k) for k in sel.get("leaf_moved", ())}  # judged with bounds moved
        tried = ", ".join(
            f"{k} leaves {v:.5g}{' (bounds moved)' if k in moved else ''}"
            for k, v in sel["leaf_scores"].items()
        )
        start = f", starting from {sel['leaf_default']}" if "leaf_default" in sel else ""
        lines.append(f"trees of {sel['leaves']} leaves{start} (the sided CQR scored {tried})")
    snapped = sel.get("snapped") or {}
    if metrics["method"] in snapped:  # a discrete target: bounds moved to its values or not
        score = f"{snapped[metrics['method']]:.5g}"
        lines.append(
            f"bounds moved to the nearest value the target takes (scored {score})"
            if sel.get("snap")
            else f"bounds kept as calibrated (moved to the target's values they scored {score})"
        )
    return lines


@models_app.command("delete")
def delete(ctx: typer.Context, model: str = MODEL, as_json: bool = json_option()) -> None:
    """Delete a model's row and files (and its cached predictions)."""
    from sctk.uq import cache, registry

    s = settings(ctx)
    with db_session(ctx) as session:
        gone = registry.delete(
            session, s.home, model, cache=cache.get_cache(s.cache), actor=operator()
        )
    if as_json:
        print_json(gone)
        return
    console.print(
        f"deleted model '{gone['name']}' v{gone['version']} and {gone['path']}", highlight=False
    )
