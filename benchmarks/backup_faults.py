"""The fault table of the backup benchmark: what sctk, restic and borg do after a crash,
a flipped byte and a full disk (`python benchmarks/bench_backup.py --faults`).

For each tool, on a copy of the data set, each fault in a fresh repository:

- a backup killed (SIGKILL) KILL_AFTER seconds after it started: the bytes it left in the
  repository, how the next backup of the same data went, and the repository's size after
  it against a clean one-backup repository;
- one flipped byte in the middle of the largest pack (borg: segment): what the full verify
  says, how many files a full restore into an empty directory gives back intact, and
  whether a backup taken after the verify restores whole (does the damage heal forward);
- one flipped byte in an index file: what the structure check says, what a restore gives,
  and whether the tool's repair (sctk `repair`, `restic rebuild-index`, `borg check
  --repair`) brings a clean check;
- one flipped byte in the snapshot file (borg keeps archives inside segments: no such file):
  what listing the snapshots says, and what restoring the latest gives;
- a full disk: the repository on a tmpfs of 40% of the data set (root only): what the
  backup says, what it leaves on the disk, and whether the structure check passes after.

restic runs with --no-cache here, so that it reads what is in the repository (its cache
would otherwise hide a damaged index or snapshot file). sctk is the engine in a child
process (bench_backup.py's `_engine` steps); its restore into an empty directory is the
partial one that `sctk restore --target DIR` does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import bench_backup as bb  # benchmarks/, beside this script

MiB = 1 << 20
KILL_AFTER = 1.0
SECTION = "## Backup faults against restic and borg"


def attempt(cmd: list[str], env: dict, cwd: Path | None = None, timeout: float = 900) -> dict:
    """Run CMD; its exit code, wall seconds and what it said (last meaningful line)."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    return {
        "rc": proc.returncode,
        "seconds": time.perf_counter() - start,
        "said": said(proc.stdout + "\n" + proc.stderr),
        "stdout": proc.stdout,
    }


ERROR_WORDS = ("error", "fatal", "damag", "fail", "corrupt", "mismatch", "no space", "invalid")


