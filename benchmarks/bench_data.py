"""Data larger than memory: a streamed import and a batch prediction, locally and on Dask.

Run by hand (not a test):

    python benchmarks/bench_data.py [--rows 12000000] [--no-write]

In a temporary data directory (SQLite):

1. a Parquet file of ROWS rows x 8 float64 features (and a target) is written a million rows
   at a time; a tiny network (`uq.train`, 8 features, method "mlp-normalised") is trained on
   a separate 20,000-row sample of the same function;
2. import: `sctk data import big.parquet` as its own process; its wall time and peak RSS
   (the child's VmHWM, see run_command);
3. predict: `sctk uq predict drag --data big --out pred.parquet` as its own process (read,
   predict, write, a partition at a time); wall time and peak RSS. Peer, in this process:
   the model's in-memory `predict_interval` on the first min(ROWS, 1M) rows already in
   memory (best of three); the ratio is the streamed rows/s over the in-memory rows/s;
4. the `uq.predict` job's domain function (`predict_dataset`) on a real Dask cluster: a
   `dask scheduler` process and 1, then 2 `dask worker` processes (one thread each) started
   here; wall times, the speed-up, and the stored dataset's SHA-256 against the run
   without Dask (identical outputs).

Goals (issue 22): peak RSS of each command <= 700 MiB; streamed predict >= 0.5x in-memory.
The figures are printed and written to benchmarks/RESULTS.md, section "Data larger than
memory".
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from results import RESULTS, write_section  # benchmarks/results.py

SECTION = "## Data larger than memory"
FEATURES = [f"f{k}" for k in range(8)]
CHUNK = 1_000_000
MiB = 2**20
# torch on every side single-threaded: on a small machine shared with other work, its
# thread pool oversubscribed the cores and ran ten times slower than one thread (measured)
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def target(X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return (
        np.sin(X[:, 0])
        + 0.5 * X[:, 1] * X[:, 2]
        + 0.1 * X[:, 3:].sum(axis=1)
        + rng.normal(0, 0.05, len(X))
    )


def write_source(path: Path, rows: int) -> None:
    """ROWS rows of 8 features and y, written a million rows at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(2026)
    writer = None
    for start in range(0, rows, CHUNK):
        n = min(CHUNK, rows - start)
        X = rng.uniform(-2, 2, (n, 8))
        table = pa.table({**{f: X[:, k] for k, f in enumerate(FEATURES)}, "y": target(X, rng)})
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    writer.close()


def sample_csv(path: Path, rows: int = 20_000) -> None:
    import pandas as pd

    rng = np.random.default_rng(7)
    X = rng.uniform(-2, 2, (rows, 8))
    frame = pd.DataFrame({f: X[:, k] for k, f in enumerate(FEATURES)})
    frame["y"] = target(X, rng)
    frame.to_csv(path, index=False)


def run_command(home: Path, *args: str) -> tuple[float, int, float]:
    """`sctk --home HOME ARGS` as a child: wall seconds, peak RSS (bytes) and CPU seconds.

    The CPU seconds come from wait4 of that child alone; the peak RSS from its VmHWM, read
    every 20 ms while it runs (the high-water mark of its own image, which is monotonic):
    wait4's ru_maxrss also counts the pages of this process, which the child shares between
    fork and exec (it gave 655-656 MiB for both commands before and after issue 22's rework:
    this process's size; a child of a 300 MiB process listing the datasets read 147 MiB
    here)."""
    start = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "sctk", "--home", str(home), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **ONE_THREAD},
    )
    # read the pipes on threads so that wait4, not communicate, reaps the child
    import threading

    captured: dict[str, bytes] = {}

    def drain(name: str, stream) -> None:
        captured[name] = stream.read()

    readers = [
        threading.Thread(target=drain, args=("out", child.stdout)),
        threading.Thread(target=drain, args=("err", child.stderr)),
    ]
    peak = [0]

    def watch() -> None:
        status = Path(f"/proc/{child.pid}/status")
        while child.returncode is None:
            try:
                for line in status.read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak[0] = max(peak[0], int(line.split()[1]) * 1024)
            except OSError:  # gone
                return
            time.sleep(0.02)

    readers.append(threading.Thread(target=watch))
    for r in readers:
        r.start()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    for r in readers:
        r.join()
    if os.waitstatus_to_exitcode(status):
        err = captured.get("err", b"").decode(errors="replace").strip()[-800:]
        raise SystemExit(f"sctk {' '.join(args)} failed: {err}")
    cpu = usage.ru_utime + usage.ru_stime
    return wall, peak[0], cpu


