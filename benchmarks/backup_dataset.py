"""A seeded reference data set for the backup benchmark, and a seeded change to it.

    python benchmarks/backup_dataset.py generate DIR [--scale 1.0] [--seed 6]
    python benchmarks/backup_dataset.py mutate DIR [--seed 6]

At scale 1 the data set is about 1 GiB laid out like an sctk data directory:

- `sctk.db`: a SQLite database of about 200 MB: `measurements` (about 4.5 million rows of
  numbers) and `events` (about 400 000 rows of short text);
- `data/arrays/*.npy`: about 500 MB of numeric arrays, some compressible (Poisson counts,
  sparse masks, quantised smooth signals) and some not (Gaussian float64 noise);
- `data/tables/*.csv` and `results/*.json`: about 270 MB of CSV and JSON text;
- `reports/`, `archive/`, `keys/`, `sctk.toml`: about 3 000 small files (1 to 40 KB of text,
  JSON and binary), in nested directories.

`mutate` changes about 5% of the files (arrays: a slice overwritten in place; CSV: rows
edited and rows appended; JSON and small files: rewritten; plus a few files added and
removed) and the database (1% of `measurements` updated in runs of consecutive rows as a
batch of data gets corrected, one row in 100 000 updated here and there; 2% rows inserted
in each table), the way a day of work changes a data directory.

Both steps are deterministic: the same seed and scale give the same bytes (with the same
SQLite and NumPy versions), so every backup tool sees the same input.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sqlite3
import sys
from pathlib import Path

import numpy as np

MiB = 1 << 20

# Shares of the data set at scale 1 (bytes, approximately).
DB_BYTES = 200 * MiB
ARRAY_BYTES = 500 * MiB
CSV_BYTES = 210 * MiB
JSON_BYTES = 60 * MiB
SMALL_FILES = 3000

# Rows per MB of database, measured on SQLite 3.40 with the schema below (both tables
# contribute about the same number of bytes per row class).
MEASUREMENT_ROWS_PER_MB = 25_000
EVENT_ROWS_PER_MB = 9_000
DB_SHARE_MEASUREMENTS = 0.8

STAMP = ".backup-dataset.json"


def _words(rng: np.random.Generator, n: int = 2000) -> np.ndarray:
    """A vocabulary of pronounceable pseudo-words, so that text compresses like text."""
    syllables = np.array(
        [c + v for c in "bcdfghklmnprstvz" for v in ("a", "e", "i", "o", "u", "ai", "ou")]
    )
    lengths = rng.integers(1, 4, size=n)
    return np.array(["".join(rng.choice(syllables, size=k)) for k in lengths])


def _text(rng: np.random.Generator, words: np.ndarray, nbytes: int) -> str:
    """About NBYTES of sentences drawn from WORDS (Zipf-like frequencies)."""
    ranks = np.minimum(rng.zipf(1.3, size=max(8, nbytes // 6)) - 1, len(words) - 1)
    tokens = words[ranks]
    out, size = [], 0
    step = 12
    for i in range(0, len(tokens), step):
        sentence = " ".join(tokens[i : i + step]).capitalize() + "."
        out.append(sentence)
        size += len(sentence) + 1
        if size >= nbytes:
            break
    return "\n".join(" ".join(out[i : i + 5]) for i in range(0, len(out), 5)) + "\n"


def _write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    path.write_bytes(data)


# --- the database -------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE measurements (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL,
    sensor INTEGER NOT NULL,
    t REAL NOT NULL,
    value REAL NOT NULL,
    quality INTEGER NOT NULL
);
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    level TEXT NOT NULL,
    source TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX measurements_run ON measurements (run_id, sensor);
"""

_LEVELS = np.array(["DEBUG", "INFO", "INFO", "INFO", "WARNING", "ERROR"])
_BATCH = 200_000