def said(text: str) -> str:
    """The line that tells what went wrong (else the last non-empty line), shortened; from
    the sctk child's JSON line, its error (or first error, or first damaged file)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if line.startswith("{"):
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if doc.get("error"):
                return _short(doc["error"])
            if doc.get("errors"):
                return _short(doc["errors"][0])
            if doc.get("damaged"):
                path, why = doc["damaged"][0]
                return _short(f"{path}: {why}")
            if doc.get("unreadable"):
                sid, why = next(iter(doc["unreadable"].items()))
                return _short(f"snapshot {sid[:12]}: {why}")
            if "ok" in doc:
                return "no problem found" if doc["ok"] else _short(line)
    for line in lines:
        low = line.lower()
        if any(w in low for w in ERROR_WORDS) and "traceback" not in low:
            return _short(line)
    return _short(lines[-1]) if lines else ""


def _short(line: str, width: int = 110) -> str:
    line = line.replace("|", "/")
    return line if len(line) <= width else line[: width - 1] + "…"


class Faulty:
    """One tool's commands for the fault table."""

    def __init__(self, tool: bb.Tool):
        self.tool = tool
        self.name = tool.name
        self.repo = tool.repo

    def env(self) -> dict:
        return self.tool.env()

    def cmd(self, step: str, *args: str) -> tuple[list[str], Path | None]:
        t, name = self.tool, self.name
        if name == "sctk":
            ops = {"check": "fcheck", "list": "flist", "repair": "frepair", "restore": "frestore"}
            op = ops.get(step, step)
            extra = {"backup": [str(t.data), *args]}.get(step, list(args))
            return [
                sys.executable,
                str(bb.HERE / "bench_backup.py"),
                "_engine",
                op,
                str(self.repo),
                *extra,
            ], None
        if name == "restic":
            base = ["restic", "--no-cache"]
            return {
                "init": ([*base, "init", "--repository-version", "2", "-q"], None),
                "backup": ([*base, "backup", "-q", "--host", "bench", str(t.data)], None),
                "check": (
                    [*base, "check", *(["--read-data"] if args[:1] == ("read-data",) else [])],
                    None,
                ),
                "list": ([*base, "snapshots"], None),
                "repair": ([*base, "rebuild-index"], None),  # `repair index` from 0.15 on
                "restore": ([*base, "restore", "latest", "--target", *args], None),
            }[step]
        label = args[0] if step == "backup" and args else None
        return {
            "init": (["borg", "init", "-e", "repokey-blake2"], None),
            "backup": (["borg", "create", f"::{label}", t.data.name], t.data.parent),
            "check": (
                ["borg", "check", *(["--verify-data"] if args[:1] == ("read-data",) else [])],
                None,
            ),
            "list": (["borg", "list"], None),
            "repair": (["borg", "check", "--repair"], None),
            "restore": (
                ["borg", "extract", f"::{self.last_label()}"],
                Path(args[0]) if args else None,
            ),
        }[step]

    def last_label(self) -> str:
        out = subprocess.run(
            ["borg", "list", "--short"], env=self.env(), capture_output=True, text=True
        ).stdout.split()
        return out[-1] if out else "none"

    def run(self, step: str, *args: str) -> dict:
        cmd, cwd = self.cmd(step, *args)
        if step == "restore" and self.name == "borg":
            Path(args[0]).mkdir(parents=True, exist_ok=True)
        env = self.env()
        env["BORG_CHECK_I_KNOW_WHAT_I_AM_DOING"] = "YES"
        return attempt(cmd, env, cwd)

    def restored(self, target: Path, expected: dict[str, str]) -> tuple[int, int]:
        """(files restored intact, files expected)."""
        root = self.tool.restored_root(target)
        got = bb.digest(root) if root.exists() else {}
        return sum(1 for k, v in expected.items() if got.get(k) == v), len(expected)

    # the files a fault damages
    def pack_file(self) -> Path:
        return max(
            (p for p in (self.repo / "data").rglob("*") if p.is_file()),
            key=lambda p: p.stat().st_size,
        )

    def index_file(self) -> Path | None:
        if self.name == "borg":
            found = sorted(self.repo.glob("index.*"))
        else:
            found = sorted(p for p in (self.repo / "index").rglob("*") if p.is_file())
        return found[0] if found else None

    def snapshot_file(self) -> Path | None:
        if self.name == "borg":
            return None  # archives are objects inside the segments
        found = sorted(p for p in (self.repo / "snapshots").rglob("*") if p.is_file())
        return found[-1] if found else None


def flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    os.chmod(path, 0o600)
    path.write_bytes(bytes(data))


def fresh(work: Path, dataset: Path, name: str, fault: str) -> tuple[Faulty, Path]:
    """A work directory with the data and an initialised repository of tool NAME."""
    root = work / f"{name}-{fault}"
    root.mkdir(parents=True)
    data = root / "data"
    subprocess.run(["cp", "-a", str(dataset), str(data)], check=True)
    f = Faulty(bb.TOOL_CLASSES[name](root, data))
    return f, root


