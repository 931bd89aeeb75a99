"""Many small files against restic and borg: first backup, then a second one with nothing
changed (the files cache: an unchanged file is known by its metadata and not read).

Run by hand (not a test):

    python benchmarks/bench_backup_small_files.py [--files 100000] [--tools sctk,restic,borg]

The tree is FILES files of 1 to 8 KiB (seeded: half random bytes, half text-like rows) in
folders of 200, the shape of a results directory. Each tool backs it up twice as a child
process under GNU time (the same harness as bench_backup.py: wall time, CPU, peak RSS), steps
interleaved between tools; the page cache is warm for every tool alike (the tree is read once
before the first backup). Figures go to benchmarks/RESULTS.md, section "Backup of many small
files against restic and borg".
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
from pathlib import Path

import bench_backup as bb  # benchmarks/bench_backup.py: the tools and their measurement
from results import write_section

SECTION = "## Backup of many small files against restic and borg"
PER_FOLDER = 200


def make_tree(root: Path, files: int, seed: int) -> int:
    """FILES small files under ROOT; their total bytes."""
    rnd = random.Random(seed)
    total = 0
    for i in range(files):
        folder = root / f"run{i // PER_FOLDER:04d}"
        if i % PER_FOLDER == 0:
            folder.mkdir(parents=True)
        size = rnd.randint(1024, 8192)
        if i % 2:
            data = rnd.randbytes(size)
        else:
            rows = (f"{k},{rnd.random():.6f},{rnd.randint(0, 999)}\n" for k in range(size // 20))
            data = "".join(rows).encode()[:size]
        (folder / f"result-{i:06d}.dat").write_bytes(data)
        total += len(data)
    return total


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--tools", default="sctk,restic,borg")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="sctk-bench-small-", dir=args.work))
    try:
        data = work / "data"
        total = make_tree(data, args.files, args.seed)
        print(f"{args.files:,} files, {total / bb.MiB:.1f} MiB in {data}", flush=True)
        kinds = {"sctk": bb.Sctk, "restic": bb.Restic, "borg": bb.Borg}
        tools = [kinds[name](work, data) for name in args.tools.split(",")]
        for tool in tools:
            tool.init()
        bb.warm(data)
        results: dict[str, dict[str, dict]] = {t.name: {} for t in tools}
        for step in ("first", "second"):
            for tool in tools:
                got = tool.backup(step)
                results[tool.name][step] = got
                print(
                    f"{tool.name} {step} backup: {got['seconds']:.2f} s, cpu {got['cpu']:.2f} s, "
                    f"rss {got['rss'] / bb.MiB:.0f} MiB",
                    flush=True,
                )
        for tool in tools:
            results[tool.name]["repo"] = {"bytes": sum(bb.repo_parts(tool.repo).values())}
        text = report(args, total, results)
        print(text)
        if not args.no_write:
            write_section(SECTION, text)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(args, total: int, results: dict) -> str:
    names = list(results)
    lines = [
        SECTION,
        "",
        f"`python benchmarks/bench_backup_small_files.py --files {args.files}`: {args.files:,} "
        f"files of 1 to 8 KiB ({total / bb.MiB:.0f} MiB) in folders of {PER_FOLDER}; the "
        "second backup runs with nothing changed. Wall s / CPU s / peak RSS MiB per step.",
        "",
        "| step | " + " | ".join(names) + " |",
        "| --- |" + " ---: |" * len(names),
    ]
    for step in ("first", "second"):
        cells = [
            f"{r[step]['seconds']:.2f} / {r[step]['cpu']:.2f} / {r[step]['rss'] / bb.MiB:.0f}"
            for r in results.values()
        ]
        lines.append(f"| {step} backup | " + " | ".join(cells) + " |")
    lines.append(
        "| repository, MiB | "
        + " | ".join(f"{r['repo']['bytes'] / bb.MiB:.1f}" for r in results.values())
        + " |"
    )
    if "sctk" in results:
        s = results["sctk"]
        for peer in (n for n in names if n != "sctk"):
            p = results[peer]
            lines.append("")
            first = p["first"]["seconds"] / s["first"]["seconds"]
            second = p["second"]["seconds"] / s["second"]["seconds"]
            lines.append(
                f"sctk against {peer}: first backup {first:.2f}x, second (unchanged) "
                f"{second:.2f}x (goal for the second: >= 2x restic)."
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main(sys.argv[1:])
