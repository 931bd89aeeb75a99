"""Predictive intervals of sctk against MAPIE, on the same splits, single-threaded.

Run by hand (not a test):  python benchmarks/bench_uq.py [--splits 20] [--quick] [--no-write]
MAPIE is installed for this benchmark only:  pip install mapie  (not a project dependency).

Problems, each drawn once (seeded) and cut into random train / calibration / test partitions,
the same partitions for every method:
(a) synthetic heteroscedastic: y = sin(x0) + 0.3 x1 + N(0, (0.1 + 0.5 |x0|)^2), x ~ U(-3, 3)^2;
    the noise sd is known, so the 20% noisiest / quietest test points are chosen by it and the
    oracle width 2 * 1.645 * mean(sd) is the narrowest an exact 90% interval can be;
(b) scikit-learn's diabetes data (442 rows, 10 features);
(c) the flow demo (sctk.uq.flow.make_pairs on a 16 x 16 grid): whole fields for sctk, each
    pixel value one row for MAPIE (features: the input velocity at the pixel, the physics
    prediction at the pixel, the channel).

Methods at alpha = 0.1: sctk HybridRegressor (normalised conformal; FieldHybridRegressor on
the flow), sctk plain split conformal on the same trained network (on the flow: the physics
prediction alone), MAPIE SplitConformalRegressor with GradientBoostingRegressor (absolute and
residual-normalised scores) and MAPIE ConformalizedQuantileRegressor with gradient-boosting
quantile regressors. Throughput is predict-interval rows per second on 100,000 rows with the
models of the first split. The table is printed and written to benchmarks/RESULTS.md,
section "Uncertainty quantification against MAPIE".
"""

from __future__ import annotations

import os

from results import RESULTS, write_section  # benchmarks/results.py

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from datetime import UTC, datetime  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

SECTION = "## Uncertainty quantification against MAPIE"
PROBLEMS = ("heteroscedastic", "diabetes", "flow")
ALPHA = 0.1
Z = 1.6448536269514722  # the 95% normal quantile: a central 90% interval is +- Z sd
THROUGHPUT_ROWS = 100_000
HELD = 0.89  # mean coverage at or above this counts as holding the nominal 0.9
SCTK, SCTK_PLAIN = "sctk hybrid (normalised)", "sctk plain split"
PHYSICS_PLAIN = "physics alone + plain split"
MAPIE_SPLIT, MAPIE_NORM, MAPIE_CQR = (
    "MAPIE split GBR",
    "MAPIE residual-normalised GBR",
    "MAPIE CQR GBR",
)
MAPIE_METHODS = (MAPIE_SPLIT, MAPIE_NORM, MAPIE_CQR)
NO_PSI = "no psi"  # throughput only, not a row of the table

Predictor = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


# --- methods ---------------------------------------------------------------------------------


def mapie_methods(Xtr, ytr, Xcal, ycal, seed: int) -> dict[str, Predictor]:
    from mapie.conformity_scores import ResidualNormalisedScore
    from mapie.regression import ConformalizedQuantileRegressor, SplitConformalRegressor
    from sklearn.ensemble import GradientBoostingRegressor

    def gbr(**kw):
        return GradientBoostingRegressor(random_state=seed, **kw)

    def wrap(model, **kw) -> Predictor:
        def predict(X):
            _, intervals = model.predict_interval(X, **kw)
            return intervals[:, 0, 0], intervals[:, 1, 0]

        return predict

    split = SplitConformalRegressor(gbr(), confidence_level=1 - ALPHA, prefit=False)
    split.fit(Xtr, ytr).conformalize(Xcal, ycal)
    score = ResidualNormalisedScore(residual_estimator=gbr(), random_state=seed)
    norm = SplitConformalRegressor(
        gbr(), confidence_level=1 - ALPHA, conformity_score=score, prefit=False
    )
    norm.fit(Xtr, ytr).conformalize(Xcal, ycal)
    cqr = ConformalizedQuantileRegressor(gbr(loss="quantile"), confidence_level=1 - ALPHA)
    cqr.fit(Xtr, ytr).conformalize(Xcal, ycal)
    return {MAPIE_SPLIT: wrap(split), MAPIE_NORM: wrap(norm), MAPIE_CQR: wrap(cqr)}


