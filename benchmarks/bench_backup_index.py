"""The sorted chunk index alone (src/sctk/backup/repo/sortedindex.py) against a dict.

    python benchmarks/bench_backup_index.py [--chunks 10000000] [--lookups 1000000] [--no-write]

Builds a sorted index of CHUNKS synthetic chunk ids (32 per pack, ids the SHA-256 of their
number, as random as keyed chunk ids), then in a fresh process opens it and looks up LOOKUPS
ids drawn at random from them plus as many absent ids, and reports the lookup rate and that
process's peak resident memory (VmHWM), beside the same process's start-up peak (imports
only). The peer, run in the same way: the dict the in-memory Index keeps (id -> location
tuple) holding LOOKUPS entries (a tenth of the chunks, or all of them if fewer), loaded and
then looked up the same way. Figures go to benchmarks/RESULTS.md under their own heading.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SECTION = "## Backup chunk index at scale (sorted index file against a dict)"
PER_PACK = 32
MiB = 1 << 20


def chunk_id(i: int) -> str:
    return hashlib.sha256(i.to_bytes(8, "little")).hexdigest()


def pack_id(p: int) -> str:
    return hashlib.sha256(b"pack" + p.to_bytes(8, "little")).hexdigest()


def packs(n: int):
    for p in range(0, -(-n // PER_PACK)):
        first = p * PER_PACK
        blobs = [
            (chunk_id(i), (i - first) * 600_000, 500_000 + i % 1000, 524_288, i & 1)
            for i in range(first, min(n, first + PER_PACK))
        ]
        yield pack_id(p), blobs


def expected(i: int) -> tuple:
    p, j = divmod(i, PER_PACK)
    return (pack_id(p), j * 600_000, 500_000 + i % 1000, 524_288, i & 1)


def hwm_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(kind: str, path: str, n: int, lookups: int, seed: int) -> None:
    """One measured process: open (or load) the index, look LOOKUPS ids up, print JSON."""
    rng = random.Random(seed)
    present = [rng.randrange(n) for _ in range(lookups)]
    absent = [chunk_id(n + rng.randrange(n)) for _ in range(lookups)]
    from sctk.backup.repo.sortedindex import SortedIndex

    ids = [chunk_id(i) for i in present]
    base = hwm_mib()  # the ids to look up are held by both kinds alike: not counted
    start = time.perf_counter()
    if kind == "sorted":
        index = SortedIndex(Path(path))
    else:
        index = {}
        for _pid, blobs in packs(n):
            for cid, off, length, raw, flags in blobs:
                index[cid] = (_pid, off, length, raw, flags)
    opened = time.perf_counter() - start
    get = index.get
    start = time.perf_counter()
    for cid in ids:
        get(cid)
    hit_s = time.perf_counter() - start
    start = time.perf_counter()
    for cid in absent:
        get(cid)
    miss_s = time.perf_counter() - start
    # correctness, untimed: every hit where it was stored, every miss absent
    wrong = sum(get(cid) != expected(i) for cid, i in zip(ids, present, strict=True))
    misses = sum(get(cid) is not None for cid in absent)
    print(
        json.dumps(
            {
                "kind": kind,
                "entries": n,
                "open_s": opened,
                "hits_per_s": lookups / hit_s,
                "misses_per_s": lookups / miss_s,
                "wrong": wrong + misses,
                "base_mib": base,
                "peak_mib": hwm_mib(),
            }
        )
    )


def run_child(*args) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(HERE.parent / "src") + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run(
        [sys.executable, __file__, "_child", *map(str, args)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str]) -> int:
    import argparse

    sys.path.insert(0, str(HERE.parent / "src"))
    from results import write_section  # benchmarks/results.py

    from sctk.backup.repo.sortedindex import build

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=10_000_000)
    parser.add_argument("--lookups", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=26)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    if args.chunks < 1 or args.lookups < 1:
        parser.error("--chunks and --lookups must be positive numbers")
    with tempfile.TemporaryDirectory(dir=args.work, prefix="sctk-bench-index-") as tmp:
        path = Path(tmp) / "chunks.idx"
        start = time.perf_counter()
        n = build(path, packs(args.chunks))
        build_s = time.perf_counter() - start
        size = path.stat().st_size
        print(f"built {n} ids in {build_s:.1f} s, {size / MiB:.1f} MiB ({size / n:.1f} B/id)")
        sorted_r = run_child("sorted", path, n, args.lookups, args.seed)
        peer_n = min(n, args.lookups)
        dict_r = run_child("dict", path, peer_n, args.lookups, args.seed)
    lines = [
        SECTION,
        "",
        f"Command: `python benchmarks/bench_backup_index.py --chunks {args.chunks} "
        f"--lookups {args.lookups}`; load average {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} cores.",
        "",
        "| index | ids held | open s | hits/s | misses/s | peak MiB (before opening) | "
        "index's own MiB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, r in (("sorted file", sorted_r), ("dict (peer)", dict_r)):
        lines.append(
            f"| {label} | {r['entries']:,} | {r['open_s']:.2f} | {r['hits_per_s']:,.0f} | "
            f"{r['misses_per_s']:,.0f} | {r['peak_mib']:.0f} ({r['base_mib']:.0f}) | "
            f"{r['peak_mib'] - r['base_mib']:.1f} |"
        )
    per_id_dict = (dict_r["peak_mib"] - dict_r["base_mib"]) / dict_r["entries"]
    lines += [
        "",
        f"Build: {n:,} ids in {build_s:.0f} s, file {size / MiB:.0f} MiB ({size / n:.1f} B/id). "
        f"Wrong or false lookups: {sorted_r['wrong'] + dict_r['wrong']}. "
        f"A dict of all {n:,} ids would hold about {per_id_dict * n / 1024:.1f} GiB; "
        f"the sorted file's lookups run at {sorted_r['hits_per_s'] / dict_r['hits_per_s']:.2f}x "
        "the dict's rate (hits).",
    ]
    lines += [
        "",
        "Peak MiB is the looking-up process's VmHWM; before opening it already holds the ids "
        "to look up (both kinds alike), so the index's own memory is the difference. The "
        "sorted file is read with pread (no memory map), so the pages it touched are not "
        "counted as the process's memory.",
    ]
    print("\n".join(lines))
    if not args.no_write:
        write_section(SECTION, "\n".join(lines))
    return 1 if sorted_r["wrong"] or dict_r["wrong"] else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["_child"]:
        kind, path, n, lookups, seed = sys.argv[2:7]
        child(kind, path, int(n), int(lookups), int(seed))
    else:
        sys.exit(main(sys.argv[1:]))