def _measurement_rows(rng: np.random.Generator, first_id: int, n: int) -> list[tuple]:
    ids = np.arange(first_id, first_id + n)
    run = ids // 5000
    sensor = rng.integers(0, 64, size=n)
    t = np.round(ids * 0.01 + rng.random(n) * 0.005, 4)
    value = np.round(np.sin(ids / 500.0) * 10 + rng.normal(0, 0.3, n), 5)
    quality = (rng.random(n) < 0.97).astype(np.int64)
    return list(
        zip(
            ids.tolist(),
            run.tolist(),
            sensor.tolist(),
            t.tolist(),
            value.tolist(),
            quality.tolist(),
            strict=True,
        )
    )


def _event_rows(rng: np.random.Generator, words: np.ndarray, first_id: int, n: int) -> list[tuple]:
    ids = np.arange(first_id, first_id + n)
    seconds = 1_767_225_600 + ids * 7  # from 2026-01-01 UTC, one event every 7 s
    levels = rng.choice(_LEVELS, size=n)
    sources = rng.choice(np.array(["api", "worker", "scheduler", "uq", "pipeline"]), size=n)
    ranks = np.minimum(rng.zipf(1.3, size=(n, 6)) - 1, len(words) - 1)
    tokens = words[ranks]
    messages = [" ".join(row) for row in tokens.tolist()]
    ats = np.datetime_as_string(seconds.astype("datetime64[s]"), unit="s")
    return list(
        zip(
            ids.tolist(),
            [a + "Z" for a in ats.tolist()],
            levels.tolist(),
            sources.tolist(),
            messages,
            strict=True,
        )
    )


def _make_database(path: Path, rng: np.random.Generator, words: np.ndarray, scale: float) -> None:
    mb = DB_BYTES / MiB * scale
    n_meas = max(1000, int(mb * DB_SHARE_MEASUREMENTS * MEASUREMENT_ROWS_PER_MB))
    n_events = max(200, int(mb * (1 - DB_SHARE_MEASUREMENTS) * EVENT_ROWS_PER_MB))
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path, isolation_level=None)
    try:
        con.execute("PRAGMA journal_mode=OFF")
        con.execute("PRAGMA synchronous=OFF")
        con.executescript(_SCHEMA)
        con.execute("BEGIN")
        for start in range(1, n_meas + 1, _BATCH):
            n = min(_BATCH, n_meas + 1 - start)
            con.executemany(
                "INSERT INTO measurements VALUES (?, ?, ?, ?, ?, ?)",
                _measurement_rows(rng, start, n),
            )
        for start in range(1, n_events + 1, _BATCH):
            n = min(_BATCH, n_events + 1 - start)
            con.executemany(
                "INSERT INTO events VALUES (?, ?, ?, ?, ?)", _event_rows(rng, words, start, n)
            )
        con.execute("COMMIT")
    finally:
        con.close()


# --- arrays, tables, small files -------------------------------------------------------