def in_memory_rate(home: Path, source: Path, rows: int) -> tuple[float, float, int]:
    """Rows per wall second and per CPU second of the model's predict_interval on rows
    already in memory (best of three)."""
    import pyarrow.parquet as pq

    from sctk import config
    from sctk.storage.engine import make_engine, session_scope
    from sctk.uq import registry

    n = min(rows, CHUNK)
    X = pq.ParquetFile(source).read_row_group(0, columns=FEATURES).to_pandas().to_numpy()[:n]
    engine = make_engine(config.load(home).settings)
    with session_scope(engine) as session:
        model = registry.load(home, registry.resolve(session, "drag"))
    engine.dispose()
    best = best_cpu = float("inf")
    for _ in range(3):
        start, cpu = time.perf_counter(), time.process_time()
        model.predict_interval(X, alpha=0.1)
        best = min(best, time.perf_counter() - start)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return n / best, n / best_cpu, n


def predict_job(home: Path, output: str, client=None) -> tuple[float, str]:
    from sctk import config
    from sctk.storage.engine import make_engine, session_scope
    from sctk.uq.predict_job import predict_dataset

    engine = make_engine(config.load(home).settings)
    try:
        with session_scope(engine) as session:
            start = time.perf_counter()
            ds = predict_dataset(
                session, home, {"model": "drag", "dataset": "big", "output": output}, client=client
            )
            return time.perf_counter() - start, ds.sha256
    finally:
        engine.dispose()


def warm(home: str) -> None:
    """On a worker: import torch and load the model, as its first partition would."""
    from sctk import config
    from sctk.storage.engine import make_engine, session_scope
    from sctk.uq import registry

    engine = make_engine(config.load(Path(home)).settings)
    with session_scope(engine) as session:
        registry.load(Path(home), registry.resolve(session, "drag"))
    engine.dispose()


