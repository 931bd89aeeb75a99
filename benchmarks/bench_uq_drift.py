"""Coverage under drift: adaptive conformal inference (sctk adaptive mode) against split
conformal, on a stream whose noise level shifts halfway.

Run by hand (not a test):  python benchmarks/bench_uq_drift.py [--seeds 3] [--no-write]

Data: real tables statsmodels ships, never generated here: the RAND health insurance
experiment (`randhie`, 20,190 rows, target log(1 + doctor visits), 9 features) for the
figures; Fair's affairs survey (`fair`, 6,366 rows, target log(1 + affairs), 8 features) only
to choose the adaptive step gamma. The drift is the one the issue names: each row's target
gets extra Gaussian noise of 0.25 sd(y) up to the middle of the stream and 1.0 sd(y) after
(training and calibration rows get the first level). Per seed, the rows are shuffled and cut
into 30% training, 10% calibration and 60% stream; one sctk HybridRegressor is trained and
calibrated (normalised split conformal at alpha 0.1), then the stream is played in order:

- split conformal: every interval at alpha 0.1 from the fixed calibration;
- adaptive (sctk.uq.adaptive_alpha.run, what `sctk uq adaptive MODEL --on` does with each
  observation): the interval at alpha_t, then alpha_t + gamma (alpha - err_t).

Reported: coverage over the second half of the stream (after the shift) and its mean width;
goal: adaptive within 0.02 of 0.9. gamma is chosen on `fair` (the grid value whose
second-half coverage is nearest 0.9 over the seeds), then used unchanged on `randhie`.
The table is printed and written to benchmarks/RESULTS.md, section "UQ coverage under drift".
"""

from __future__ import annotations

import os

from results import write_section  # benchmarks/results.py

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from datetime import UTC, datetime  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

from sctk.uq import adaptive_alpha  # noqa: E402
from sctk.uq.hybrid import HybridRegressor  # noqa: E402

SECTION = "## UQ coverage under drift"
ALPHA = 0.1
GAMMAS = (0.002, 0.005, 0.01, 0.02, 0.05)
NOISE_BEFORE, NOISE_AFTER = 0.25, 1.0
EPOCHS = 40