def sctk_methods(Xtr, ytr, Xcal, ycal, seed: int, epochs: int) -> dict[str, Predictor]:
    from sctk.uq.conformal import ConformalCalibrator
    from sctk.uq.hybrid import HybridRegressor

    # HybridRegressor's defaults, but for the epoch cap
    model = HybridRegressor(epochs=epochs, seed=seed).fit(Xtr, ytr, Xcal, ycal)
    plain = ConformalCalibrator(normalized=False).fit(ycal, model.predict(Xcal))

    def normalised(X):
        out = model.predict_interval(X, ALPHA)
        return out["lower"], out["upper"]

    def plain_split(X):
        return plain.interval(model.predict(X), None, ALPHA)

    def without_psi(X):  # diagnostic: what predict_interval costs without the Psi gradient
        mean, sigma = model._mean_sigma(X)
        return model.calibrator_.interval(mean, sigma, ALPHA)

    return {SCTK: normalised, SCTK_PLAIN: plain_split, NO_PSI: without_psi}


# --- problems --------------------------------------------------------------------------------


def synthetic(n: int = 5000, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-3, 3, (n, 2))
    sd = 0.1 + 0.5 * np.abs(X[:, 0])
    y = np.sin(X[:, 0]) + 0.3 * X[:, 1] + sd * rng.standard_normal(n)
    return X, y, sd


def diabetes():
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True)
    return X, y, None


def partition(n: int, split: int, fractions=(0.5, 0.2)) -> tuple[np.ndarray, ...]:
    order = np.random.default_rng(1000 + split).permutation(n)
    a, b = int(fractions[0] * n), int((fractions[0] + fractions[1]) * n)
    return order[:a], order[a:b], order[b:]


def scores(y, lower, upper, sd) -> dict[str, float]:
    from sctk.uq import metrics

    y, lower, upper = (np.asarray(v).reshape(-1) for v in (y, lower, upper))
    row = {
        "coverage": metrics.coverage(y, lower, upper),
        "width": metrics.mean_width(lower, upper),
        "interval_score": metrics.interval_score(y, lower, upper, ALPHA),
    }
    if sd is not None:
        k = max(1, math.ceil(0.2 * y.size))
        order = np.argsort(sd, kind="stable")
        noisy, quiet = order[-k:], order[:k]
        row["noisiest"] = metrics.coverage(y[noisy], lower[noisy], upper[noisy])
        row["quietest"] = metrics.coverage(y[quiet], lower[quiet], upper[quiet])
        row["oracle"] = 2 * Z * float(np.mean(sd))
    return row


def throughput(predict: Predictor, X_big: np.ndarray, rows: int, repeats: int = 5) -> float:
    """Rows per second: the median of REPEATS timed runs (one run is at the mercy of whatever
    else the shared machine does in that half second)."""
    predict(X_big[:100])  # warm up
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        predict(X_big)
        rates.append(rows / (time.perf_counter() - t))
    return float(np.median(rates))


def run_tabular(name: str, data, splits: int, epochs: int, log) -> dict:
    X, y, sd = data
    runs: dict[str, list[dict]] = {}
    speed: dict[str, float] = {}
    for split in range(splits):
        t0 = time.perf_counter()
        tr, cal, te = partition(len(y), split)
        methods = sctk_methods(X[tr], y[tr], X[cal], y[cal], split, epochs)
        methods.update(mapie_methods(X[tr], y[tr], X[cal], y[cal], split))
        for method, predict in methods.items():
            if method == NO_PSI:
                continue
            lower, upper = predict(X[te])
            runs.setdefault(method, []).append(
                scores(y[te], lower, upper, None if sd is None else sd[te])
            )
        if split == 0:
            big = X[te][np.random.default_rng(7).integers(0, len(te), THROUGHPUT_ROWS)]
            for method, predict in methods.items():
                speed[method] = throughput(predict, big, THROUGHPUT_ROWS)
        log(f"{name}: split {split + 1}/{splits} in {time.perf_counter() - t0:.1f} s")
    return {"runs": runs, "speed": speed}