def _array(rng: np.random.Generator, kind: str, nbytes: int) -> np.ndarray:
    if kind == "noise":  # float64 Gaussian noise: does not compress
        return rng.standard_normal(nbytes // 8)
    if kind == "counts":  # Poisson counts in int32: compress well
        return rng.poisson(3.0, size=nbytes // 4).astype(np.int32)
    if kind == "mask":  # sparse uint8 masks: compress very well
        return (rng.random(nbytes) < 0.02).astype(np.uint8)
    # a smooth signal quantised to 1e-3 in float32: compresses a little
    n = nbytes // 4
    x = np.linspace(0, 200 * np.pi, n, dtype=np.float64)
    signal = np.sin(x) * 5 + np.sin(x / 7.3) * 2 + rng.normal(0, 0.05, n)
    return np.round(signal, 3).astype(np.float32)


_ARRAY_KINDS = ("noise", "signal", "noise", "counts", "noise", "mask", "signal", "noise")


def _make_arrays(root: Path, rng: np.random.Generator, scale: float) -> None:
    total = int(ARRAY_BYTES * scale)
    count = max(4, round(18 * scale**0.5))
    sizes = rng.dirichlet(np.full(count, 4.0)) * total
    for i, size in enumerate(sizes):
        kind = _ARRAY_KINDS[i % len(_ARRAY_KINDS)]
        arr = _array(rng, kind, max(4096, int(size)))
        path = root / "data" / "arrays" / f"{kind}_{i:03d}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, arr)


def _csv_lines(rng: np.random.Generator, first: int, n: int) -> list[str]:
    ids = np.arange(first, first + n)
    stamps = np.datetime_as_string(
        (1_767_225_600 + ids * 13).astype("datetime64[s]"), unit="s"
    ).tolist()
    sensors = rng.integers(0, 256, size=n).tolist()
    values = np.round(rng.normal(20, 4, n), 6).tolist()
    errs = np.round(rng.gamma(2.0, 0.1, n), 4).tolist()
    cats = rng.choice(np.array(["calib", "run", "run", "run", "test"]), size=n).tolist()
    return [
        f"{i},{s}Z,sensor-{k:03d},{v},{e},{c}"
        for i, s, k, v, e, c in zip(ids.tolist(), stamps, sensors, values, errs, cats, strict=True)
    ]


_CSV_HEADER = "id,timestamp,sensor,value,uncertainty,category"
_CSV_ROW_BYTES = 62


def _make_tables(root: Path, rng: np.random.Generator, words: np.ndarray, scale: float) -> None:
    total = int(CSV_BYTES * scale)
    count = max(3, round(12 * scale**0.5))
    first = 1
    for i, share in enumerate(rng.dirichlet(np.full(count, 3.0))):
        n = max(50, int(share * total / _CSV_ROW_BYTES))
        lines = _csv_lines(rng, first, n)
        first += n
        _write(
            root / "data" / "tables" / f"table_{i:03d}.csv", "\n".join([_CSV_HEADER, *lines]) + "\n"
        )
    total = int(JSON_BYTES * scale)
    count = max(3, round(16 * scale**0.5))
    for i, share in enumerate(rng.dirichlet(np.full(count, 3.0))):
        records = _json_records(rng, words, max(10, int(share * total / 210)))
        _write(root / "results" / f"run_{i:03d}.json", json.dumps(records, indent=1) + "\n")


def _json_records(rng: np.random.Generator, words: np.ndarray, n: int) -> list[dict]:
    mean = np.round(rng.normal(0, 1, n), 6).tolist()
    std = np.round(rng.gamma(2, 0.2, n), 6).tolist()
    cover = np.round(rng.uniform(0.85, 0.95, n), 4).tolist()
    tags = words[rng.integers(0, len(words), size=(n, 2))].tolist()
    return [
        {
            "point": i,
            "prediction": {
                "mean": m,
                "std": s,
                "interval": [round(m - 2 * s, 6), round(m + 2 * s, 6)],
            },
            "coverage": c,
            "tags": t,
        }
        for i, (m, s, c, t) in enumerate(zip(mean, std, cover, tags, strict=True))
    ]


def _small_file(rng: np.random.Generator, words: np.ndarray, index: int) -> tuple[str, bytes]:
    """One small file: a markdown report, a JSON record or a binary blob (1 to 40 KB)."""
    size = int(rng.integers(1024, 40 * 1024))
    year, month, day = 2026, 1 + index % 12, 1 + (index // 12) % 28
    kind = index % 3
    if kind == 0:
        name = f"reports/{year}/{month:02d}/{day:02d}/report-{index:05d}.md"
        body = f"# Report {index}\n\n" + _text(rng, words, size)
        return name, body.encode()
    if kind == 1:
        name = f"archive/{year}/{month:02d}/record-{index:05d}.json"
        record = {
            "id": index,
            "notes": _text(rng, words, size // 2),
            "values": np.round(rng.normal(0, 1, size // 40), 4).tolist(),
        }
        return name, json.dumps(record).encode()
    name = f"archive/{year}/{month:02d}/blob-{index:05d}.bin"
    return name, rng.bytes(size)


def _make_small_files(
    root: Path, rng: np.random.Generator, words: np.ndarray, scale: float
) -> None:
    for i in range(max(60, int(SMALL_FILES * scale))):
        name, body = _small_file(rng, words, i)
        _write(root / name, body)
    for i in range(4):
        _write(root / "keys" / f"key-{i}.json", json.dumps({"kid": i, "key": rng.bytes(32).hex()}))
    _write(root / "sctk.toml", '[server]\nport = 8765\n\n[backup]\nrepository = "backups"\n')


def generate(root: Path, scale: float = 1.0, seed: int = 6) -> dict:
    """Write the data set under ROOT (which must be absent or empty); return its stamp."""
    if scale <= 0:
        raise ValueError("--scale must be a positive number, e.g. 0.05 for a quick run")
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise ValueError(f"{root} is not empty: generate into a new directory")
    rng = np.random.default_rng(seed)
    words = _words(rng)
    _make_database(root / "sctk.db", np.random.default_rng([seed, 1]), words, scale)
    _make_arrays(root, np.random.default_rng([seed, 2]), scale)
    _make_tables(root, np.random.default_rng([seed, 3]), words, scale)
    _make_small_files(root, np.random.default_rng([seed, 4]), words, scale)
    stamp = {"seed": seed, "scale": scale, "mutated": False, **summary(root)}
    (root / STAMP).write_text(json.dumps(stamp))
    return stamp


# --- the change ----------------------------------------------------------------------------


def _mutate_array(path: Path, rng: np.random.Generator) -> None:
    arr = np.load(path, mmap_mode="r+")
    n = arr.shape[0]
    span = max(1, int(n * rng.uniform(0.01, 0.05)))
    start = int(rng.integers(0, max(1, n - span)))
    fresh = rng.standard_normal(span) if arr.dtype.kind == "f" else rng.poisson(3.0, size=span)
    arr[start : start + span] = fresh.astype(arr.dtype)
    arr.flush()
    del arr


def _mutate_csv(path: Path, rng: np.random.Generator) -> None:
    lines = path.read_text().splitlines()
    body = lines[1:]
    n = len(body)
    # edit a run of rows in the middle (a correction), append 3% new rows
    span = max(1, n // 100)
    start = int(rng.integers(0, max(1, n - span)))
    first_id = int(body[-1].split(",", 1)[0]) + 1
    body[start : start + span] = _csv_lines(rng, int(body[start].split(",", 1)[0]), span)
    body += _csv_lines(rng, first_id, max(1, n * 3 // 100))
    path.write_text("\n".join([lines[0], *body]) + "\n")


def _mutate_json(path: Path, rng: np.random.Generator, words: np.ndarray) -> None:
    records = json.loads(path.read_text())
    for i in rng.choice(len(records), size=max(1, len(records) // 50), replace=False).tolist():
        records[i]["coverage"] = round(float(rng.uniform(0.85, 0.95)), 4)
    records += _json_records(rng, words, max(1, len(records) // 50))
    path.write_text(json.dumps(records, indent=1) + "\n")


def _mutate_database(path: Path, rng: np.random.Generator, words: np.ndarray) -> dict:
    con = sqlite3.connect(path, isolation_level=None)
    try:
        con.execute("BEGIN")
        (n_meas,) = con.execute("SELECT max(id) FROM measurements").fetchone()
        (n_events,) = con.execute("SELECT max(id) FROM events").fetchone()
        # 1% of measurements corrected in runs of consecutive rows (a batch of data gets
        # fixed), plus a few rows scattered here and there (one in 100 000). Each scattered
        # row dirties a whole database page, so a tenth of a percent of scattered updates
        # would rewrite nearly every ~1 MiB chunk of the file and leave no duplicate data
        # to find for any tool.
        updated = 0
        runs = 8
        span = max(1, n_meas // 100 // runs)
        for start in rng.integers(1, max(2, n_meas - span), size=runs).tolist():
            ids = range(start, start + span)
            vals = np.round(rng.normal(0, 1, span), 5).tolist()
            con.executemany(
                "UPDATE measurements SET value = value + ?, quality = 1 WHERE id = ?",
                zip(vals, ids, strict=True),
            )
            updated += span
        scattered = rng.integers(1, n_meas + 1, size=max(1, n_meas // 100_000)).tolist()
        con.executemany(
            "UPDATE measurements SET quality = 0 WHERE id = ?", ((i,) for i in scattered)
        )
        updated += len(scattered)
        new_meas = max(1, n_meas * 2 // 100)
        con.executemany(
            "INSERT INTO measurements VALUES (?, ?, ?, ?, ?, ?)",
            _measurement_rows(rng, n_meas + 1, new_meas),
        )
        new_events = max(1, n_events * 2 // 100)
        con.executemany(
            "INSERT INTO events VALUES (?, ?, ?, ?, ?)",
            _event_rows(rng, words, n_events + 1, new_events),
        )
        con.execute("COMMIT")
    finally:
        con.close()
    return {"updated": updated, "inserted": new_meas + new_events}


def mutate(root: Path, seed: int = 6, fraction: float = 0.05) -> dict:
    """Change FRACTION of the files under ROOT and a few % of the database rows, the same
    way for the same seed; return what changed."""
    stamp_path = root / STAMP
    if not stamp_path.exists():
        raise ValueError(f"{root} holds no generated data set: run `generate` first")
    stamp = json.loads(stamp_path.read_text())
    if stamp.get("mutated"):
        raise ValueError(f"{root} was already mutated: generate a fresh copy to mutate again")
    rng = np.random.default_rng([seed, 5])
    words = _words(np.random.default_rng(seed))
    files = sorted(p for p in _files(root) if p.name not in ("sctk.db", STAMP))
    chosen = sorted(
        rng.choice(len(files), size=max(1, round(len(files) * fraction)), replace=False).tolist()
    )
    for i in chosen:
        path = files[i]
        if path.suffix == ".npy":
            _mutate_array(path, rng)
        elif path.suffix == ".csv":
            _mutate_csv(path, rng)
        elif path.suffix == ".json" and path.parent.name == "results":
            _mutate_json(path, rng, words)
        else:
            _, body = _small_file(rng, words, 100_000 + i)
            path.write_bytes(body)
    # a day also adds a few files and removes a few old ones (0.5% each)
    extra = max(1, len(files) // 200)
    small = [p for p in files if p.parts[len(root.parts)] in ("reports", "archive")]
    removed = sorted(rng.choice(len(small), size=min(extra, len(small)), replace=False).tolist())
    for i in removed:
        small[i].unlink()
    for k in range(extra):
        name, body = _small_file(rng, words, 200_000 + k)
        _write(root / name, body)
    db = _mutate_database(root / "sctk.db", rng, words)
    changes = {
        "files_changed": len(chosen),
        "files_added": extra,
        "files_removed": len(removed),
        "db_rows": db,
    }
    stamp.update({"mutated": True, "changes": changes, **summary(root)})
    stamp_path.write_text(json.dumps(stamp))
    return changes


# --- helpers -------------------------------------------------------------------------------


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def summary(root: Path) -> dict:
    """Files and bytes under ROOT (the stamp file left out)."""
    files = [p for p in _files(root) if p.name != STAMP]
    return {"files": len(files), "bytes": sum(p.stat().st_size for p in files)}


def digest(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ROOT by relative posix path (the stamp file left out)."""
    out = {}
    for p in _files(root):
        if p.name == STAMP:
            continue
        h = hashlib.sha256()
        with p.open("rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        out[p.relative_to(root).as_posix()] = h.hexdigest()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="Write the data set into a new directory.")
    gen.add_argument("dir", type=Path)
    gen.add_argument("--scale", type=float, default=1.0, help="1.0 is about 1 GiB.")
    gen.add_argument("--seed", type=int, default=6)
    mut = sub.add_parser("mutate", help="Change 5%% of the files and a few %% of the rows.")
    mut.add_argument("dir", type=Path)
    mut.add_argument("--seed", type=int, default=6)
    args = parser.parse_args(argv)
    try:
        if args.command == "generate":
            stamp = generate(args.dir, args.scale, args.seed)
            print(f"{stamp['files']} files, {stamp['bytes'] / MiB:.1f} MiB in {args.dir}")
        else:
            print(json.dumps(mutate(args.dir, args.seed)))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