def table(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Features and log(1 + count) target of a statsmodels table."""
    from statsmodels.datasets import fair, randhie

    if name == "randhie":
        d = randhie.load_pandas().data
        y = np.log1p(d["mdvis"].to_numpy(float))
        X = d.drop(columns=["mdvis"]).to_numpy(float)
    else:
        d = fair.load_pandas().data
        y = np.log1p(d["affairs"].to_numpy(float))
        X = d.drop(columns=["affairs"]).to_numpy(float)
    return X, y


def interval_score(y, lower, upper) -> float:
    """Winkler's interval score at ALPHA (width plus 2 / alpha times each miss's distance)."""
    below = np.maximum(lower - y, 0.0)
    above = np.maximum(y - upper, 0.0)
    return float(np.mean(upper - lower + 2 / ALPHA * (below + above)))


def stream_run(X, y, seed: int, gammas) -> dict:
    """One seed: train, calibrate, play the drifting stream; second-half figures per method."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    n_tr, n_cal = int(0.3 * len(y)), int(0.1 * len(y))
    tr, cal, st = order[:n_tr], order[n_tr : n_tr + n_cal], order[n_tr + n_cal :]
    sd = float(y.std())
    noisy = y + rng.normal(0, NOISE_BEFORE * sd, len(y))
    y_stream = y[st].copy()
    half = len(st) // 2
    level = np.where(np.arange(len(st)) < half, NOISE_BEFORE, NOISE_AFTER)
    y_stream += rng.normal(0, 1, len(st)) * level * sd
    started = time.perf_counter()
    # the network with normalised scores, as when the figures in RESULTS.md were measured
    # (the default method is now chosen per data set)
    model = HybridRegressor(epochs=EPOCHS, seed=seed, method="mlp-normalised").fit(
        X[tr], noisy[tr], X_cal=X[cal], y_cal=noisy[cal]
    )
    fit_s = time.perf_counter() - started
    _, interval_at = model.interval_function(X[st])
    lower, upper = interval_at(ALPHA)
    covered = (y_stream >= lower) & (y_stream <= upper)
    out = {
        "fit_s": fit_s,
        "split": (float(covered[half:].mean()), float((upper - lower)[half:].mean())),
        "split_first": float(covered[:half].mean()),
        "split_score": interval_score(y_stream[half:], lower[half:], upper[half:]),
    }
    for g in gammas:
        s = adaptive_alpha.run(interval_at, len(X[cal]), y_stream, ALPHA, g, ALPHA)
        out[g] = (float(s.covered[half:].mean()), float((s.upper - s.lower)[half:].mean()))
        out[("first", g)] = float(s.covered[:half].mean())
        out[("score", g)] = interval_score(y_stream[half:], s.lower[half:], s.upper[half:])
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    seeds = list(range(args.seeds))

    X, y = table("fair")
    tuning = [stream_run(X, y, 100 + s, GAMMAS) for s in seeds]
    tuned = {g: float(np.mean([r[g][0] for r in tuning])) for g in GAMMAS}
    score = {g: float(np.mean([r[("score", g)] for r in tuning])) for g in GAMMAS}
    # the best interval score among the steps whose coverage after the shift is within 0.01
    # of the target there (coverage first: a narrow interval that misses is no answer)
    near = [g for g in GAMMAS if abs(tuned[g] - (1 - ALPHA)) <= 0.01]
    gamma = min(near, key=score.get) if near else min(GAMMAS, key=lambda g: abs(tuned[g] - 0.9))
    print("gamma chosen on fair:", gamma, tuned, score)

    X, y = table("randhie")
    runs = [stream_run(X, y, s, (gamma,)) for s in seeds]
    split_cov = np.mean([r["split"][0] for r in runs])
    split_w = np.mean([r["split"][1] for r in runs])
    aci_cov = np.mean([r[gamma][0] for r in runs])
    aci_w = np.mean([r[gamma][1] for r in runs])
    split_s = np.mean([r["split_score"] for r in runs])
    aci_s = np.mean([r[("score", gamma)] for r in runs])
    split_first = np.mean([r["split_first"] for r in runs])
    aci_first = np.mean([r[("first", gamma)] for r in runs])
    fit = np.mean([r["fit_s"] for r in runs])
    met = abs(aci_cov - (1 - ALPHA)) <= 0.02
    lines = [
        SECTION,
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d} on {platform.machine()} "
        f"({os.cpu_count()} cores, shared), Python {sys.version.split()[0]}, "
        f"torch {torch.__version__}: `python benchmarks/bench_uq_drift.py --seeds {args.seeds}`.",
        "",
        f"Stream: statsmodels `randhie` (20,190 rows; target log(1 + doctor visits)), 60% of "
        f"the rows played in order after training on 30% and calibrating on 10%; extra noise "
        f"{NOISE_BEFORE} sd(y) before the middle of the stream, {NOISE_AFTER} sd(y) after. "
        f"Mean over {args.seeds} seeds. gamma = {gamma}, chosen on statsmodels `fair` (the "
        "best interval score after the shift among the steps covering within 0.01 of 0.9 "
        "there; coverage / interval score by gamma: "
        + ", ".join(f"{g}: {tuned[g]:.3f} / {score[g]:.3f}" for g in GAMMAS)
        + ").",
        "",
        "| method (alpha 0.1) | coverage, 1st half | coverage, 2nd half | mean width, 2nd half "
        "| interval score, 2nd half |",
        "| --- | --- | --- | --- | --- |",
        f"| split conformal (fixed calibration) | {split_first:.3f} | {split_cov:.3f} | "
        f"{split_w:.3f} | {split_s:.3f} |",
        f"| sctk adaptive mode (ACI, gamma {gamma}) | {aci_first:.3f} | {aci_cov:.3f} | "
        f"{aci_w:.3f} | {aci_s:.3f} |",
        "",
        f"Goal (coverage after the shift within 0.02 of 0.9 in adaptive mode): "
        f"{'met' if met else 'NOT met'} ({aci_cov:.3f}; split conformal {split_cov:.3f}). "
        f"Training one model took {fit:.1f} s.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        write_section(SECTION, text)


if __name__ == "__main__":
    main()