def pixel_rows(X: np.ndarray, S: np.ndarray) -> np.ndarray:
    """One row per (field, channel, pixel): u0, v0, uS, vS, channel, S of that channel."""
    B, C, H, W = X.shape
    cols = []
    for c in range(C):
        cols.append(
            np.column_stack(
                [
                    X[:, 0].reshape(-1),
                    X[:, 1].reshape(-1),
                    S[:, 0].reshape(-1),
                    S[:, 1].reshape(-1),
                    np.full(B * H * W, float(c)),
                    S[:, c].reshape(-1),
                ]
            ).reshape(B, H * W, 6)
        )
    return np.stack(cols, axis=1).reshape(-1, 6)  # field-major, then channel, then pixel


def run_flow(samples: int, splits: int, epochs: int, mapie_rows: int, log) -> dict:
    from sctk.uq.conformal import ConformalCalibrator
    from sctk.uq.field_hybrid import FieldHybridRegressor
    from sctk.uq.flow import make_pairs

    t0 = time.perf_counter()
    X, S, Y = make_pairs(samples, seed=0, problem=FLOW)
    log(f"flow: {samples} pairs in {time.perf_counter() - t0:.1f} s")
    runs: dict[str, list[dict]] = {}
    speed: dict[str, float] = {}
    per_field = int(np.prod(X.shape[1:]))
    for split in range(splits):
        t0 = time.perf_counter()
        tr, cal, te = partition(samples, split, (1 / 3, 1 / 3))
        model = FieldHybridRegressor(
            physics=flow_physics, dx=2 * np.pi / FLOW.n, width=16, epochs=epochs, seed=split
        ).fit(X[tr], Y[tr], X[cal], Y[cal])
        plain = ConformalCalibrator(normalized=False).fit(Y[cal].reshape(-1), S[cal].reshape(-1))

        def hybrid(Xf, model=model):
            out = model.predict_interval(Xf, ALPHA)
            return out["lower"], out["upper"]

        def physics_only(Xf, plain=plain):
            return plain.interval(flow_physics(Xf).reshape(-1), None, ALPHA)

        rng = np.random.default_rng(split)
        rows_tr = pixel_rows(X[tr], S[tr])
        pick = rng.choice(len(rows_tr), min(mapie_rows, len(rows_tr)), replace=False)
        mapie = mapie_methods(
            rows_tr[pick],
            Y[tr].reshape(-1)[pick],
            pixel_rows(X[cal], S[cal]),
            Y[cal].reshape(-1),
            split,
        )
        methods: dict[str, Predictor] = {SCTK: hybrid, PHYSICS_PLAIN: physics_only}
        for method, predict in mapie.items():
            methods[method] = lambda Xf, p=predict: p(pixel_rows(Xf, flow_physics(Xf)))
        for method, predict in methods.items():
            lower, upper = predict(X[te])
            runs.setdefault(method, []).append(scores(Y[te], lower, upper, None))
        if split == 0:
            n_fields = math.ceil(THROUGHPUT_ROWS / per_field)
            big = X[te][np.arange(n_fields) % len(te)]
            for method, predict in methods.items():
                speed[method] = throughput(predict, big, n_fields * per_field)
        log(f"flow: split {split + 1}/{splits} in {time.perf_counter() - t0:.1f} s")
    return {"runs": runs, "speed": speed}


def _flow_problem():
    from sctk.uq.flow import FlowProblem

    return FlowProblem(n=16, fine=32, fine_steps=32)


FLOW = _flow_problem()


def flow_physics(velocity):
    from sctk.uq.flow import coarse_physics

    return coarse_physics(velocity, FLOW)


