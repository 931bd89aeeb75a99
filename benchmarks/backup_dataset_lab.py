"""A second data set for the backup benchmark, shaped like a lab's working directory, and a
seeded change to it.

    python benchmarks/backup_dataset_lab.py generate DIR [--scale 1.0] [--seed 6]
    python benchmarks/backup_dataset_lab.py mutate DIR [--seed 6]

Made differently from backup_dataset.py (the reference set: one large database, mid-sized
arrays and tables): at scale 1 it is about 2 GiB of

- `runs/<run>/meta.json` and `runs/<run>/readings.csv`: about 6 000 small files (0.5 to
  20 KB) of per-run metadata and instrument readings;
- `arrays/*.npy`: 300 arrays of 0.5 to 4 MiB of mixed compressibility: uint8 images with
  a little noise, sparse float32 masks, quantised float64 signals, float32 noise (random);
- `db/lab.sqlite`: one SQLite database of about 150 MB (`samples`, with short binary
  payloads, and `notes` of text);
- `raw/`: 4 files of 300 MB each, the large instrument dumps: a float32 random walk (a
  little compressible), random bytes (an encrypted export: not compressible), a text log
  (very compressible) and a frame stream whose frames repeat with small edits (duplicate
  content within one file, which a deduplicating tool stores once).

`mutate` edits 5% of the small files, rewrites 3% of the arrays, appends to the log,
overwrites a few frames in the middle of the frame stream, updates 1% of the database rows
and inserts 2% more, and adds and removes a few runs. Seeded: the same seed and scale give
the same bytes.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from pathlib import Path

import numpy as np

MiB = 1 << 20
STAMP = ".backup-dataset.json"
RUNS = 3000  # two small files each
ARRAYS = 300
DB_BYTES = 150 * MiB
RAW_FILES = 4
RAW_BYTES = 300 * MiB
FRAME = 256 * 1024
DB_ROWS_PER_MB = 5_500

DESCRIPTION = (
    "the lab shape (benchmarks/backup_dataset_lab.py): {small_files:,} small JSON and CSV "
    "files, {arrays} .npy arrays of mixed compressibility, one SQLite database of "
    "{db_mib:.0f} MiB, and {raw} files of {raw_mib:.0f} MiB (a float32 random walk, random "
    "bytes, a text log, and a frame stream that repeats frames with small edits)"
)


def _write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def _meta(rng: np.random.Generator, run: int) -> str:
    doc = {
        "run": run,
        "operator": f"op{int(rng.integers(0, 12)):02d}",
        "instrument": ["spectrometer", "rheometer", "camera", "thermocouple"][run % 4],
        "settings": {
            f"p{k}": round(float(rng.normal()), 4) for k in range(int(rng.integers(4, 40)))
        },
        "tags": [f"t{int(x)}" for x in rng.integers(0, 50, size=int(rng.integers(1, 8)))],
    }
    return json.dumps(doc, indent=1)


def _readings(rng: np.random.Generator, n: int) -> str:
    t = np.cumsum(rng.exponential(0.1, n))
    v = np.round(np.sin(t) + rng.normal(0, 0.05, n), 4)
    return "t,value\n" + "\n".join(f"{a:.3f},{b}" for a, b in zip(t, v, strict=True)) + "\n"


def _array(rng: np.random.Generator, kind: str, nbytes: int) -> np.ndarray:
    if kind == "image":
        side = int(np.sqrt(nbytes))
        base = np.add.outer(np.arange(side), np.arange(side)) % 256
        return (base + rng.integers(0, 3, size=(side, side))).astype(np.uint8)
    if kind == "mask":
        out = np.zeros(nbytes // 4, dtype=np.float32)
        hot = rng.integers(0, len(out), size=len(out) // 50)
        out[hot] = rng.random(len(hot), dtype=np.float32)
        return out
    if kind == "signal":
        x = np.arange(nbytes // 8)
        return np.round(np.cos(x / 300.0) * 100 + rng.normal(0, 1, len(x)), 1)
    return rng.standard_normal(nbytes // 4, dtype=np.float32)


KINDS = ("image", "mask", "signal", "noise")


def _save_npy(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, arr)


def _database(path: Path, rng: np.random.Generator, nbytes: int) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path)
    con.executescript(
        "CREATE TABLE samples (id INTEGER PRIMARY KEY, run INTEGER, at REAL, payload BLOB);"
        "CREATE TABLE notes (id INTEGER PRIMARY KEY, sample INTEGER, body TEXT);"
    )
    rows = max(1000, int(nbytes / MiB * DB_ROWS_PER_MB))
    for start in range(0, rows, 50_000):
        n = min(50_000, rows - start)
        payload = rng.integers(0, 16, size=(n, 96), dtype=np.uint8)  # 4 bits of entropy a byte
        con.executemany(
            "INSERT INTO samples VALUES (?, ?, ?, ?)",
            (
                (start + i, (start + i) // 400, float(start + i) * 0.5, payload[i].tobytes())
                for i in range(n)
            ),
        )
        con.executemany(
            "INSERT INTO notes VALUES (?, ?, ?)",
            (
                (start + i, start + i, f"sample {start + i} looked fine at step {i % 97}")
                for i in range(0, n, 3)
            ),
        )
    con.commit()
    con.close()
    return rows


def _raw(root: Path, rng: np.random.Generator, nbytes: int) -> None:
    block = 8 * MiB
    with open(root / "raw" / "walk.f32", "wb") as f:
        level = 0.0
        for _ in range(max(1, nbytes // block)):
            steps = np.cumsum(rng.normal(0, 0.01, block // 4)).astype(np.float32) + level
            level = float(steps[-1])
            f.write(np.round(steps, 3).tobytes())
    with open(root / "raw" / "export.bin", "wb") as f:
        for _ in range(max(1, nbytes // block)):
            f.write(rng.bytes(block))
    with open(root / "raw" / "instrument.log", "w") as f:
        written, i = 0, 0
        while written < nbytes:
            line = (
                f"2026-01-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:{(i * 7) % 60:02d}Z "
                f"ch{i % 16} state={['ok', 'ok', 'ok', 'warn'][i % 4]} "
                f"reading={(i * 2654435761) % 100000 / 1000:.3f}\n"
            )
            f.write(line * 50)
            written += len(line) * 50
            i += 1
    frames = [rng.bytes(FRAME) for _ in range(16)]
    with open(root / "raw" / "frames.bin", "wb") as f:
        for k in range(max(1, nbytes // FRAME)):
            frame = bytearray(frames[int(rng.integers(0, len(frames)))])
            frame[:16] = k.to_bytes(16, "little")  # a frame counter: each frame differs a bit
            f.write(frame)


def generate(root: Path, scale: float = 1.0, seed: int = 6) -> dict:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    runs = max(500, int(RUNS * scale))  # "thousands" of small files even when scaled down
    for run in range(runs):
        _write(root / "runs" / f"r{run:05d}" / "meta.json", _meta(rng, run))
        _write(
            root / "runs" / f"r{run:05d}" / "readings.csv",
            _readings(rng, int(rng.integers(20, 900))),
        )
    arrays = max(12, int(ARRAYS * scale))
    for i in range(arrays):
        kind = KINDS[i % len(KINDS)]
        size = int(rng.integers(MiB // 2, 4 * MiB) * max(scale, 0.05))
        _save_npy(root / "arrays" / f"{kind}-{i:04d}.npy", _array(rng, kind, max(size, 64 * 1024)))
    rows = _database(root / "db" / "lab.sqlite", rng, int(DB_BYTES * scale))
    (root / "raw").mkdir(exist_ok=True)
    _raw(root, rng, max(FRAME * 8, int(RAW_BYTES * scale)))
    stamp = {
        "shape": "lab",
        "scale": scale,
        "seed": seed,
        "mutated": False,
        "db": "db/lab.sqlite",
        "db_tables": ["samples", "notes"],
        "db_rows": rows,
    }
    (root / STAMP).write_text(json.dumps(stamp))
    return summary(root)


def mutate(root: Path, seed: int = 6, fraction: float = 0.05) -> dict:
    stamp_path = root / STAMP
    stamp = json.loads(stamp_path.read_text())
    rng = np.random.default_rng(seed + 1000)
    small = sorted((root / "runs").rglob("*.*"))
    changed = 0
    for p in small:
        if rng.random() < fraction:
            if p.suffix == ".json":
                p.write_text(_meta(rng, int(rng.integers(0, 10**6))))
            else:
                with p.open("a") as f:
                    f.write(_readings(rng, 30).split("\n", 1)[1])
            changed += 1
    for p in sorted((root / "arrays").glob("*.npy")):
        if rng.random() < 0.03:
            arr = np.load(p)
            flat = arr.reshape(-1)
            cut = len(flat) // 3
            flat[cut : cut + len(flat) // 10] = flat[cut : cut + len(flat) // 10][::-1]
            np.save(p, arr)
            changed += 1
    with open(root / "raw" / "instrument.log", "a") as f:
        f.write("2026-02-01T00:00:00Z ch1 state=ok reading=1.000\n" * 20_000)
    frames = root / "raw" / "frames.bin"
    with open(frames, "r+b") as f:
        size = frames.stat().st_size
        for k in range(3):
            f.seek((size // 2 + k * 7 * FRAME) // FRAME * FRAME)
            f.write(rng.bytes(FRAME))
    changed += 2
    added = removed = 0
    runs = sorted((root / "runs").iterdir())
    for d in runs[: max(1, len(runs) // 200)]:
        for p in d.iterdir():
            p.unlink()
        d.rmdir()
        removed += 2
    for k in range(max(1, len(runs) // 100)):
        _write(root / "runs" / f"new{k:04d}" / "meta.json", _meta(rng, 10**6 + k))
        added += 1
    con = sqlite3.connect(root / stamp["db"])
    total = con.execute("SELECT count(*) FROM samples").fetchone()[0]
    updated = max(1, total // 100)
    start = int(rng.integers(0, max(1, total - updated)))
    con.execute(
        "UPDATE samples SET at = at + 1 WHERE id BETWEEN ? AND ?", (start, start + updated - 1)
    )
    inserted = max(1, total // 50)
    payload = rng.integers(0, 16, size=96, dtype=np.uint8).tobytes()
    con.executemany(
        "INSERT INTO samples VALUES (?, ?, ?, ?)",
        ((total + i, -1, 0.0, payload) for i in range(inserted)),
    )
    con.commit()
    con.close()
    stamp["mutated"] = True
    stamp_path.write_text(json.dumps(stamp))
    return {
        "files_changed": changed,
        "files_added": added,
        "files_removed": removed,
        "db_rows": {"updated": updated, "inserted": inserted},
    }


def summary(root: Path) -> dict:
    files = [p for p in root.rglob("*") if p.is_file() and p.name != STAMP]
    stamp = json.loads((root / STAMP).read_text())
    raw = sorted((root / "raw").iterdir())
    return {
        "files": len(files),
        "bytes": sum(p.stat().st_size for p in files),
        "description": DESCRIPTION.format(
            small_files=sum(1 for p in files if "runs" in p.parts),
            arrays=sum(1 for p in files if p.suffix == ".npy"),
            db_mib=(root / stamp["db"]).stat().st_size / MiB,
            raw=len(raw),
            raw_mib=sum(p.stat().st_size for p in raw) / len(raw) / MiB,
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate")
    g.add_argument("dir", type=Path)
    g.add_argument("--scale", type=float, default=1.0)
    g.add_argument("--seed", type=int, default=6)
    m = sub.add_parser("mutate")
    m.add_argument("dir", type=Path)
    m.add_argument("--seed", type=int, default=6)
    args = parser.parse_args(argv)
    if args.cmd == "generate":
        print(json.dumps(generate(args.dir, args.scale, args.seed)))
    else:
        print(json.dumps(mutate(args.dir, args.seed)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