def killed_backup(f: Faulty, clean_bytes: int, kill_after: float) -> dict:
    f.run("init")
    before = bb.tree_bytes(f.repo)
    cmd, cwd = f.cmd("backup", "killed")
    proc = subprocess.Popen(
        cmd,
        env=f.env(),
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    time.sleep(kill_after)  # the fault is a crash at a wall-clock moment, as in the issue
    finished = proc.poll() is not None
    if not finished:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    left = bb.tree_bytes(f.repo) - before
    nxt = f.run("backup", "after")
    after = bb.tree_bytes(f.repo)
    return {
        "finished_first": finished,
        "left_mib": left / MiB,
        "next_rc": nxt["rc"],
        "next_s": nxt["seconds"],
        "next_said": nxt["said"],
        "size_vs_clean": after / clean_bytes if clean_bytes else 0.0,
    }


def pack_flip(f: Faulty, root: Path, expected: dict) -> dict:
    f.run("init")
    f.run("backup", "first")
    flip(f.pack_file())
    verify = f.run("check", "read-data")
    target = root / "restore"
    restore = f.run("restore", str(target))
    intact = f.restored(target, expected)
    again = f.run("backup", "second")
    target2 = root / "restore2"
    f.run("restore", str(target2))
    healed = f.restored(target2, expected)
    return {
        "verify_rc": verify["rc"],
        "verify_said": verify["said"],
        "restore_rc": restore["rc"],
        "intact": intact,
        "backup_rc": again["rc"],
        "healed": healed,
    }


def index_flip(f: Faulty, root: Path, expected: dict) -> dict:
    f.run("init")
    f.run("backup", "first")
    index = f.index_file()
    if index is None:
        return {"na": True}
    flip(index)
    check = f.run("check")
    target = root / "restore"
    restore = f.run("restore", str(target))
    intact = f.restored(target, expected)
    repair = f.run("repair")
    after = f.run("check")
    return {
        "check_rc": check["rc"],
        "check_said": check["said"],
        "restore_rc": restore["rc"],
        "intact": intact,
        "repair_rc": repair["rc"],
        "repair_said": repair["said"],
        "after_rc": after["rc"],
    }


def snapshot_flip(f: Faulty, root: Path, expected: dict) -> dict:
    f.run("init")
    f.run("backup", "first")
    snap = f.snapshot_file()
    if snap is None:
        return {"na": True}
    flip(snap)
    listed = f.run("list")
    target = root / "restore"
    restore = f.run("restore", str(target))
    return {
        "list_rc": listed["rc"],
        "list_said": listed["said"],
        "restore_rc": restore["rc"],
        "restore_said": restore["said"],
        "intact": f.restored(target, expected),
    }


def full_disk(f: Faulty, root: Path, size_bytes: int) -> dict:
    if os.geteuid() != 0:
        return {"na": True}
    mnt = root / "disk"
    mnt.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(mnt)], check=True
    )
    try:
        f.repo = f.tool.repo = mnt / "repo"
        f.run("init")
        before = bb.tree_bytes(mnt)
        backup = f.run("backup", "full")
        left = bb.tree_bytes(mnt) - before
        check = f.run("check")
        return {
            "backup_rc": backup["rc"],
            "backup_said": backup["said"],
            "left_mib": left / MiB,
            "check_rc": check["rc"],
        }
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def run_faults(
    work: Path, dataset: Path, tools: list[str], log, kill_after: float = KILL_AFTER
) -> dict:
    expected = bb.digest(dataset)
    expected.pop(".backup-dataset.json", None)
    data_bytes = bb.tree_bytes(dataset)
    out: dict = {}
    for name in tools:
        res = out[name] = {}
        f, root = fresh(work, dataset, name, "clean")
        f.run("init")
        f.run("backup", "clean")
        clean = bb.tree_bytes(f.repo)
        res["clean_mib"] = clean / MiB
        log(f"{name}: clean repository {clean / MiB:.1f} MiB")
        steps = (
            ("killed", lambda f, root, clean=clean: killed_backup(f, clean, kill_after)),
            ("pack", lambda f, root: pack_flip(f, root, expected)),
            ("index", lambda f, root: index_flip(f, root, expected)),
            ("snapshot", lambda f, root: snapshot_flip(f, root, expected)),
            ("full_disk", lambda f, root: full_disk(f, root, int(data_bytes * 0.4))),
        )
        for fault, step in steps:
            f, root = fresh(work, dataset, name, fault)
            res[fault] = step(f, root)
            log(f"{name}: {fault}: {res[fault]}")
    return out


def _files(pair) -> str:
    got, total = pair
    return f"{got}/{total}"


def _rc(rc: int) -> str:
    return "exit 0" if rc == 0 else f"exit {rc}"