def on_dask(home: Path, workdir: Path) -> dict[str, object]:
    """The job on a `dask scheduler` with 1, then 2 `dask worker` processes."""
    from dask.distributed import Client

    dask = Path(sys.executable).with_name("dask")
    file = workdir / "scheduler.json"
    env = {**os.environ, **ONE_THREAD}
    procs = [
        subprocess.Popen(
            [
                str(dask),
                "scheduler",
                "--scheduler-file",
                str(file),
                "--port",
                "0",
                "--no-dashboard",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
    ]

    def worker() -> None:
        procs.append(
            subprocess.Popen(
                [
                    str(dask),
                    "worker",
                    "--scheduler-file",
                    str(file),
                    "--nthreads",
                    "1",
                    "--no-dashboard",
                    "--memory-limit",
                    "0",
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
        )

    out: dict[str, object] = {}
    try:
        deadline = time.monotonic() + 60
        while not file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        worker()
        with Client(scheduler_file=str(file), timeout=60) as client:
            client.wait_for_workers(1, timeout=60)
            client.run(warm, str(home))  # torch imported, the model loaded: not timed
            out["one"] = predict_job(home, "pred-dask-1", client)
            worker()
            client.wait_for_workers(2, timeout=60)
            client.run(warm, str(home))
            out["two"] = predict_job(home, "pred-dask-2", client)
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=12_000_000)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    import torch

    from sctk.ops.init_home import init_home

    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory(prefix="sctk-bench-data-") as tmp:
        workdir = Path(tmp)
        home = workdir / "home"
        init_home(home)
        source = workdir / "big.parquet"
        t0 = time.perf_counter()
        write_source(source, args.rows)
        print(f"wrote {args.rows:,} rows ({source.stat().st_size / MiB:.0f} MiB) in "
              f"{time.perf_counter() - t0:.1f} s")  # fmt: skip
        sample = workdir / "sample.csv"
        sample_csv(sample)
        run_command(home, "data", "import", str(sample), "--name", "sample")
        config = workdir / "model.toml"
        # the network, pinned: the goal was set against it, and method "auto" now picks
        # gradient-boosted trees for these rows, ten times slower to predict, beside which
        # the streaming's own cost would hardly show
        config.write_text('epochs = 5\nmethod = "mlp-normalised"\n', encoding="utf-8")
        run_command(
            home, "uq", "train", "--data", "sample", "--target", "y", "--name", "drag",
            "--inline", "--config", str(config),
        )  # fmt: skip
        imp_wall, imp_rss, _ = run_command(home, "data", "import", str(source), "--name", "big")
        print(f"import: {imp_wall:.1f} s, peak RSS {imp_rss / MiB:.0f} MiB")
        out = workdir / "pred.parquet"
        pred_wall, pred_rss, pred_cpu = run_command(
            home, "uq", "predict", "drag", "--data", "big", "--out", str(out)
        )
        streamed, streamed_cpu = args.rows / pred_wall, args.rows / pred_cpu
        memory_rate, memory_cpu, memory_rows = in_memory_rate(home, source, args.rows)
        print(
            f"predict: {pred_wall:.1f} s ({streamed:,.0f} rows/s; {streamed_cpu:,.0f} per CPU s), "
            f"peak RSS {pred_rss / MiB:.0f} MiB; in memory {memory_rate:,.0f} rows/s "
            f"({memory_cpu:,.0f} per CPU s) -> {streamed / memory_rate:.2f}x wall, "
            f"{streamed_cpu / memory_cpu:.2f}x CPU"
        )
        local_wall, local_sha = predict_job(home, "pred-local")
        print(f"uq.predict job without Dask: {local_wall:.1f} s")
        dask = on_dask(home, workdir)
        (one_wall, one_sha), (two_wall, two_sha) = dask["one"], dask["two"]  # type: ignore[misc]
        same = one_sha == two_sha == local_sha
        print(
            f"on Dask: 1 worker {one_wall:.1f} s, 2 workers {two_wall:.1f} s "
            f"(speed-up {one_wall / two_wall:.2f}x); outputs identical: {same}"
        )
    if not args.no_write:
        text = report(
            args,
            imp_wall,
            imp_rss,
            pred_wall,
            pred_rss,
            (streamed, streamed_cpu),
            (memory_rate, memory_cpu),
            memory_rows,
            local_wall,
            one_wall,
            two_wall,
            same,
        )
        write_section(SECTION, text)
        print(f"wrote {RESULTS}")
    return 0 if same else 1


def report(args, imp_wall, imp_rss, pred_wall, pred_rss, streamed, memory, memory_rows,
           local_wall, one_wall, two_wall, same) -> str:  # fmt: skip
    rows = args.rows
    (wall_rate, cpu_rate), (mem_wall, mem_cpu) = streamed, memory
    ok = "met" if max(imp_rss, pred_rss) <= 700 * MiB else "NOT met"
    by_wall, by_cpu = wall_rate / mem_wall, cpu_rate / mem_cpu
    return f"""{SECTION}

`python benchmarks/bench_data.py --rows {rows}` on {platform.node()} ({os.cpu_count()} cores,
shared with other work), {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. {rows:,} rows x 8 float64
features (and a target) from one Parquet file ({rows * 9 * 8 / MiB:,.0f} MiB as float64);
default import batch (65,536 rows) and partition (1,048,576 rows); a network of 8 features
(method "mlp-normalised", pinned: "auto" picks trees here, ten times slower to predict)
trained 5 epochs; torch single-threaded everywhere (OMP_NUM_THREADS=1: its thread pool
oversubscribed the shared cores and ran up to ten times slower, measured).

| step | wall | rows/s | peak RSS |
| --- | --- | --- | --- |
| `sctk data import` (its own process) | {imp_wall:.1f} s | {rows / imp_wall:,.0f} \
| {imp_rss / MiB:.0f} MiB |
| `sctk uq predict --out F.parquet` (read, predict, write) | {pred_wall:.1f} s \
| {wall_rate:,.0f} ({cpu_rate:,.0f} per CPU s) | {pred_rss / MiB:.0f} MiB |
| peer: `predict_interval` on {memory_rows:,} rows in memory | \
| {mem_wall:,.0f} ({mem_cpu:,.0f} per CPU s) | |
| `uq.predict` job, no Dask | {local_wall:.1f} s | {rows / local_wall:,.0f} | |
| `uq.predict` job, Dask, 1 worker | {one_wall:.1f} s | {rows / one_wall:,.0f} | |
| `uq.predict` job, Dask, 2 workers | {two_wall:.1f} s | {rows / two_wall:,.0f} | |

- Peak RSS of each command (its VmHWM; earlier runs read wait4's ru_maxrss, which gave
  this benchmark's own size, 655-656 MiB, for both commands) <= 700 MiB: {ok}.
- Streamed predict end to end (process start, sha256 check, read, predict, write) over the
  in-memory predict_interval: {by_wall:.2f}x by wall time, {by_cpu:.2f}x by CPU time (goal
  >= 0.5x: {"met" if min(by_wall, by_cpu) >= 0.5 else "NOT met"}; before issue 22's rework,
  12M rows on the same machine: 77.6 s, 0.21x by wall time, 0.20x by CPU time). On a
  machine shared with other work the wall figures of a 2-second in-memory burst and a long
  command are not taken under the same load; the CPU figures are. Where the CPU goes (2M
  rows, in process, `time.process_time` per step): the model's predict_interval 60%,
  reading the input (zstd and dictionary pages, 8 of its 9 columns) 15-19%, writing the
  13 float64 columns 11%, the sha256 check of the input 5%, the rest (features out of
  Arrow, the output table) 3%; starting the command (Python, torch, pandas, SQLAlchemy)
  is about 3 CPU s of its own. Before the rework the rows went through pandas both ways
  and the file was written with dictionaries in 65,536-row groups, where the encoder never
  fell back for floats: writing alone took more CPU than the model.
- Dask, 2 workers over 1: {one_wall / two_wall:.2f}x (`dask scheduler` and `dask worker`
  processes, one thread each, started by the benchmark; workers warmed up: torch imported,
  model loaded); the stored datasets of the three job runs have the same SHA-256: {same}.
  Every finished partition (about 100 MB of rows) travels to the job's process, which
  writes them in order alone; on 2 shared cores the scheduler, the workers and that
  process compete for the same CPU, so the second worker adds little here.
"""


if __name__ == "__main__":
    sys.exit(main())
