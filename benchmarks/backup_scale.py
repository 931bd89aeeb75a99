"""Backup at scale (issue 26): how each figure grows with the data, sctk beside restic and
borg in one run. Driven by bench_backup.py:

    python benchmarks/bench_backup.py --scale 1,4,16 --small-files 1000000
    python benchmarks/bench_backup.py --scale 0.05,0.2 --small-files 20000 --no-write  # quick

For each data set (the reference set at each --scale, generated once and kept in $TMPDIR;
with --small-files N, N files of 1 to 16 KB in a results tree: backup_dataset_small.py) and
each tool in turn, every step a child process measured by GNU time (wall, CPU, the child's
peak RSS):

1. first backup of the data set plus a scratch directory (about 5% more: files of 1 to
   64 KB, random bytes);
2. second backup, nothing changed (the files cache at work);
3. verify reading every byte (`restic check --read-data`, `borg check --verify-data`,
   sctk `check(read_data=True)`);
4. (untimed setup) the scratch directory deleted, a third and a fourth backup;
5. prune after forgetting the older half (keep the last 2 of 4 snapshots: the scratch data
   becomes garbage): `restic forget --keep-last 2 --prune`, `borg prune --keep-last 2` then
   `borg compact` (the two summed), sctk `prune(PrunePolicy(keep_last=2))`;
6. full restore of the newest snapshot into an empty directory (checked file by file
   against the data set's SHA-256 afterwards, outside the timing).

Repository size is measured after each step. A tool's repository and restore target are
deleted before the next tool starts (so one data set and one repository at a time on disk).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from results import RESULTS, write_section  # benchmarks/, beside this script

MiB = 1 << 20
# The harness (bench_backup.py as it runs: its tool classes carry the run's options), set by
# study(); its tools, measuring and hashing are used as they are.
H = None

SECTION = "## Backup at scale"
HERE = Path(__file__).resolve().parent
SMALL_SCRIPT = HERE / "backup_dataset_small.py"
SCRATCH = "scratch-bench"
STEPS = ("backup1", "backup2", "verify", "prune", "restore")
STEP_NAMES = {
    "backup1": "first backup",
    "backup2": "second backup (unchanged)",
    "verify": "verify --read-data",
    "prune": "forget half + prune",
    "restore": "full restore",
}
FIGURES = ("seconds", "cpu", "rss", "repo_bytes")
FIGURE_NAMES = {
    "seconds": "wall s",
    "cpu": "CPU s",
    "rss": "peak RSS MiB",
    "repo_bytes": "repository MiB",
}
# Measured by hand on the files cache (issue 26, item 3), kept with the generated section.
FILES_CACHE_NOTES = """### Files cache: a second backup of many unchanged small files (item 3)

Where the unchanged second backup spent its time and memory, and what branch bkbench
changed (`SnapshotWriter.add_tree`, `_queue_file`, `_parent_files`, new `_parent_entry`
and `_all_known`, `_File`, `_start`, `_finish`, `_feed_file`, `commit`'s file list in
src/sctk/backup/repo/writer.py; `_tree_size` and `take` in src/sctk/backup/create.py): the
walk is os.scandir in path order using each DirEntry's lstat (no second stat, no `Path` and
no path check per file), the parent's sorted file list is looked up by a cursor with
bisection (no path -> entry dict beside it), an unchanged file shares the parent's chunk
list and stat key and its parent entry goes into the new snapshot as it is, a file's
SHA-256 object lives only while the file is read (it was kept to the commit for every
file), and `sctk backup create` walks the tree for its size only when it shows progress.

200,000 files (`backup_dataset_small.py generate DIR --files 200000`, 1.05 GiB), a
repository with one snapshot of them, then `/usr/bin/time -f '%e %M %U %S' python
benchmarks/bench_backup.py _engine backup REPO DIR second` with PYTHONPATH on main's
src (cad8486) and on this branch's, alternated twice on copies of the same repository;
restic 0.14 `backup` on its own repository of the same files, twice. Load average 16 to 19
on the 2 cores (other sessions), so CPU seconds are the figure to compare; wall times move
with the scheduler's share (restic's many threads get more of it):

| second backup, 200k unchanged files | wall s | CPU s (user+sys) | peak RSS MiB |
| --- | --- | --- | --- |
| sctk main (cad8486) | 97.3, 82.5 | 11.1, 9.8 | 716, 716 |
| sctk bkbench | 49.1, 46.6 | 6.2, 5.4 | 547, 547 |
| restic 0.14 | 42.6, 38.2 | 11.9, 12.1 | 142, 133 |