# --- summary and report ----------------------------------------------------------------------


def summarise(result: dict) -> dict[str, dict[str, float]]:
    table = {}
    for method, rows in result["runs"].items():
        cov = [r["coverage"] for r in rows]
        entry = {
            "coverage": float(np.mean(cov)),
            "min_coverage": float(np.min(cov)),
            "width": float(np.mean([r["width"] for r in rows])),
            "interval_score": float(np.mean([r["interval_score"] for r in rows])),
            "rows_per_s": result["speed"].get(method, float("nan")),
            "splits": len(rows),
        }
        for key in ("noisiest", "quietest", "oracle"):
            if key in rows[0]:
                entry[key] = float(np.mean([r[key] for r in rows]))
        table[method] = entry
    return table


def fmt(value, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return format(value, spec)


def table_markdown(problems: dict[str, dict]) -> list[str]:
    lines = [
        "| problem | method | splits | mean cov | min cov | mean width | oracle width "
        "| interval score | cov noisiest 20% | cov quietest 20% | rows/s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for problem, table in problems.items():
        for method, e in table.items():
            lines.append(
                f"| {problem} | {method} | {e['splits']} | {e['coverage']:.3f} "
                f"| {e['min_coverage']:.3f} | {fmt(e['width'], '.4g')} "
                f"| {fmt(e.get('oracle'), '.4g')} | {fmt(e['interval_score'], '.4g')} "
                f"| {fmt(e.get('noisiest'), '.3f')} | {fmt(e.get('quietest'), '.3f')} "
                f"| {fmt(e['rows_per_s'], ',.0f')} |"
            )
    return lines


def verdicts(problems: dict[str, dict], no_psi_speed: dict[str, float]) -> list[str]:
    out = []
    for problem in ("heteroscedastic", "flow"):
        table = problems.get(problem)
        if not table:
            continue
        ours = table[SCTK]
        held = {m: e for m, e in table.items() if m in MAPIE_METHODS and e["coverage"] >= HELD}
        best = min(held.items(), key=lambda kv: kv[1]["width"]) if held else None
        ok_cov = ours["coverage"] >= HELD
        if best is None:
            text = "no MAPIE method held coverage, so there is no width to beat"
            met = ok_cov
        else:
            met = ok_cov and ours["width"] <= best[1]["width"]
            text = (
                f"sctk mean width {ours['width']:.4g} at coverage {ours['coverage']:.3f} against "
                f"{best[0]} {best[1]['width']:.4g} at {best[1]['coverage']:.3f} "
                f"(ratio {ours['width'] / best[1]['width']:.2f})"
            )
        out.append(
            f"- Width on {problem} no more than the best MAPIE method's at held coverage "
            f"(mean >= {HELD}): **{'met' if met else 'not met'}** — {text}."
        )
        if "oracle" in ours:
            ratio = ours["width"] / ours["oracle"]
            out.append(
                f"- Width on {problem} within 10% of the oracle width: "
                f"**{'met' if ratio <= 1.10 else 'not met'}** — {ours['width']:.4g} against "
                f"{ours['oracle']:.4g} (ratio {ratio:.2f})."
            )
        else:
            out.append(
                f"- Width on {problem} within 10% of the oracle: not applicable — the flow "
                "has no known noise sd (the truth is a deterministic fine solve)."
            )
        if "noisiest" in ours:
            out.append(
                f"- Coverage on the noisiest 20% of {problem} (by the true sd) at least 0.85: "
                f"**{'met' if ours['noisiest'] >= 0.85 else 'not met'}** — "
                f"{ours['noisiest']:.3f} (MAPIE split GBR: {table[MAPIE_SPLIT]['noisiest']:.3f})."
            )
        else:
            out.append(
                f"- Coverage on the noisiest 20% of {problem}: not measured — no true noise sd."
            )
    for problem, table in problems.items():
        ours, peer = table[SCTK]["rows_per_s"], table[MAPIE_SPLIT]["rows_per_s"]
        line = (
            f"- Throughput on {problem} at least MAPIE split GBR's: "
            f"**{'met' if ours >= peer else 'not met'}** — {ours:,.0f} against {peer:,.0f} "
            f"rows/s (ratio {ours / peer:.2f})"
        )
        no_psi = no_psi_speed.get(problem)
        if no_psi:
            line += (
                f"; without the Psi confidence score (an input gradient that predict_interval "
                f"computes for every row) sctk gives {no_psi:,.0f} rows/s "
                f"(ratio {no_psi / peer:.2f})"
            )
        out.append(line + ".")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="fewer splits and epochs (~2 min)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument(
        "--problem",
        action="append",
        choices=PROBLEMS,
        help="run only this problem (repeatable; implies --no-write)",
    )
    parser.add_argument(
        "--tables",
        action="store_true",
        help="the real tables against MAPIE with HistGradientBoosting (bench_uq_tables.py), "
        "written to their own section",
    )
    parser.add_argument(
        "--table", action="append", help="with --tables: only this table (implies --no-write)"
    )
    args = parser.parse_args(argv)
    if args.tables:
        return main_tables(args)
    chosen = args.problem or list(PROBLEMS)
    if args.problem:
        args.no_write = True
    import mapie
    import sklearn

    warnings.filterwarnings("ignore")
    logging.disable(logging.INFO)  # MAPIE CQR logs "The predictions are ill-sorted."
    splits = 3 if args.quick else args.splits
    epochs = 60 if args.quick else 400
    flow_splits = min(splits, 2 if args.quick else 20)
    flow_samples, flow_epochs = (90, 15) if args.quick else (120, 25)
    mapie_rows = 5000 if args.quick else 10000
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {message}", file=sys.stderr, flush=True)

    runners = {
        "heteroscedastic": lambda: run_tabular("heteroscedastic", synthetic(), splits, epochs, log),
        "diabetes": lambda: run_tabular("diabetes", diabetes(), splits, epochs, log),
        "flow": lambda: run_flow(flow_samples, flow_splits, flow_epochs, mapie_rows, log),
    }
    raw = {name: runners[name]() for name in PROBLEMS if name in chosen}
    problems = {name: summarise(result) for name, result in raw.items()}
    no_psi_speed = {
        name: result["speed"][NO_PSI] for name, result in raw.items() if NO_PSI in result["speed"]
    }
    elapsed = time.perf_counter() - started
    load = os.getloadavg()[0]
    command = "python benchmarks/bench_uq.py" + (
        " --quick" if args.quick else f" --splits {args.splits}"
    )
    table = table_markdown(problems)
    goals = verdicts(problems, no_psi_speed)
    print("\n".join(table))
    print("\n".join(goals))
    body = "\n".join(
        [
            f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
            f"{os.cpu_count()} CPUs (load average {load:.1f} at the end), Python "
            f"{platform.python_version()}, torch {torch.__version__}, MAPIE {mapie.__version__}, "
            f"scikit-learn {sklearn.__version__}, everything single-threaded (torch 1 thread, "
            f"OMP/MKL 1, n_jobs 1); {elapsed / 60:.1f} min in all; command: `{command}` "
            "(MAPIE installed for the benchmark only: `pip install mapie`).",
            "",
            f"Nominal coverage 0.9 (alpha {ALPHA}). Each problem is drawn once (seeded) and cut "
            "into random train / calibration / test partitions, the same ones for every "
            "method; the figures are means over the splits. Heteroscedastic: 5000 rows "
            "(y = sin(x0) + 0.3 x1 + N(0, (0.1 + 0.5 |x0|)^2), x ~ U(-3, 3)^2), 50/20/30%; "
            "diabetes: scikit-learn's 442 rows, 50/20/30%; flow: "
            f"{flow_samples} pairs of the flow demo on a 16 x 16 grid, a third each, "
            f"{flow_splits} splits (each trains a CNN), coverage over every test pixel value. "
            "sctk: HybridRegressor with its defaults (a (64, 64) SiLU MLP, Adam at lr 1e-3, "
            "early stopping on 10% of the training rows with patience 50, beta-NLL with beta "
            f"0.5), up to {epochs} epochs, no physics on the "
            "tabular problems; 'sctk plain split' is the same network with unnormalised "
            f"scores. Flow: FieldHybridRegressor (width 16, {flow_epochs} epochs) with the "
            "coarse solver as physics; the peer there is the physics prediction alone with "
            "plain split-conformal intervals, and MAPIE runs on one row per pixel value "
            "(input velocity and physics prediction at the pixel, the channel), trained on "
            f"{mapie_rows:,} sampled training rows. MAPIE: GradientBoostingRegressor with "
            "defaults (100 trees, depth 3), residual-normalised with a second GBR as the "
            "residual model (fitted on part of the calibration set, MAPIE's default), CQR "
            "with quantile-loss GBRs. 'noisiest' / 'quietest': the 20% of test points with "
            "the largest / smallest TRUE noise sd (known only for the synthetic problem); "
            "'oracle width' = 2 x 1.645 x mean true sd. rows/s: predict with intervals on "
            "100,000 rows (on the flow: pixel values, physics included) with the first "
            "split's models, the median of 5 timed runs.",
            "",
            *table,
            "",
            "Goals:",
            "",
            *goals,
            "",
            "A load average above the number of CPUs means the machine was shared while "
            "measuring; throughput then reads low for every method alike.",
        ]
    )
    if not args.no_write:
        write_section(SECTION, f"{SECTION}\n\n{body.strip()}\n")
        print(f"written to {RESULTS}")


TABLES_SECTION = "## Uncertainty quantification on real tables against MAPIE (HistGradientBoosting)"


def main_tables(args) -> None:
    import bench_uq_tables as bt  # benchmarks/bench_uq_tables.py
    import mapie
    import sklearn
    import statsmodels

    warnings.filterwarnings("ignore")
    logging.disable(logging.INFO)
    splits = 2 if args.quick else args.splits
    repeats = 1 if args.quick else 5
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {message}", file=sys.stderr, flush=True)

    data = bt.tables()
    names = args.table or list(data)
    if args.table:
        args.no_write = True
    raw = {name: bt.run_table(name, *data[name], splits, log) for name in names}
    problems = {name: bt.summarise(r) for name, r in raw.items()}
    timing = {**bt.time_20k(repeats, log), "repeats": repeats}
    table = bt.markdown(problems, {name: r["chosen"] for name, r in raw.items()})
    goals = bt.verdicts(problems, timing)
    print("\n".join(table))
    print("\n".join(goals))
    elapsed = time.perf_counter() - started
    command = "python benchmarks/bench_uq.py --tables" + (
        " --quick" if args.quick else f" --splits {splits}"
    )
    body = "\n".join(
        [
            f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
            f"{os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f} at the end), Python "
            f"{platform.python_version()}, MAPIE {mapie.__version__}, scikit-learn "
            f"{sklearn.__version__}, statsmodels {statsmodels.__version__}, torch "
            f"{torch.__version__}; single-threaded (OMP/MKL 1, torch 1 thread); "
            f"{elapsed / 60:.1f} min in all; command: `{command}` (MAPIE installed for the "
            "benchmark only: `pip install mapie`).",
            "",
            bt.__doc__.split("\n\n", 2)[2].strip().replace("\n", " "),
            f" Nominal coverage 0.9 (alpha {bt.ALPHA}); figures are means over the splits. "
            "fit s: fit and calibration of one split (MAPIE CV+: its five folds). rows/s: "
            "predict with intervals on 100,000 rows (MAPIE CV+: 1,000, as it holds a test rows "
            "x training rows array) with the first split's models, the median of 3 runs.",
            "",
            *table,
            "",
            "Goals:",
            "",
            *goals,
        ]
    )
    if not args.no_write:
        write_section(TABLES_SECTION, f"{TABLES_SECTION}\n\n{body.strip()}\n")
        print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
