"""The backup chunk index alone: 10^7 chunk ids, then a process that opens the repository and
looks up 10^6 of them, against the in-memory index sctk used before (every index file loaded
into dicts at open, as `Index.load` did until the SQLite cache).

Run by hand (not a test):

    python benchmarks/bench_backup_index.py [--chunks 10000000] [--lookups 1000000]
    python benchmarks/bench_backup_index.py --chunks 1000000 --no-write     # a quick look

A repository is made with CHUNKS made-up chunk ids (keyed BLAKE2b of a counter, so a child
can regenerate any of them without holding the list) in index files of 50,000 chunks, 100
chunks a pack; the packs exist as sparse files of their recorded size, so none is "unsound".
Each step is a child process (its peak RSS read from getrusage):

1. sqlite, cold: open the repository with an empty cache directory (the cache is built from
   every index file), then LOOKUPS lookups of ids spread over the whole range;
2. sqlite, warm: the same in a new process with the cache kept (what every backup, verify
   and restore after the first does), LOOKUPS present ids and LOOKUPS absent ones;
3. in memory (the peer): every index file loaded into dicts, then the same lookups.

Figures go to benchmarks/RESULTS.md, section "Backup chunk index at 10^7 chunks".
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SECTION = "## Backup chunk index at 10^7 chunks"
PASSPHRASE = "bench index passphrase"
PER_PACK = 100


def cid(i: int) -> str:
    return hashlib.blake2b(i.to_bytes(8, "little"), key=b"cid", digest_size=32).hexdigest()


def pack_id(i: int) -> str:
    return hashlib.blake2b(i.to_bytes(8, "little"), key=b"pack", digest_size=32).hexdigest()


def build(repo_dir: Path, chunks: int) -> float:
    """A repository holding CHUNKS made-up chunks; seconds taken."""
    from sctk.backup.repo import Repository
    from sctk.backup.repo.index import ENTRIES_PER_FILE, write_index

    started = time.perf_counter()
    repo = Repository.init(str(repo_dir), PASSPHRASE)
    size = PER_PACK * 1000
    packs_per_file = ENTRIES_PER_FILE // PER_PACK
    npacks = -(-chunks // PER_PACK)
    for first in range(0, npacks, packs_per_file):
        batch = []
        for p in range(first, min(npacks, first + packs_per_file)):
            rows = [
                [cid(i), (i - p * PER_PACK) * 1000, 1000, 2000, 1]
                for i in range(p * PER_PACK, min(chunks, (p + 1) * PER_PACK))
            ]
            pid = pack_id(p)
            path = repo_dir / "data" / pid[:2] / pid
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as fh:
                fh.truncate(size)  # sparse: the index is measured, not the disk
            batch.append((pid, size, rows))
        write_index(repo.backend, repo.keys, batch)
    repo.close()
    return time.perf_counter() - started


def child(mode: str, repo_dir: str, cache: str, chunks: int, lookups: int) -> dict:
    """One measured process: open, then look up; figures as a dict."""
    started = time.perf_counter()
    stride = max(1, chunks // lookups)
    present = [cid((k * stride) % chunks) for k in range(lookups)]
    absent = [cid(chunks + k) for k in range(lookups)]
    made = time.perf_counter() - started
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    if mode == "memory":
        get = load_in_memory(Path(repo_dir))
    else:
        from sctk.backup.repo import Repository

        repo = Repository.open(repo_dir, PASSPHRASE, cache_dir=cache)
        get = repo.index.entries.get
    opened = time.perf_counter() - t0
    t1 = time.perf_counter()
    found = sum(1 for c in present if get(c) is not None)
    hit_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    missing = sum(1 for c in absent if get(c) is None)
    miss_s = time.perf_counter() - t2
    return {
        "mode": mode,
        "open_s": round(opened, 2),
        "lookups": lookups,
        "found": found,
        "absent_ok": missing,
        "hit_per_s": round(lookups / hit_s),
        "miss_per_s": round(lookups / miss_s),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "ids_rss_mib": round(base_rss / 1024, 1),  # the two id lists, before opening
        "ids_s": round(made, 1),
    }


def load_in_memory(repo_dir: Path):
    """The peer: sctk's index before the cache (every index file read at open into a dict
    chunk id -> (pack, offset, length, raw length, flags) and per-pack chunk lists)."""
    from sctk.backup.repo.backend import open_backend
    from sctk.backup.repo.formats import AAD_INDEX, open_json

    backend = open_backend(str(repo_dir))
    _config_doc, keys = _config(repo_dir)
    backend.list("data")  # as Index.load did (the unsound packs)
    entries: dict[str, tuple] = {}
    pack_blobs: dict[str, list] = {}
    pack_sizes: dict[str, int] = {}
    for name in sorted(backend.list("index")):
        doc = open_json(keys, backend.read(name), AAD_INDEX, name)
        for pack in doc["packs"]:
            rows = [tuple(b) for b in pack["blobs"]]
            pack_sizes[pack["id"]] = pack["size"]
            pack_blobs[pack["id"]] = rows
            for c, off, length, raw, flags in rows:
                entries.setdefault(c, (pack["id"], off, length, raw, flags))
    load_in_memory.keep = (pack_blobs, pack_sizes)  # held, as the Index held them
    return entries.get


def _config(repo_dir: Path):
    from sctk.backup.repo import crypto

    config = json.loads((repo_dir / "config").read_text())
    master = crypto.unwrap_master(
        config["key"], PASSPHRASE, config["kdf"], config["id"], str(repo_dir)
    )
    return config, crypto.Keys(master, config.get("chunk_id", crypto.CHUNK_ID_HMAC_SHA256))


def run_child(*args: str) -> dict:
    env = dict(os.environ)
    out = subprocess.run(
        [sys.executable, __file__, "_child", *args], capture_output=True, text=True, env=env
    )
    if out.returncode:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.splitlines()[-1])


def report(chunks: int, lookups: int, build_s: float, rows: list[dict], cache_mib: float) -> str:
    by = {r["label"]: r for r in rows}
    lines = [
        SECTION,
        "",
        f"`python benchmarks/bench_backup_index.py --chunks {chunks} --lookups {lookups}`: "
        f"a repository of {chunks:,} made-up chunk ids ({PER_PACK} a pack, index files of "
        f"50,000), each process opening it and looking up {lookups:,} present and {lookups:,} "
        f"absent ids; the peer is sctk's previous index (every index file loaded into dicts). "
        f"Building the repository's index files took {build_s:.0f} s; the cache file is "
        f"{cache_mib:.0f} MiB. Peak RSS includes the {lookups:,}-id lists the process looks up "
        f"(their own share is the 'ids' column, measured before opening).",
        "",
        "| process | open, s | hits/s | misses/s | peak RSS, MiB | ids alone, MiB |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, r in by.items():
        lines.append(
            f"| {label} | {r['open_s']} | {r['hit_per_s']:,} | {r['miss_per_s']:,} | "
            f"{r['peak_rss_mib']} | {r['ids_rss_mib']} |"
        )
    warm, mem = by.get("sqlite cache, warm"), by.get("in memory (previous sctk)")
    if warm and mem:
        faster = mem["open_s"] / max(warm["open_s"], 0.01)
        lower = mem["peak_rss_mib"] - warm["peak_rss_mib"]
        rate = warm["hit_per_s"] / mem["hit_per_s"]
        lines += [
            "",
            f"Warm cache against the in-memory index: open {faster:.0f}x faster, peak RSS "
            f"{lower:.0f} MiB lower, lookups at {rate:.2f}x the dict's rate.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=10_000_000)
    parser.add_argument("--lookups", type=int, default=1_000_000)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--no-peer", action="store_true", help="Skip the in-memory index.")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="sctk-bench-index-", dir=args.work))
    try:
        repo_dir, cache = work / "repo", work / "cache"
        build_s = build(repo_dir, args.chunks)
        print(f"built {args.chunks:,} chunks in {build_s:.1f} s", flush=True)
        rows = []
        common = (str(repo_dir), str(cache), str(args.chunks), str(args.lookups))
        for label, mode in (
            ("sqlite cache, cold (built at open)", "sqlite"),
            ("sqlite cache, warm", "sqlite"),
            *([] if args.no_peer else [("in memory (previous sctk)", "memory")]),
        ):
            r = run_child(mode, *common)
            r["label"] = label
            rows.append(r)
            print(label, r, flush=True)
        cache_mib = sum(p.stat().st_size for p in cache.iterdir()) / 2**20
        text = report(args.chunks, args.lookups, build_s, rows, cache_mib)
        print(text)
        if not args.no_write:
            sys.path.insert(0, str(HERE))
            from results import write_section

            write_section(SECTION, text)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["_child"]:
        mode, repo_dir, cache, chunks, lookups = sys.argv[2:7]
        print(json.dumps(child(mode, repo_dir, cache, int(chunks), int(lookups))))
    else:
        main(sys.argv[1:])