The walk alone (add_tree over 20,000 unchanged files, warm, best of 5 in one process):
24 us of CPU a file on main, 9 us on this branch. In one process on this branch (RSS from
/proc after each phase, now printed by `_engine backup` as `rss_mib`): opening the
repository and its index 202 MiB, the parent snapshot's file list +170 MiB, the walk
+8 MiB, the commit +38 MiB (its JSON built whole); CPU: index 1.2 s, parent list 0.8 s,
walk 2.6 s, commit 1.1 s. What is left is the snapshot format's and the index's (branch
bkformat), not the walk's: a snapshot file holds the whole file list as one JSON document
(about 0.85 KiB a file decoded: some 850 MiB at 10^6 files), `snapshots()` decodes every
snapshot's list to learn their times (4 snapshots of 200k files: +776 MiB, 15 s), and the
index is held whole. Meeting 150 MiB at 10^6 files needs a snapshot format whose header
(time, label) is read without the file list and whose file list is stored sorted in
pieces that can be streamed: the walk then merges it in path order (the lookup already
goes in that order) and the commit writes the new list piece by piece.
"""
RSS_GROWTH_GOAL = 10 * MiB
RSS_CAP_GOAL = 150 * MiB
LINEAR_SLACK = 1.1  # time "at most linear": its ratio within 10% of the data's ratio


def small_dataset(path: Path, files: int, seed: int) -> Path:
    """The small-files data set in PATH, generated there unless a matching one is present."""
    stamp = path / ".backup-dataset.json"
    if stamp.exists():
        meta = json.loads(stamp.read_text())
        if meta.get("files") == files and meta.get("seed") == seed:
            return path
        raise SystemExit(f"{path} holds another data set ({meta}): remove it first")
    print(f"generating {files} small files in {path}", flush=True)
    cmd = [sys.executable, str(SMALL_SCRIPT), "generate", str(path), "--files", str(files)]
    subprocess.run([*cmd, "--seed", str(seed)], check=True)
    return path


def write_scratch(data: Path, size: int, seed: int) -> None:
    """About SIZE bytes in random files of 1 to 64 KB under data/SCRATCH."""
    import random

    rnd = random.Random(seed)
    root = data / SCRATCH
    shutil.rmtree(root, ignore_errors=True)
    done = 0
    i = 0
    while done < size:
        i += 1
        n = rnd.randrange(1024, 64 * 1024)
        path = root / f"d{i // 500:04d}" / f"f{i:06d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rnd.randbytes(n))
        done += n


def prune(tool) -> dict:
    """Forget all but the last 2 snapshots and collect their garbage: one measured result
    (the sum of borg's two commands)."""
    if tool.name == "sctk":
        return tool._engine("prune", str(tool.repo), "2")
    if tool.name == "restic":
        return tool.run(["restic", "forget", "--keep-last", "2", "--prune", "-q"])
    a = tool.run(["borg", "prune", "--keep-last", "2"])
    b = tool.run(["borg", "compact"])
    return {
        "seconds": a["seconds"] + b["seconds"],
        "cpu": a["cpu"] + b["cpu"],
        "rss": max(a["rss"], b["rss"]),
        "load": a["load"],
        "stdout": "",
    }


def restore_latest(tool, target: Path) -> dict:
    if tool.name == "borg":
        target.mkdir(parents=True, exist_ok=True)
        return tool.run(["borg", "extract", "::fourth"], cwd=target)
    return tool.restore(target)  # sctk and restic restore the newest snapshot


def run_tool(name: str, work: Path, data: Path, expected: dict, seed: int, log) -> dict:
    """Every step for one tool on DATA; its repository and restore deleted afterwards."""
    tool = H.TOOL_CLASSES[name](work, data)
    out: dict = {}
    size = H.tree_bytes(data)
    try:
        tool.init()
        write_scratch(data, size // 20, seed)
        for step, label in (("backup1", "first"), ("backup2", "second")):
            r = out[step] = tool.backup(label)
            r["repo_bytes"] = H.tree_bytes(tool.repo)
            log(f"  {name} {STEP_NAMES[step]}: {brief(r)}")
        r = out["verify"] = tool.verify()
        r["repo_bytes"] = H.tree_bytes(tool.repo)
        log(f"  {name} verify: {brief(r)}")
        shutil.rmtree(data / SCRATCH)
        for label in ("third", "fourth"):
            out[label] = tool.backup(label)
        r = out["prune"] = prune(tool)
        r["repo_bytes"] = H.tree_bytes(tool.repo)
        log(f"  {name} prune: {brief(r)}")
        target = work / f"restore-{name}"
        r = out["restore"] = restore_latest(tool, target)
        r["repo_bytes"] = out["prune"]["repo_bytes"]
        got = H.digest(tool.restored_root(target))
        r["correct"] = got == expected
        log(f"  {name} restore: {brief(r)}, correct: {r['correct']}")
        if not r["correct"]:
            missing = sorted(set(expected) - set(got))[:3]
            extra = sorted(set(got) - set(expected))[:3]
            log(f"  RESTORE MISMATCH: missing {missing}, extra {extra}")
    finally:
        shutil.rmtree(data / SCRATCH, ignore_errors=True)
        for p in (tool.repo, work / f"restore-{name}", work / "restic-cache", work / "borg-base"):
            shutil.rmtree(p, ignore_errors=True)
    for r in out.values():
        r.pop("stdout", None)
        r.pop("engine", None)
    return out


def brief(r: dict) -> str:
    return (
        f"{r['seconds']:.1f} s, cpu {r['cpu']:.1f} s, rss {r['rss'] / MiB:.0f} MiB, "
        f"repo {r.get('repo_bytes', 0) / MiB:.0f} MiB"
    )


def run_case(case: dict, tools: list[str], rounds: int, seed: int, work: Path, log) -> dict:
    """One data set: each tool's steps, ROUNDS times; the median of each figure."""
    data = Path(case["path"])
    shutil.rmtree(data / SCRATCH, ignore_errors=True)  # a run killed before its cleanup
    log(f"{case['name']}: hashing the data set")
    expected = H.digest(data)
    case["files"] = len(expected)
    case["bytes"] = H.tree_bytes(data)
    runs: dict[str, list[dict]] = {t: [] for t in tools}
    for i in range(rounds):
        H.warm(data)
        for name in tools:
            log(f"{case['name']}: {name}, round {i + 1}/{rounds}")
            runs[name].append(run_tool(name, work, data, expected, seed, log))
    case["results"] = {
        name: {
            step: {
                fig: statistics.median(r[step][fig] for r in rs)
                for fig in (*FIGURES, "load")
                if fig in rs[0][step]
            }
            | {"correct": all(r[step].get("correct", True) for r in rs)}
            for step in STEPS
        }
        for name, rs in runs.items()
    }
    return case


# --- the report ----------------------------------------------------------------------------


def fmt(fig: str, v: float) -> str:
    if fig in ("rss", "repo_bytes"):
        return f"{v / MiB:.0f}"
    return f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def side_by_side(case: dict, tools: list[str]) -> list[str]:
    """One data set: every step and figure for each tool, and sctk's ratio to each peer
    (above 1: sctk faster, lighter or smaller)."""
    res = case["results"]
    peers = [t for t in tools if t != "sctk"]
    head = "| step | figure | " + " | ".join(tools)
    if "sctk" in tools:
        head += "".join(f" | x {p}" for p in peers)
    lines = [head + " |", "|" + " --- |" * (2 + len(tools) + len(peers) * ("sctk" in tools))]
    for step in STEPS:
        for fig in FIGURES:
            row = f"| {STEP_NAMES[step]} | {FIGURE_NAMES[fig]} | "
            row += " | ".join(fmt(fig, res[t][step][fig]) for t in tools)
            if "sctk" in tools:
                mine = res["sctk"][step][fig]
                row += "".join(f" | {res[p][step][fig] / max(mine, 1e-9):.2f}" for p in peers)
            lines.append(row + " |")
    return lines


def growth(cases: list[dict], tools: list[str]) -> list[str]:
    """Each figure at each scale and its ratio largest/smallest, beside the data's ratio."""
    first, last = cases[0], cases[-1]
    data_ratio = last["bytes"] / first["bytes"]
    lines = [
        "| tool | step | figure | "
        + " | ".join(f"{c['name']}" for c in cases)
        + f" | largest/smallest (data {data_ratio:.1f}x) |",
        "|" + " --- |" * (4 + len(cases)),
    ]
    for t in tools:
        for step in STEPS:
            for fig in FIGURES:
                vals = [c["results"][t][step][fig] for c in cases]
                ratio = vals[-1] / max(vals[0], 1e-9)
                extra = ""
                if fig == "rss":
                    extra = f", {(vals[-1] - vals[0]) / MiB:+.0f} MiB"
                lines.append(
                    f"| {t} | {STEP_NAMES[step]} | {FIGURE_NAMES[fig]} | "
                    + " | ".join(fmt(fig, v) for v in vals)
                    + f" | {ratio:.2f}{extra} |"
                )
    return lines


def goals(cases: list[dict], small: dict | None) -> list[tuple[str, str, bool]]:
    out = []
    if any("sctk" not in c["results"] for c in cases + ([small] if small else [])):
        return out
    if len(cases) > 1:
        first, last = cases[0], cases[-1]
        data_ratio = last["bytes"] / first["bytes"]
        for step in STEPS:
            a, b = first["results"]["sctk"][step], last["results"]["sctk"][step]
            grow = b["rss"] - a["rss"]
            out.append(
                (
                    f"sctk {STEP_NAMES[step]}: peak RSS grows <= 10 MiB "
                    f"({first['name']} -> {last['name']})",
                    f"{grow / MiB:+.1f} MiB",
                    grow <= RSS_GROWTH_GOAL,
                )
            )
            t_ratio = b["seconds"] / max(a["seconds"], 1e-9)
            out.append(
                (
                    f"sctk {STEP_NAMES[step]}: time grows at most linearly "
                    f"(ratio <= {LINEAR_SLACK} x data ratio {data_ratio:.1f})",
                    f"{t_ratio:.2f}x",
                    t_ratio <= data_ratio * LINEAR_SLACK,
                )
            )
    for c in cases + ([small] if small else []):
        res = c["results"]
        peak = max(res["sctk"][s]["rss"] for s in STEPS)
        out.append(
            (
                f"{c['name']}: sctk peak RSS <= 150 MiB",
                f"{peak / MiB:.0f} MiB",
                peak <= RSS_CAP_GOAL,
            )
        )
        if "restic" in res:
            for step in ("backup1", "verify"):
                x = res["restic"][step]["seconds"] / res["sctk"][step]["seconds"]
                out.append(
                    (f"{c['name']}: {STEP_NAMES[step]} >= 1.5x restic", f"{x:.2f}x", x >= 1.5)
                )
    if small and "restic" in small["results"]:
        res = small["results"]
        x = res["restic"]["backup2"]["seconds"] / res["sctk"]["backup2"]["seconds"]
        out.append(
            (f"{small['name']}: second backup (unchanged) >= 2x restic", f"{x:.2f}x", x >= 2)
        )
    return out


def plot(cases: list[dict], tools: list[str], path: Path) -> None:
    """Each figure against the data size (log-log): a colour per tool, a marker per step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 10))
    xs = [c["bytes"] / (1 << 30) for c in cases]
    markers = dict(zip(STEPS, "osD^v", strict=True))
    colours = {"sctk": "tab:blue", "restic": "tab:orange", "borg": "tab:green"}
    for ax, figure in zip(axes.flat, FIGURES, strict=True):
        for t in tools:
            for step in STEPS:
                ys = [c["results"][t][step][figure] for c in cases]
                if figure in ("rss", "repo_bytes"):
                    ys = [y / MiB for y in ys]
                ax.plot(
                    xs,
                    ys,
                    marker=markers[step],
                    color=colours[t],
                    label=f"{t} {STEP_NAMES[step]}",
                    alpha=0.85,
                )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("data set (GiB)")
        ax.set_title(FIGURE_NAMES[figure])
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8)
    fig.suptitle("Backup at scale: sctk, restic, borg (reference data set)")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def report(saved: dict) -> str:
    cases, small, tools = saved["cases"], saved.get("small"), saved["tools"]
    cmd = saved["command"]
    lines = [
        SECTION,
        "",
        f"Measured {saved['measured']} UTC on {saved['machine']}, {os.cpu_count()} CPUs shared "
        f"with other sessions (load average {saved['loads'][0]:.1f} at the start, "
        f"{saved['loads'][1]:.1f} at the end); {'; '.join(saved['versions'].values())}; "
        f"command: `{cmd}`; "
        + (f"median of {saved['rounds']} rounds." if saved["rounds"] > 1 else "one round."),
        "",
        "Steps (bench_backup.py drives benchmarks/backup_scale.py; every step is a child "
        "process under GNU time, and its peak memory is the child's own peak RSS or, when "
        "larger, the peak PSS of the child and its worker processes together, sampled every "
        f"{saved.get('sample_every_s', 0.25)} s: tree_memory.py): first backup of the data "
        "set plus a scratch directory of about 5% more (random files of 1 to 64 KB); second "
        "backup with nothing changed; verify reading every byte; the scratch directory "
        "deleted and two more backups (untimed); forget the older half (keep the last 2 of "
        "4) and prune, for borg `prune` plus `compact` summed; full restore of the newest "
        "snapshot, checked file by file against the data set's SHA-256 after the timing. "
        "Tools run one after the other on the same warm data; each tool's repository and "
        "restore are deleted before the next. 'x restic', 'x borg': the peer's figure over "
        "sctk's (above 1: sctk is faster, lighter or smaller).",
        "",
    ]
    for c in cases + ([small] if small else []):
        lines += [
            f"### {c['name']}: {c['files']:,} files, {c['bytes'] / MiB:,.0f} MiB",
            "",
            c["what"],
            "",
            *side_by_side(c, tools),
            "",
        ]
        bad = [t for t in tools if not all(c["results"][t][s]["correct"] for s in STEPS)]
        if bad:
            lines += [f"**Restore differed from the data set for: {', '.join(bad)}.**", ""]
    if len(cases) > 1:
        lines += [
            "### Growth from scale to scale",
            "",
            "Each figure at each scale and the ratio largest/smallest; the plot "
            "(benchmarks/backup_scale.png) shows the same on log-log axes.",
            "",
            *growth(cases, tools),
            "",
            "![backup at scale](backup_scale.png)",
            "",
        ]
    g = goals(cases, small)
    if g:
        lines += ["Goals of issue 26:", "", "| goal | measured | met |", "| --- | --- | --- |"]
        lines += [f"| {a} | {b} | {'yes' if ok else '**no**'} |" for a, b, ok in g]
        lines.append("")
    if saved.get("notes"):  # what the run should be read with (added to the saved JSON)
        lines += [saved["notes"].strip(), ""]
    lines += [FILES_CACHE_NOTES.strip(), ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def study(args, scales: list[float], tools: list[str], versions: dict, log, harness) -> int:
    """Run the scale study (bench_backup.py with several --scale values or --small-files);
    HARNESS: the bench_backup module that runs it."""
    import platform
    import tempfile

    global H
    H = harness

    loads0 = os.getloadavg()[0]
    tmpdir = Path(tempfile.gettempdir())
    work = Path(tempfile.mkdtemp(prefix="sctk-bench-scale-", dir=args.work))
    cases: list[dict] = []
    small: dict | None = None
    parts = [f"--scale {','.join(f'{s:g}' for s in scales)}"] if scales else []
    if args.small_files:
        parts.append(f"--small-files {args.small_files}")
    if args.rounds != 1:
        parts.append(f"--rounds {args.rounds}")
    if args.tools != "sctk,restic,borg":
        parts.append(f"--tools {args.tools}")
    saved = {
        "command": "python benchmarks/bench_backup.py " + " ".join(parts),
        "tools": tools,
        "versions": versions,
        "rounds": args.rounds,
        "machine": platform.machine(),
        "sample_every_s": H.SAMPLE_EVERY_S,
        "cases": cases,
        "small": None,
    }

    def save() -> None:
        saved["loads"] = (loads0, os.getloadavg()[0])
        saved["measured"] = f"{datetime.now(UTC):%Y-%m-%d %H:%M}"
        if args.json:
            args.json.write_text(json.dumps(saved, indent=1, default=str))

    try:
        for s in scales:
            path = tmpdir / f"sctk-backup-dataset-s{s:g}-seed{args.seed}"
            H.ensure_dataset(path, s, args.seed, H.DATASET_SCRIPT)
            case = {
                "name": f"scale {s:g}",
                "scale": s,
                "path": str(path),
                "what": f"The reference data set (backup_dataset.py) at scale {s:g}, seed "
                f"{args.seed}; borg with `--compression {H.Borg.compression}`, restic with "
                "repository version 2 and `--compression auto`.",
            }
            cases.append(run_case(case, tools, args.rounds, args.seed, work, log))
            save()
        if args.small_files:
            n = args.small_files
            path = tmpdir / f"sctk-backup-small-{n}-seed{args.seed}"
            small = {
                "name": f"{n:,} small files",
                "path": str(path),
                "what": f"{n:,} files of 1 to 16 KB (mean about 5.6 KB) in results/<project>/"
                "<experiment>/<run>/ directories of 20 files (text, CSV and logs, "
                "compressible; plots, arrays and checkpoints of random bytes): "
                "backup_dataset_small.py, seed "
                f"{args.seed}.",
            }
            small_dataset(path, n, args.seed)
            saved["small"] = run_case(small, tools, args.rounds, args.seed, work, log)
            save()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    save()
    return finish(saved, args)


def finish(saved: dict, args) -> int:
    """Print (and unless --no-write, write to RESULTS.md with the plot) a saved study."""
    text = report(saved)
    print(text)
    if not args.no_write:
        if len(saved["cases"]) > 1:
            plot(saved["cases"], saved["tools"], HERE / "backup_scale.png")
        write_section(SECTION, text)
        print(f"wrote {RESULTS}")
    return 0
