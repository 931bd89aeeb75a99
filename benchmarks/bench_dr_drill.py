"""Disaster-recovery drill: recovery time (RTO) and data age (RPO) on a data directory
holding about 100 MB.

Run by hand (not a test):

    python benchmarks/bench_dr_drill.py [--mb 100] [--no-write]

A temporary data directory gets --mb of datasets (seeded random numbers stored as Parquet,
so they hardly compress), a small UQ model and its history; a backup repository is created
and one backup taken. Then the quarterly maintenance task `dr_drill` runs as the scheduler
would: it restores the latest snapshot into a scratch directory, starts `sctk serve` on it,
waits for /health/ready, makes one prediction over HTTP, stops the service and removes the
copy. RTO is the time from the start of the restore to the answered prediction; RPO is the
snapshot's age when the drill began. The peer is a plain copy of the same data directory
(shutil.copytree, no verification, no service): the floor a restore cannot beat on this
disk. Results go to benchmarks/RESULTS.md, section "Disaster-recovery drill".
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from results import write_section  # benchmarks/results.py

SECTION = "## Disaster-recovery drill"


def populate(settings, mb: float) -> int:
    import numpy as np
    import pandas as pd

    from sctk.pipeline import store
    from sctk.storage.engine import make_engine, session_scope
    from sctk.uq import registry
    from sctk.uq.hybrid import HybridRegressor

    rng = np.random.default_rng(0)
    engine = make_engine(settings)
    rows_per_mb = 1024 * 1024 // (8 * 8)
    total = 0
    try:
        for k in range(max(1, round(mb / 25))):
            n = int(min(25, mb) * rows_per_mb)
            frame = pd.DataFrame(rng.standard_normal((n, 8)), columns=[f"x{i}" for i in range(8)])
            with session_scope(engine) as s:
                out = store.Output(f"runs{k}", frame, "parquet", {"origin": "import", "inputs": []})
                store.store(s, settings.home, [out], "import", "bench")
        X = rng.standard_normal((400, 3))
        y = X.sum(axis=1) + rng.normal(0, 0.1, 400)
        model = HybridRegressor(epochs=5, hidden=(16,)).fit(X[:300], y[:300], X[300:], y[300:])
        with session_scope(engine) as s:
            registry.save(s, settings.home, model, "bench", lineage={"features": ["a", "b", "c"]})
    finally:
        engine.dispose()
    for p in settings.home.rglob("*"):
        if p.is_file():
            total += p.stat().st_size
    return total


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=100.0)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("SCTK_BACKUP_PASSPHRASE", "benchmark passphrase for the drill")

    from sctk import config
    from sctk.backup.create import create_backup
    from sctk.backup.location import init_repo
    from sctk.ops.init_home import init_home
    from sctk.ops.runner import run_task
    from sctk.runtime import Runtime

    with tempfile.TemporaryDirectory(prefix="sctk-drill-") as tmp:
        home = Path(tmp) / "home"
        init_home(home)
        settings = config.load(home).settings
        size = populate(settings, args.mb)
        init_repo(settings)
        t = time.perf_counter()
        with Runtime(settings) as rt:
            create_backup(rt, "daily")
        backup_s = time.perf_counter() - t

        t = time.perf_counter()
        shutil.copytree(home / "data", Path(tmp) / "copy")
        copy_s = time.perf_counter() - t

        record = run_task(settings, "dr_drill", trigger="benchmark")
        if record.status != "ok":
            sys.exit(f"the drill failed: {record.summary}")
        d = record.details

    load = os.getloadavg()[0]
    rows = [
        ("data directory", f"{size / 1e6:.0f} MB"),
        ("backup (first, into an empty repository)", f"{backup_s:.1f} s"),
        ("RTO: restore + start + health + one prediction", f"{d['rto_seconds']:.1f} s"),
        ("RPO: age of the snapshot the drill restored", f"{d['rpo_seconds']:.0f} s"),
        ("restored", f"{d['restored_files']} files, {d['restored_bytes'] / 1e6:.0f} MB"),
        ("peer: plain copy of data/ (no checks, no service)", f"{copy_s:.1f} s"),
        ("RTO / plain copy", f"{d['rto_seconds'] / copy_s:.1f}x"),
    ]
    text = "\n".join(
        [
            SECTION,
            "",
            f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
            f"{os.cpu_count()} CPUs (load average {load:.1f} at the end), SQLite; command: "
            f"`python benchmarks/bench_dr_drill.py --mb {args.mb:g}`. The drill is the "
            "quarterly maintenance task `dr_drill` (see its docstring in src/sctk/ops/drill.py).",
            "",
            "| | |",
            "| --- | --- |",
            *[f"| {k} | {v} |" for k, v in rows],
            "",
            "The RPO here is seconds because the drill ran right after the backup; in service "
            "it is the time since the last daily backup (at most a day plus the drill's delay).",
            "",
        ]
    )
    print(text)
    if not args.no_write:
        write_section(SECTION, text)


if __name__ == "__main__":
    main()