def table(out: dict, tools: list[str]) -> list[str]:
    rows: list[tuple[str, dict]] = []

    def row(label: str, fmt) -> None:
        cells = {}
        for t in tools:
            try:
                cells[t] = fmt(out[t])
            except KeyError:
                cells[t] = "n/a"
        rows.append((label, cells))

    def na(d: dict, fmt):
        return "n/a" if d.get("na") else fmt(d)

    row(
        "killed backup: finished before the kill",
        lambda r: "yes" if r["killed"]["finished_first"] else "no",
    )
    row("killed backup: bytes left, MiB", lambda r: f"{r['killed']['left_mib']:.1f}")
    row(
        "killed backup: next backup",
        lambda r: f"{_rc(r['killed']['next_rc'])}, {r['killed']['next_s']:.1f} s",
    )
    row("killed backup: size after / clean", lambda r: f"{r['killed']['size_vs_clean']:.2f}")
    row(
        "pack byte: verify says",
        lambda r: f"{_rc(r['pack']['verify_rc'])}: {r['pack']['verify_said']}",
    )
    row(
        "pack byte: full restore, files intact",
        lambda r: f"{_rc(r['pack']['restore_rc'])}, {_files(r['pack']['intact'])}",
    )
    row("pack byte: backup after verify restores", lambda r: _files(r["pack"]["healed"]))
    row(
        "index byte: check says",
        lambda r: na(r["index"], lambda d: f"{_rc(d['check_rc'])}: {d['check_said']}"),
    )
    row(
        "index byte: restore, files intact",
        lambda r: na(r["index"], lambda d: f"{_rc(d['restore_rc'])}, {_files(d['intact'])}"),
    )
    row(
        "index byte: repair, then check",
        lambda r: na(
            r["index"],
            lambda d: (
                f"{_rc(d['repair_rc'])}, then check {_rc(d['after_rc'])}"
                + (f" ({d['repair_said']})" if d.get("repair_said") and d["repair_rc"] else "")
            ),
        ),
    )
    row(
        "snapshot byte: list says",
        lambda r: na(r["snapshot"], lambda d: f"{_rc(d['list_rc'])}: {d['list_said']}"),
    )
    row(
        "snapshot byte: restore latest",
        lambda r: na(
            r["snapshot"],
            lambda d: f"{_rc(d['restore_rc'])}, {_files(d['intact'])}: {d['restore_said']}",
        ),
    )
    row(
        "full disk: backup says",
        lambda r: na(r["full_disk"], lambda d: f"{_rc(d['backup_rc'])}: {d['backup_said']}"),
    )
    row(
        "full disk: left on the disk, MiB",
        lambda r: na(r["full_disk"], lambda d: f"{d['left_mib']:.1f}"),
    )
    row("full disk: check after", lambda r: na(r["full_disk"], lambda d: _rc(d["check_rc"])))
    lines = ["| fault | " + " | ".join(tools) + " |", "| --- |" + " --- |" * len(tools)]
    for label, cells in rows:
        lines.append(f"| {label} | " + " | ".join(cells[t] for t in tools) + " |")
    return lines


def report(
    out: dict, tools: list[str], args, loads: tuple[float, float], versions: dict, info: str
) -> str:
    from datetime import UTC, datetime

    command = f"python benchmarks/bench_backup.py --faults --scale {args.scale} --seed {args.seed}"
    if args.shape != "reference":
        command += f" --shape {args.shape}"
    if args.kill_after != KILL_AFTER:
        command += f" --kill-after {args.kill_after:g}"
    return "\n".join(
        [
            SECTION,
            "",
            f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs shared "
            f"with other work (load average {loads[0]:.1f} at the start, {loads[1]:.1f} at the "
            f"end: the seconds here are noisy, the outcomes are not); "
            f"{'; '.join(versions[t] for t in tools)}; command: `{command}`; data: {info}.",
            "",
            "\n\n".join((__doc__ or "").split("\n\n")[1:4]).replace(
                "KILL_AFTER seconds", f"{args.kill_after:g} s (--kill-after)"
            ),
            "",
            *table(out, tools),
            "",
            "'files intact': files restored byte-identical to the data set, of all files. "
            "The killed backup is SIGKILLed at a wall-clock moment (as in issue 17), so on a "
            "small data set a fast tool may finish first (then nothing is left behind).",
            "",
        ]
    )
