"""Many small files shaped like a results directory, for the backup benchmark's files-cache
case (issue 26, item 3).

    python benchmarks/backup_dataset_small.py generate DIR --files 1000000 [--seed 6]

`results/<project>/<experiment>/<run>/` directories of about 20 files each, as a training
or simulation campaign leaves them: `params.json` and `summary.txt` (short text),
`metrics.csv` and `stdout.log` (text and numbers: compressible), `plots/*.png` and
`arrays/*.bin` (random bytes standing for compressed images and binary arrays: not
compressible), and a few `checkpoints/state-*.pt` of random bytes. Sizes are 1 to 16 KB,
most of them small (mean about 5 KB). Every file's content is its own (a unique header and
a slice at a random offset of a large text or random buffer), so no tool can deduplicate
one file against another. Seeded: the same seed and count give the same bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

KiB = 1024
STAMP = ".backup-dataset.json"
RUNS_PER_EXPERIMENT = 50
EXPERIMENTS_PER_PROJECT = 40

# (name, kind, min KiB, max KiB): the files of one run directory (20 files).
RUN_FILES = [
    ("params.json", "text", 1, 2),
    ("summary.txt", "text", 1, 3),
    ("metrics.csv", "text", 4, 16),
    ("stdout.log", "text", 2, 12),
    ("stderr.log", "text", 1, 2),
    *[(f"plots/fig-{i:02d}.png", "random", 2, 16) for i in range(6)],
    *[(f"arrays/part-{i:03d}.bin", "random", 1, 8) for i in range(6)],
    *[(f"checkpoints/state-{i}.pt", "random", 8, 16) for i in range(3)],
]

WORDS = [
    "epoch",
    "step",
    "loss",
    "accuracy",
    "learning_rate",
    "warmup",
    "residual",
    "physics",
    "kernel",
    "solver",
    "mesh",
    "tolerance",
    "converged",
    "iteration",
    "gradient",
    "norm",
    "batch",
    "seed",
    "temperature",
    "pressure",
    "flux",
    "boundary",
    "sample",
    "calibration",
    "interval",
    "coverage",
    "quantile",
    "ensemble",
    "member",
    "fold",
]


def _text_pool(rng: np.random.Generator, size: int) -> bytes:
    """Log- and CSV-like lines: words and numbers, compressible about 3 to 5 times."""
    lines = []
    total = 0
    while total < size:
        n = int(rng.integers(3, 9))
        words = [WORDS[int(i)] for i in rng.integers(0, len(WORDS), n)]
        nums = [f"{v:.6g}" for v in rng.normal(0, 10, int(rng.integers(1, 5)))]
        line = ",".join(words + nums) + "\n"
        lines.append(line)
        total += len(line)
    return "".join(lines).encode()


def generate(root: Path, files: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    text = _text_pool(rng, 8 * 1024 * KiB)
    noise = rng.bytes(8 * 1024 * KiB)
    pools = {"text": text, "random": noise}
    written = 0
    total = 0
    run = 0
    dirs_made: set[str] = set()
    while written < files:
        proj, rest = divmod(run, RUNS_PER_EXPERIMENT * EXPERIMENTS_PER_PROJECT)
        exp, r = divmod(rest, RUNS_PER_EXPERIMENT)
        base = root / "results" / f"project-{proj:03d}" / f"exp-{exp:03d}" / f"run-{r:04d}"
        take = RUN_FILES[: files - written]
        sizes = rng.integers(0, 1 << 30, (len(take), 2))
        for (name, kind, lo, hi), (u, v) in zip(take, sizes, strict=True):
            # skewed towards the small end: most results files are a few KB
            frac = (u / (1 << 30)) ** 2
            size = int(lo * KiB + frac * (hi - lo) * KiB)
            pool = pools[kind]
            off = int(v) % (len(pool) - size)
            header = f"{base.name}/{name} {written}\n".encode()
            data = header + pool[off : off + size - len(header)]
            path = base / name
            parent = str(path.parent)
            if parent not in dirs_made:
                os.makedirs(parent, exist_ok=True)
                dirs_made.add(parent)
            with open(path, "wb") as f:
                f.write(data)
            written += 1
            total += len(data)
        if len(dirs_made) > 10_000:
            dirs_made.clear()
        run += 1
    meta = {"shape": "small-files", "files": files, "seed": seed, "bytes": total, "runs": run}
    (root / STAMP).write_text(json.dumps(meta))
    return meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="Write the data set into DIR (which must not exist).")
    g.add_argument("dir", type=Path)
    g.add_argument("--files", type=int, required=True)
    g.add_argument("--seed", type=int, default=6)
    args = parser.parse_args(argv)
    if args.files < 1:
        parser.error("--files must be at least 1")
    if args.dir.exists():
        parser.error(f"{args.dir} exists already; give a new directory")
    print(json.dumps(generate(args.dir, args.files, args.seed)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
