"""Backup against restic and borg: the sctk repository engine on a 1 GiB reference data set.

Run by hand (not a test):

    python benchmarks/bench_backup.py [--scale 1.0] [--seed 6] [--rounds 1] [--no-write]
    python benchmarks/bench_backup.py --scale 0.05 --no-write      # a quick iteration
    python benchmarks/bench_backup.py --scale 0.2 --profile --no-write   # where sctk spends
    python benchmarks/bench_backup.py --remote s3 --tools sctk,restic --scale 0.25  # over S3
    python benchmarks/bench_backup.py --scale 1,4,16 --small-files 1000000  # backup_scale.py

The data set comes from benchmarks/backup_dataset.py (seeded; kept pristine in --dataset and
copied for each round). In one round, for each tool in turn on the same data:

1. init a repository: sctk (`Repository.init`, passphrase-wrapped key), restic (repository
   version 2, `--compression auto`, RESTIC_PASSWORD), borg (`borg init -e repokey-blake2`,
   BORG_PASSPHRASE, `borg create --compression zstd,3` unless --borg-compression says
   otherwise);
2. first backup of the data directory (MB/s of the data set);
3. `backup_dataset.py mutate` (5% of the files, about 1% of the database rows updated and
   2% inserted), then a second backup (seconds, repository growth);
4. verify reading every byte: `restic check --read-data`, `borg check --verify-data`,
   `Repository.check(read_data=True)`;
5. a full restore of the second snapshot into an empty directory (checked against the data
   set's SHA-256 afterwards, outside the timing);
6. a one-file restore of a small file (median of three).

Every tool runs as a child process under GNU time, so wall time, peak resident memory and
CPU seconds are measured the same way for each (sctk's child is this script's `_engine`
entry, which uses only `sctk.backup.repo`: `Repository`, `writer.add_tree`, `check`,
`restore`). The page cache cannot be dropped fairly here (no privileges on a shared
machine), so all tools read the same warm data: the data set is read once before the first
backup and again after the mutation. The steps are interleaved (all tools' first backups,
then all second backups, ...) so that load from other processes spreads over the tools.

The figures are printed with ratios against restic and borg, each goal is marked met or
not, and the table is written to benchmarks/RESULTS.md, section "Backup against restic and
borg".
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

# The sctk child (`_engine`, timed like restic and borg) needs none of the harness: it skips
# the harness's imports, so its start-up is the engine's own and not this script's.
if not (__name__ == "__main__" and sys.argv[1:2] == ["_engine"]):
    import argparse
    import hashlib
    import platform
    import shutil
    import sqlite3
    import statistics
    import subprocess
    import tempfile
    import threading
    from datetime import UTC, datetime

    from results import RESULTS, write_section  # benchmarks/results.py
    from tree_memory import tree_pss_kib  # benchmarks/tree_memory.py

SECTION = "## Backup against restic and borg"
HERE = Path(__file__).resolve().parent
DATASET_SCRIPT = HERE / "backup_dataset.py"
# How often the memory of a tool's process tree is sampled. A step of sctk's at scale 1
# lasts 1-4 s on a fast machine: sampled four times a second, its workers' peak was missed
# (the smallest scale read low, so the growth to the largest read high). A sample of two
# processes reads their smaps_rollup in about 0.8 ms: 20 a second is 1-2% of one core, taken
# alike from every tool measured.
SAMPLE_EVERY_S = 0.05


class Shape:
    """The data set being measured (--shape): its generator, its RESULTS.md section, and
    where its SQLite database is."""

    name = "reference"
    script = DATASET_SCRIPT
    section = SECTION
    db = "sctk.db"
    tables = ("measurements", "events")


SHAPES = {
    "reference": (DATASET_SCRIPT, SECTION),
    "lab": (HERE / "backup_dataset_lab.py", "## Backup against restic and borg, second data set"),
}
PASSPHRASE = "correct horse battery staple, bench"
MiB = 1 << 20
TOOLS = ("sctk", "restic", "borg")
ONE_FILE_REPEATS = 3


# --- running a child -----------------------------------------------------------------------


def measure(cmd: list[str], env: dict | None = None, cwd: Path | None = None) -> dict:
    """Run CMD under GNU time: wall seconds, peak memory (bytes), CPU seconds, stdout.

    GNU time reads the child's rusage from wait4, so its peak RSS is the child's own
    high-water mark (not this process's, as a fork-then-exec measurement would be) and its
    CPU includes the worker processes the child waited for. A tool's worker processes each
    have their own high-water mark, so the memory of the whole tree (PSS summed over the
    child and its descendants, tree_memory.py) is sampled too, and the larger is kept."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        full = ["/usr/bin/time", "-f", "%M %U %S", "-o", tf.name, *cmd]
        load = os.getloadavg()[0]
        start = time.perf_counter()
        proc = subprocess.Popen(
            full, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        tree_peak = [0]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(SAMPLE_EVERY_S):
                # the tool's processes, not GNU time's own
                tree_peak[0] = max(tree_peak[0], tree_pss_kib(proc.pid, own=False))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        stdout, stderr = proc.communicate()
        done.set()
        sampler.join()
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(
                f"{' '.join(cmd)} failed with exit {proc.returncode}:\n"
                f"{stdout[-2000:]}\n{stderr[-4000:]}"
            )
        maxrss_kb, user, system = tf.read().split()[-3:]
    return {
        "seconds": seconds,
        "rss": max(int(maxrss_kb), tree_peak[0]) * 1024,
        "cpu": float(user) + float(system),
        "load": load,
        "stdout": stdout,
    }


def tree_bytes(root: Path) -> int:
    """Apparent size of every file under ROOT."""
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def repo_parts(root: Path) -> dict[str, int]:
    """Bytes of a repository by top-level entry (data/packs, index, snapshots, ...)."""
    parts: dict[str, int] = {}
    for p in root.rglob("*"):
        if p.is_file():
            top = p.relative_to(root).parts[0]
            parts[top] = parts.get(top, 0) + p.stat().st_size
    return parts


def warm(root: Path) -> None:
    """Read every file once so that each tool starts from the same (warm) page cache."""
    for p in sorted(root.rglob("*")):
        if p.is_file():
            with p.open("rb") as f:
                while f.read(1 << 22):
                    pass


def digest(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            h = hashlib.sha256()
            with p.open("rb") as f:
                while block := f.read(1 << 20):
                    h.update(block)
            out[p.relative_to(root).as_posix()] = h.hexdigest()
    return out


# --- the tools -----------------------------------------------------------------------------


class Tool:
    """One backup program: how to run each step, and where its restore puts the data."""

    name = ""

    def __init__(self, work: Path, data: Path) -> None:
        self.work = work
        self.data = data
        self.repo = work / f"repo-{self.name}"

    def env(self) -> dict:
        return dict(os.environ)

    def run(self, args: list[str], cwd: Path | None = None) -> dict:
        return measure(args, env=self.env(), cwd=cwd)

    def restored_root(self, target: Path) -> Path:
        raise NotImplementedError

    def snapshot_path(self, rel: str) -> str:
        raise NotImplementedError


class Sctk(Tool):
    name = "sctk"

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SCTK_")}
        env["BENCH_PASSPHRASE"] = PASSPHRASE
        return env

    profile_dir: Path | None = None  # --profile: each step sampled by py-spy into this dir

    def _engine(self, *args: str) -> dict:
        cmd = [sys.executable, str(Path(__file__).resolve()), "_engine", *args]
        out = None
        if self.profile_dir is not None:
            self.profile_dir.mkdir(parents=True, exist_ok=True)
            out = self.profile_dir / f"{len(list(self.profile_dir.iterdir())):02d}-{args[0]}.txt"
            cmd = ["py-spy", "record", "-r", "250", "-f", "raw", "-o", str(out), "--", *cmd]
        result = self.run(cmd)
        last = [line for line in result["stdout"].splitlines() if line.startswith("{")][-1]
        result["engine"] = json.loads(last)
        if out is not None:
            result["profile"] = summarise_profile(out)
        return result

    def init(self) -> dict:
        return self._engine("init", str(self.repo))

    def backup(self, label: str) -> dict:
        return self._engine("backup", str(self.repo), str(self.data), label)

    def db_chunks(self) -> dict:
        """How the engine cut the database (a diagnostic, run after the timed steps)."""
        return self._engine("dbstats", str(self.repo), Shape.db)["engine"]["db"]

    def verify(self) -> dict:
        result = self._engine("check", str(self.repo))
        if not result["engine"]["ok"]:
            raise SystemExit(f"sctk check found errors: {result['engine']['errors'][:5]}")
        return result

    def restore(self, target: Path) -> dict:
        return self._engine("restore", str(self.repo), str(target))

    def restore_one(self, target: Path, rel: str) -> dict:
        return self._engine("restore", str(self.repo), str(target), rel)

    def restored_root(self, target: Path) -> Path:
        return target

    @staticmethod
    def version() -> str:
        from importlib.metadata import version

        return f"sctk {version('sctk')}"


class Restic(Tool):
    name = "restic"

    def env(self) -> dict:
        env = dict(os.environ)
        env.update(
            RESTIC_PASSWORD=PASSPHRASE,
            RESTIC_REPOSITORY=str(self.repo),
            RESTIC_CACHE_DIR=str(self.work / "restic-cache"),
        )
        return env

    def init(self) -> dict:
        return self.run(["restic", "init", "--repository-version", "2", "-q"])

    def backup(self, label: str) -> dict:
        return self.run(
            ["restic", "backup", "-q", "--compression", "auto", "--host", "bench", "--tag", label]
            + [str(self.data)]
        )

    def verify(self) -> dict:
        return self.run(["restic", "check", "--read-data", "-q"])

    def restore(self, target: Path) -> dict:
        return self.run(["restic", "restore", "latest", "-q", "--target", str(target)])

    def restore_one(self, target: Path, rel: str) -> dict:
        return self.run(
            ["restic", "restore", "latest", "-q", "--target", str(target)]
            + ["--include", str(self.data / rel)]
        )

    def restored_root(self, target: Path) -> Path:
        return target / self.data.relative_to(self.data.anchor)

    def _cat(self, *args: str) -> dict:
        out = subprocess.run(
            ["restic", "cat", *args], env=self.env(), capture_output=True, text=True, check=True
        )
        return json.loads(out.stdout)

    def db_chunks(self) -> dict:
        """How restic cut sctk.db in the last two snapshots (a diagnostic, after the timed
        steps): walk the trees down to the file, sizes from the index."""
        try:
            listed = subprocess.run(
                ["restic", "snapshots", "--json"],
                env=self.env(),
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            snaps = json.loads(listed)

            def content(snap: dict) -> list[str]:
                tree = snap["tree"]
                parts = [*self.data.relative_to(self.data.anchor).parts, *Shape.db.split("/")]
                for i, name in enumerate(parts):
                    node = next(n for n in self._cat("blob", tree)["nodes"] if n["name"] == name)
                    if i == len(parts) - 1:
                        return node.get("content") or []
                    tree = node["subtree"]
                return []

            index_ids = subprocess.run(
                ["restic", "list", "index"],
                env=self.env(),
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            blobs = {}
            for iid in index_ids:
                for pack in self._cat("index", iid)["packs"]:
                    for blob in pack["blobs"]:
                        blobs[blob["id"]] = blob
            last = content(snaps[-1])
            prev = set(content(snaps[-2])) if len(snaps) > 1 else set()
            new = [c for c in dict.fromkeys(last) if c not in prev]
            size = (self.data / Shape.db).stat().st_size
            return {
                "chunks": len(last),
                "avg_chunk": size / max(1, len(last)),
                "new_chunks": len(new),
                "new_stored": sum(blobs[c]["length"] for c in new),
            }
        except (subprocess.CalledProcessError, StopIteration, KeyError, ValueError):
            return {}

    @staticmethod
    def version() -> str:
        return subprocess.run(["restic", "version"], capture_output=True, text=True).stdout.split(
            " compiled"
        )[0]


class Borg(Tool):
    name = "borg"
    compression = "zstd,3"

    def env(self) -> dict:
        env = dict(os.environ)
        env.update(
            BORG_PASSPHRASE=PASSPHRASE,
            BORG_REPO=str(self.repo),
            BORG_BASE_DIR=str(self.work / "borg-base"),
            BORG_RELOCATED_REPO_ACCESS_IS_OK="yes",
        )
        return env

    def init(self) -> dict:
        return self.run(["borg", "init", "-e", "repokey-blake2"])

    def backup(self, label: str) -> dict:
        # A relative path (from the parent directory) so that archives hold data/...
        return self.run(
            ["borg", "create", "--compression", self.compression, f"::{label}", self.data.name],
            cwd=self.data.parent,
        )

    def verify(self) -> dict:
        return self.run(["borg", "check", "--verify-data"])

    def restore(self, target: Path) -> dict:
        target.mkdir(parents=True, exist_ok=True)
        return self.run(["borg", "extract", "::second"], cwd=target)

    def restore_one(self, target: Path, rel: str) -> dict:
        target.mkdir(parents=True, exist_ok=True)
        return self.run(["borg", "extract", "::second", f"{self.data.name}/{rel}"], cwd=target)

    def restored_root(self, target: Path) -> Path:
        return target / self.data.name

    @staticmethod
    def version() -> str:
        return subprocess.run(["borg", "--version"], capture_output=True, text=True).stdout.strip()


TOOL_CLASSES = {"sctk": Sctk, "restic": Restic, "borg": Borg}


# Innermost frames where a thread only waits (py-spy's idle detection misses these waits
# on locks taken in C): left out of the profile summary.
WAIT_FRAMES = (
    "_worker (concurrent/futures/thread.py:81)",
    "Condition.wait (",
    "Event.wait (",
    "Queue.get (",
    "Thread._wait_for_tstate_lock (",
    "Thread.join (",
    "Future.result (",
)


def summarise_profile(path: Path, top: int = 14) -> dict:
    """py-spy's raw samples (one stack a line, 'frame;frame;... count') summed by the
    innermost Python frame (self time: a line that calls into C, zstd or AES or SHA-256,
    owns that C time) and by engine function (inclusive time); waits left out."""
    selfs: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = stack.split(";")
        if frames[-1].startswith(WAIT_FRAMES):
            continue
        total += n
        selfs[frames[-1]] = selfs.get(frames[-1], 0) + n
        seen = set()
        for f in frames:
            if "backup/repo/" in f:
                name = f.rsplit(":", 1)[0] + ")"  # drop the line number
                if name not in seen:
                    seen.add(name)
                    incl[name] = incl.get(name, 0) + n

    def ranked(d: dict[str, int]) -> list[tuple[str, float]]:
        items = sorted(d.items(), key=lambda kv: -kv[1])[:top]
        return [(k, v / max(1, total)) for k, v in items]

    return {"samples": total, "self": ranked(selfs), "inclusive": ranked(incl)}


# Large enough that big files are sampled in slices of many chunks (the writer's trials then
# weigh as they do on whole files).
STAGE_SAMPLE = 256 * MiB


def stage_costs(dataset: Path, sample_bytes: int = STAGE_SAMPLE) -> list[tuple[str, float]]:
    """Single-thread MB/s of each step a backup or a restore does, on a sample of the data
    set (a slice of every file in proportion to its size, cut as the engine cuts): the CPU
    budget per GiB. "zstd as the writer chooses" is the engine's per-file choice of level 1,
    level 3 or none (sctk.backup.repo.compression); level 3 everywhere is shown beside it."""
    import blake3
    import zstandard
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from pyfastcdc import FastCDC

    from sctk.backup.repo.compression import SMALL_FILES, Compressors, FilePolicy
    from sctk.backup.repo.repository import CHUNKER

    files = [p for p in sorted(dataset.rglob("*")) if p.is_file()]
    total = sum(p.stat().st_size for p in files)
    parts = []
    for p in files:
        want = int(p.stat().st_size * sample_bytes / total)
        if want:
            with p.open("rb") as f:
                parts.append(f.read(want))
    data = b"".join(parts)
    cdc = FastCDC(CHUNKER["avg"], min_size=CHUNKER["min"], max_size=CHUNKER["max"], seed=7)
    files_chunks = [[bytes(c.data) for c in cdc.cut_buf(part)] for part in parts]
    chunks = [c for fc in files_chunks for c in fc]
    key = os.urandom(32)
    aead = AESGCM(key)
    nonce = os.urandom(12)
    cctx = zstandard.ZstdCompressor(level=3)
    dctx = zstandard.ZstdDecompressor()
    writer_zstd = Compressors()

    def as_the_writer() -> list[tuple[bytes, int]]:
        out = []
        for fc in files_chunks:
            policy = FilePolicy(trials=True) if len(fc) > 1 else SMALL_FILES
            for c in fc:
                trial = policy.next_is_trial()
                out.append(writer_zstd.compress(c, policy, trial))
                if trial:
                    policy.trial_done()
        return out

    stored = as_the_writer()
    sealed = [aead.encrypt(nonce, c, None) for c, _flags in stored]

    def rate(fn) -> float:
        # CPU time of this thread, not wall time: the machine is shared.
        start = time.thread_time()
        fn()
        return len(data) / MiB / (time.thread_time() - start)

    def sha_all() -> None:
        hashlib.sha256(data).digest()

    def decompress_all() -> None:
        for (c, flags), raw in zip(stored, chunks, strict=True):
            if flags:
                dctx.decompress(c, max_output_size=len(raw))

    return [
        ("FastCDC cut", rate(lambda: [sum(1 for _ in cdc.cut_buf(p)) for p in parts])),
        ("SHA-256 of the file", rate(sha_all)),
        ("keyed BLAKE3 chunk id", rate(lambda: [blake3.blake3(c, key=key) for c in chunks])),
        ("zstd as the writer chooses", rate(as_the_writer)),
        ("zstd level 3 everywhere", rate(lambda: [cctx.compress(c) for c in chunks])),
        ("AES-256-GCM encrypt", rate(lambda: [aead.encrypt(nonce, c, None) for c, _ in stored])),
        ("AES-256-GCM decrypt", rate(lambda: [aead.decrypt(nonce, c, None) for c in sealed])),
        ("zstd decompress", rate(decompress_all)),
        ("stored/raw", sum(len(c) for c, _flags in stored) / len(data)),
    ]


# --- the sctk child ------------------------------------------------------------------------


def _db_chunks(repo, snapshot_id: str, db: str = "sctk.db") -> dict:
    """How sctk.db was cut, and what its new chunks stored, against the previous snapshot
    (the database is most of the second backup's growth). Reads the engine's in-memory
    index, an internal: empty when that changes."""
    try:
        snaps = [s.id for s in repo.snapshots()]
        entry = {f.path: f for f in repo.files(snapshot_id)}[db]
        prev = set()
        if snaps.index(snapshot_id) > 0:
            before = snaps[snaps.index(snapshot_id) - 1]
            prev = set({f.path: f for f in repo.files(before)}[db].chunks)
        new = [c for c in dict.fromkeys(entry.chunks) if c not in prev]
        return {
            "chunks": len(entry.chunks),
            "avg_chunk": entry.size / max(1, len(entry.chunks)),
            "new_chunks": len(new),
            "new_stored": sum(repo.index.entries[c][2] for c in new),
        }
    except Exception:  # a diagnostic only
        return {}


def fault_main(op: str, repo_path: str, rest: list[str]) -> int:
    """The sctk steps of the fault table (backup_faults.py): what the engine says, as one
    JSON line; exit 1 when it reports a problem, as restic and borg do."""
    from dataclasses import asdict

    from sctk.backup.repo import RepoError, Repository

    out: dict = {}
    try:
        repo = Repository.open(repo_path, os.environ["BENCH_PASSPHRASE"])
        if op == "fcheck":
            report = repo.check(read_data=rest[:1] == ["read-data"])
            out = {"ok": report.ok, "errors": report.errors[:5]}
            out["unreferenced_bytes"] = report.unreferenced_bytes
        elif op == "flist":
            out = {"snapshots": len(repo.snapshots()), "unreadable": repo.unreadable_snapshots()}
            out["ok"] = not out["unreadable"]
        elif op == "frepair":
            out = asdict(repo.repair())
            out["ok"] = not (out["damaged_files"] or out["damaged_snapshots"])
        elif op == "frestore":  # into an empty directory: every intact file, as restic does
            stats = repo.restore(repo.find_snapshot("latest").id, Path(rest[0]), partial=True)
            out = {"ok": not stats.damaged, "files": stats.files, "damaged": stats.damaged[:5]}
        else:
            raise SystemExit(f"unknown engine step {op!r}")
    except RepoError as exc:
        out = {"ok": False, "error": str(exc)}
    print(json.dumps(out))
    return 0 if out["ok"] else 1


def _rss_mib() -> int:
    """This process's resident memory now (MiB), from /proc."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    return 0


def engine_main(argv: list[str]) -> None:
    """`bench_backup.py _engine OP REPO ...`: one engine step; prints a JSON line."""
    from sctk.backup.repo import Repository

    op, repo_path, *rest = argv
    if op.startswith("f"):
        sys.exit(fault_main(op, repo_path, rest))
    passphrase = os.environ["BENCH_PASSPHRASE"]
    marks = {"start": time.perf_counter()}
    out: dict = {}
    if op == "init":
        Repository.init(repo_path, passphrase)
        marks["init"] = time.perf_counter()
    else:
        repo = Repository.open(repo_path, passphrase)
        marks["open"] = time.perf_counter()
        if op == "backup":
            data, label = Path(rest[0]), rest[1]
            # resident MiB after each phase (the peak is GNU time's): where the memory is
            rss = {"open": _rss_mib()}
            with repo.writer() as writer:
                marks["writer"] = time.perf_counter()
                rss["writer"] = _rss_mib()
                files = writer.add_tree(data, collect=False)  # no entry list held for us
                marks["add_tree"] = time.perf_counter()
                rss["add_tree"] = _rss_mib()
                info = writer.commit(label, {"bench": True}, host="bench")
            marks["commit"] = time.perf_counter()
            rss["commit"] = _rss_mib()
            out.update(files=files, size=info.size, added_bytes=info.added_bytes)
            out.update(skipped=writer.skipped_files, rss_mib=rss)
        elif op == "prune":  # keep the last N snapshots, collect the rest (backup_scale.py)
            from sctk.backup.repo.models import PrunePolicy

            pruned = repo.prune(PrunePolicy(keep_last=int(rest[0])))
            marks["prune"] = time.perf_counter()
            out.update(removed=len(pruned.removed_snapshots))
        elif op == "dbstats":
            out["db"] = _db_chunks(repo, repo.find_snapshot("latest").id, *rest[:1])
        elif op == "check":
            report = repo.check(read_data=True)
            marks["check"] = time.perf_counter()
            out.update(
                ok=report.ok,
                errors=report.errors[:20],
                bytes_read=report.bytes_read,
                packs=report.packs,
                chunks=report.chunks,
            )
        elif op == "restore":
            target = Path(rest[0])
            only = rest[1] if len(rest) > 1 else None
            snap = repo.find_snapshot("latest")
            marks["find"] = time.perf_counter()
            include = (lambda p: p == only) if only else None
            stats = repo.restore(snap.id, target, include=include)
            marks["restore"] = time.perf_counter()
            out.update(files=stats.files, bytes=stats.bytes)
        else:
            raise SystemExit(f"unknown engine step {op!r}")
    names = list(marks)
    out["phases"] = {
        names[i]: round(marks[names[i]] - marks[names[i - 1]], 4) for i in range(1, len(names))
    }
    print(json.dumps(out))


# --- one round -----------------------------------------------------------------------------


def ensure_dataset(path: Path, scale: float, seed: int, script: Path = DATASET_SCRIPT) -> Path:
    """The pristine data set in PATH, generated there unless a matching one is present."""
    stamp = path / ".backup-dataset.json"
    if stamp.exists():
        meta = json.loads(stamp.read_text())
        if meta.get("scale") == scale and meta.get("seed") == seed and not meta.get("mutated"):
            return path
        raise SystemExit(f"{path} holds another data set ({meta}): pass another --dataset")
    print(f"generating the data set in {path} (scale {scale}, seed {seed})", flush=True)
    cmd = [sys.executable, str(script), "generate", str(path)]
    subprocess.run([*cmd, "--scale", str(scale), "--seed", str(seed)], check=True)
    return path


def compile_sctk() -> None:
    """Byte-compile the sctk package, as pip does when it installs one: an editable install
    run with PYTHONDONTWRITEBYTECODE set would otherwise compile every module from source
    in every sctk child (borg, also Python, comes byte-compiled from its package)."""
    import compileall

    import sctk

    compileall.compile_dir(str(Path(sctk.__file__).parent), quiet=1)


def pick_one_file(files: dict[str, str]) -> str:
    """A small report deep in the tree (what someone restores by hand)."""
    reports = sorted(p for p in files if p.startswith(("reports/", "runs/")))
    return reports[len(reports) // 2] if reports else sorted(files)[0]


def _phases(r: dict) -> str:
    """The sctk child's own timing of its phases, for the log."""
    if "engine" not in r:
        return ""
    return " [" + ", ".join(f"{k} {v:.2f}" for k, v in r["engine"]["phases"].items()) + "]"


def run_round(work: Path, dataset: Path, tools: list[str], seed: int, log) -> tuple[dict, dict]:
    data = work / "data"
    # The copy keeps the generator's stamp file (mutate needs it): every tool backs it up.
    subprocess.run(["cp", "-a", str(dataset), str(data)], check=True)
    objs = [TOOL_CLASSES[name](work, data) for name in tools]
    res: dict = {t.name: {} for t in objs}
    info: dict = {}

    size1 = tree_bytes(data)
    info["bytes_first"] = size1
    info["shape"] = Shape.name
    info["db_bytes"] = (data / Shape.db).stat().st_size
    con = sqlite3.connect(data / Shape.db)
    try:
        info["db_rows"] = sum(
            con.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in Shape.tables
        )
    finally:
        con.close()
    info["small_files"] = sum(
        1 for p in data.rglob("*") if p.is_file() and p.stat().st_size <= 64 * 1024
    )
    if Shape.name == "lab":
        import backup_dataset_lab  # benchmarks/, beside this script

        info["description"] = backup_dataset_lab.summary(data)["description"]
    for t in objs:
        res[t.name]["init"] = t.init()
    warm(data)
    for t in objs:
        log(f"{t.name}: first backup")
        r = res[t.name]["backup1"] = t.backup("first")
        r["repo_bytes"] = tree_bytes(t.repo)
        log(
            f"  {r['seconds']:.1f} s, {size1 / MiB / r['seconds']:.1f} MB/s, "
            f"repo {r['repo_bytes'] / MiB:.1f} MiB, rss {r['rss'] / MiB:.0f} MiB, "
            f"cpu {r['cpu']:.1f} s{_phases(r)}"
        )

    changes = subprocess.run(
        [sys.executable, str(Shape.script), "mutate", str(data), "--seed", str(seed)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    info["changes"] = json.loads(changes)
    info["bytes_second"] = tree_bytes(data)
    warm(data)
    for t in objs:
        log(f"{t.name}: second backup")
        r = res[t.name]["backup2"] = t.backup("second")
        r["repo_bytes"] = tree_bytes(t.repo)
        r["growth"] = r["repo_bytes"] - res[t.name]["backup1"]["repo_bytes"]
        r["repo_parts"] = repo_parts(t.repo)
        log(
            f"  {r['seconds']:.1f} s, growth {r['growth'] / MiB:.1f} MiB, "
            f"cpu {r['cpu']:.1f} s{_phases(r)}"
        )

    for t in objs:
        if hasattr(t, "db_chunks"):
            info[f"{t.name}_db"] = t.db_chunks()
            log(f"{Shape.db} in {t.name}'s second snapshot: {info[f'{t.name}_db']}")
    for t in objs:
        parts = res[t.name]["backup2"]["repo_parts"]
        log(
            f"{t.name} repository: " + ", ".join(f"{k} {v / MiB:.2f} MiB" for k, v in parts.items())
        )
    for t in objs:
        log(f"{t.name}: verify (read all data)")
        r = res[t.name]["verify"] = t.verify()
        log(f"  {r['seconds']:.1f} s, cpu {r['cpu']:.1f} s{_phases(r)}")

    expected = digest(data)
    info["files"] = len(expected)
    one = pick_one_file(expected)
    info["one_file"] = one
    for t in objs:
        target = work / f"restore-{t.name}"
        log(f"{t.name}: full restore")
        r = res[t.name]["restore"] = t.restore(target)
        got = digest(t.restored_root(target))
        r["correct"] = got == expected
        if not r["correct"]:
            missing = sorted(set(expected) - set(got))[:3]
            wrong = sorted(k for k in expected if k in got and got[k] != expected[k])[:3]
            log(f"  RESTORE MISMATCH: missing {missing}, differing {wrong}")
        log(f"  {r['seconds']:.1f} s, cpu {r['cpu']:.1f} s, correct: {r['correct']}{_phases(r)}")
        shutil.rmtree(target)

    for t in objs:
        runs = []
        for i in range(ONE_FILE_REPEATS):
            target = work / f"one-{t.name}-{i}"
            r = t.restore_one(target, one)
            got = digest(t.restored_root(target))
            r["correct"] = got == {one: expected[one]}
            runs.append(r)
            shutil.rmtree(target)
        runs.sort(key=lambda r: r["seconds"])
        res[t.name]["one"] = runs[len(runs) // 2]
        res[t.name]["one"]["correct"] = all(r["correct"] for r in runs)
        one_r = res[t.name]["one"]
        log(f"{t.name}: one-file restore {one_r['seconds']:.3f} s{_phases(one_r)}")
    for t in objs:
        shutil.rmtree(t.repo)
    shutil.rmtree(data)
    return res, info


# --- figures, goals, report ----------------------------------------------------------------


# metric name -> (label, unit, how to compute from a tool's results and the round info,
# higher is better)
def metrics(r: dict, info: dict) -> dict[str, float]:
    return {
        "backup1_mbs": info["bytes_first"] / MiB / r["backup1"]["seconds"],
        "backup1_s": r["backup1"]["seconds"],
        "backup2_s": r["backup2"]["seconds"],
        "growth_mib": r["backup2"]["growth"] / MiB,
        "verify_s": r["verify"]["seconds"],
        "verify_mbs": info["bytes_second"] / MiB / r["verify"]["seconds"],
        "restore_s": r["restore"]["seconds"],
        "restore_mbs": info["bytes_second"] / MiB / r["restore"]["seconds"],
        "one_s": r["one"]["seconds"],
        "repo_mib": r["backup2"]["repo_bytes"] / MiB,
        "repo1_mib": r["backup1"]["repo_bytes"] / MiB,
        "rss_mib": max(r[k]["rss"] for k in ("backup1", "backup2", "verify", "restore", "one"))
        / MiB,
        "rss_backup1": r["backup1"]["rss"] / MiB,
        "rss_backup2": r["backup2"]["rss"] / MiB,
        "rss_verify": r["verify"]["rss"] / MiB,
        "rss_restore": r["restore"]["rss"] / MiB,
        "rss_one": r["one"]["rss"] / MiB,
        "cpu_backup1": r["backup1"]["cpu"],
        "cpu_backup2": r["backup2"]["cpu"],
        "cpu_verify": r["verify"]["cpu"],
        "cpu_restore": r["restore"]["cpu"],
        "cpu_one": r["one"]["cpu"],
        "correct": float(r["restore"]["correct"] and r["one"]["correct"]),
        # sctk only: open + find + restore as timed inside the child (no interpreter start)
        "one_inproc_s": sum(r["one"].get("engine", {}).get("phases", {}).values()),
    }


def median_metrics(rounds: list[tuple[dict, dict]], tool: str) -> dict[str, float]:
    per = [metrics(res[tool], info) for res, info in rounds]
    return {k: statistics.median(m[k] for m in per) for k in per[0]}


ROWS = [
    # key, label, format, higher is better
    ("backup1_mbs", "first backup, MB/s", "{:.1f}", True),
    ("backup2_s", "second backup, s", "{:.2f}", False),
    ("growth_mib", "repository growth, MiB", "{:.1f}", False),
    ("verify_s", "verify reading all data, s", "{:.2f}", False),
    ("restore_s", "full restore, s", "{:.2f}", False),
    ("restore_mbs", "full restore, MB/s", "{:.1f}", True),
    ("one_s", "one-file restore, s", "{:.3f}", False),
    ("repo_mib", "repository size, MiB", "{:.1f}", False),
    ("rss_mib", "peak memory, MiB", "{:.0f}", False),
]


def goals(m: dict[str, dict[str, float]]) -> list[tuple[str, str, bool]]:
    """(goal, measured, met) for each goal of issues 6 and 17 that the tools present allow."""
    if "sctk" not in m:
        return []
    s = m["sctk"]
    out = []
    if "restic" in m:
        r = m["restic"]
        x = s["backup1_mbs"] / r["backup1_mbs"]
        out.append(("first backup >= 1.5x restic", f"{x:.3f}x", x >= 1.5))
    if "borg" in m:
        x = s["backup1_mbs"] / m["borg"]["backup1_mbs"]
        out.append(("first backup >= 1.2x borg", f"{x:.3f}x", x >= 1.2))
    if "restic" in m:
        r = m["restic"]
        out.append(
            (
                "second backup no slower than restic",
                f"{s['backup2_s']:.2f} s vs {r['backup2_s']:.2f} s",
                s["backup2_s"] <= r["backup2_s"],
            )
        )
        out.append(
            (
                "growth <= restic's",
                f"{s['growth_mib']:.1f} vs {r['growth_mib']:.1f} MiB",
                s["growth_mib"] <= r["growth_mib"],
            )
        )
        x = r["verify_s"] / s["verify_s"]
        out.append(("verify --read-data >= 1.5x restic", f"{x:.3f}x", x >= 1.5))
        x = r["restore_s"] / s["restore_s"]
        out.append(("full restore >= 1.2x restic", f"{x:.3f}x", x >= 1.2))
    one = (
        f"{s['one_s']:.3f} s wall, {s['one_inproc_s']:.3f} s of it in open + restore "
        f"({s['cpu_one']:.2f} s CPU)"
    )
    if "borg" in m:
        b = m["borg"]["one_s"]
        out.append(("one-file restore <= borg's", f"{one}; borg {b:.3f} s", s["one_s"] <= b))
    else:
        out.append(("one-file restore < 0.5 s", one, s["one_s"] < 0.5))
    if "restic" in m:
        r = m["restic"]
        out.append(
            (
                "repository size <= restic's",
                f"{s['repo_mib']:.1f} vs {r['repo_mib']:.1f} MiB",
                s["repo_mib"] <= r["repo_mib"],
            )
        )
    out.append(("peak memory <= 120 MiB", f"{s['rss_mib']:.0f} MiB", s["rss_mib"] <= 120))
    out.append(("restores byte-identical", "SHA-256 of every file", s["correct"] == 1.0))
    return out


def ratio(key: str, higher: bool, a: float, b: float) -> str:
    """How many times better A is than B (>1: better), for the row's direction."""
    if a == 0 or b == 0:
        return "-"
    return f"{(a / b if higher else b / a):.2f}"


def table(m: dict[str, dict[str, float]], tools: list[str]) -> list[str]:
    peers = [t for t in ("restic", "borg") if t in tools and "sctk" in tools]
    head = "| | " + " | ".join([*tools, *(f"x {p}" for p in peers)]) + " |"
    lines = [head, "| --- |" + " ---: |" * (len(tools) + len(peers))]
    for key, label, fmt, higher in ROWS:
        cells = [fmt.format(m[t][key]) for t in tools]
        cells += [ratio(key, higher, m["sctk"][key], m[p][key]) for p in peers]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def detail_table(m: dict[str, dict[str, float]], tools: list[str]) -> list[str]:
    lines = [
        "| peak RSS MiB / CPU s | " + " | ".join(tools) + " |",
        "| --- |" + " ---: |" * len(tools),
    ]
    for step, label in (
        ("backup1", "first backup"),
        ("backup2", "second backup"),
        ("verify", "verify"),
        ("restore", "full restore"),
        ("one", "one-file restore"),
    ):
        cells = [f"{m[t]['rss_' + step]:.0f} / {m[t]['cpu_' + step]:.1f}" for t in tools]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def per_round(rounds: list[tuple[dict, dict]], tools: list[str]) -> list[str]:
    """The wall-time figures of each round, so the reader sees how much the load moved them."""
    if len(rounds) < 2:
        return []
    per = [{t: metrics(res[t], info) for t in tools} for res, info in rounds]
    lines = [
        "Each round (the table above is the median; the spread is the shared machine's load):",
        "",
        "| round | "
        + " | ".join(
            f"{t} {label}" for label in ("backup MB/s", "verify s", "restore s") for t in tools
        )
        + " |",
        "| --- |" + " ---: |" * (3 * len(tools)),
    ]
    for i, m in enumerate(per, 1):
        cells = [f"{m[t]['backup1_mbs']:.1f}" for t in tools]
        cells += [f"{m[t]['verify_s']:.1f}" for t in tools]
        cells += [f"{m[t]['restore_s']:.1f}" for t in tools]
        lines.append(f"| {i} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def dataset_sentence(info: dict, args) -> str:
    """What the data set of this run holds."""
    if info.get("description"):
        return (
            f"Data set (seed {args.seed}, scale {args.scale}): {info['files']} files, "
            f"{info['bytes_first'] / MiB:.0f} MiB, {info['description']}."
        )
    return (
        f"Data set (benchmarks/backup_dataset.py, seed {args.seed}, scale {args.scale}): "
        f"{info['files']} files, {info['bytes_first'] / MiB:.0f} MiB: a SQLite database of "
        f"{info['db_bytes'] / MiB:.0f} MiB with {info['db_rows']:,} rows, numeric arrays "
        "(.npy, some compressible, some random), CSV and JSON text, "
        f"{info['small_files']:,} small files."
    )


def report(
    m: dict[str, dict[str, float]],
    rounds: list[tuple[dict, dict]],
    tools: list[str],
    versions: dict[str, str],
    args: argparse.Namespace,
    loads: tuple[float, float],
    measured: str | None = None,
) -> str:
    info = rounds[0][1]
    now = f"{datetime.now(UTC):%Y-%m-%d %H:%M}"
    command = f"python benchmarks/bench_backup.py --scale {args.scale} --seed {args.seed}"
    if Shape.name != "reference":
        command += f" --shape {Shape.name}"
    if args.rounds != 1:
        command += f" --rounds {args.rounds}"
    phases = rounds[0][0].get("sctk", {})
    lines = [
        Shape.section,
        "",
        f"Measured {measured or now} UTC on {platform.machine()}, "
        f"{os.cpu_count()} CPUs shared with other work (load average {loads[0]:.1f} at the "
        f"start, {loads[1]:.1f} at the end), Python {platform.python_version()}; "
        f"{'; '.join(versions[t] for t in tools)}; command: `{command}`"
        + (f"; median of {len(rounds)} rounds." if len(rounds) > 1 else "."),
        "",
        dataset_sentence(info, args) + " Between the two backups `mutate` changes "
        f"{info['changes']['files_changed']} files, adds {info['changes']['files_added']}, "
        f"removes {info['changes']['files_removed']}, and in the database updates "
        f"{info['changes']['db_rows']['updated']:,} rows and inserts "
        f"{info['changes']['db_rows']['inserted']:,}. Each tool backs up the same directory "
        "(warm in the page cache for every tool alike: dropping the cache is not possible "
        "here), as a child process measured by GNU time (wall time, peak RSS, CPU). sctk is "
        "the `sctk.backup.repo` engine (`Repository`, `writer.add_tree`, `check(read_data="
        "True)`, `restore`) in a child Python process that imports nothing else (the sctk "
        "package byte-compiled first, as an installed package is); it stores each chunk "
        "zstd-compressed at level 3 or level 1, or raw, as trial compressions on each large "
        "file show (`sctk.backup.repo.compression`): raw where compression saves under 5% "
        "(the noise arrays here: 13 MiB more repository for about 0.4 s less CPU at a backup "
        "and 0.25 s at a restore or verify), level 1 where it is within 1% of level 3 (the "
        "CSV tables, even smaller); restic uses repository version 2 with "
        f"`--compression auto`; borg uses `-e repokey-blake2 --compression {Borg.compression}`."
        " Verify is `restic check --read-data`, `borg check --verify-data`, the engine's "
        "`check(read_data=True)`. Restores are checked file by file against the data set's "
        f"SHA-256 after the timing. The one-file restore (`{info['one_file']}`) is the "
        "median of three runs of the whole command (process start and key derivation "
        "included).",
        "",
        *table(m, tools),
        "",
        "'x restic' and 'x borg': how many times better sctk is (above 1: sctk is faster, "
        "smaller or lighter). Per step, peak resident memory and CPU seconds (user + system; "
        "above the wall time means more than one core at work):",
        "",
        *detail_table(m, tools),
        "",
        *per_round(rounds, tools),
        "Goals of issues 6 and 17:",
        "",
        "| goal | measured | met |",
        "| --- | --- | --- |",
    ]
    for goal, measured, met in goals(m):
        lines.append(f"| {goal} | {measured} | {'yes' if met else '**no**'} |")
    db = info.get("sctk_db") or {}
    rdb = info.get("restic_db") or {}
    if db:
        text = (
            f"Of sctk's growth, {db['new_stored'] / MiB:.1f} MiB are {db['new_chunks']} new "
            f"chunks of `{Shape.db}` (the engine cuts that file into {db['chunks']} chunks of "
            f"{db['avg_chunk'] / MiB:.2f} MiB on average"
        )
        if rdb:
            text += (
                f"; restic stores {rdb['new_stored'] / MiB:.1f} MiB in {rdb['new_chunks']} new "
                f"chunks, cutting it into {rdb['chunks']} chunks of "
                f"{rdb['avg_chunk'] / MiB:.2f} MiB"
            )
        text += (
            "). A page changed anywhere in the database costs its whole chunk, so the chunk "
            "size on that file decides most of the difference in growth."
        )
        lines += ["", text]
    if phases:
        b1 = phases["backup1"]["engine"]["phases"]
        lines += [
            "",
            "Inside the sctk child (first round): first backup "
            + ", ".join(f"{k} {v:.2f} s" for k, v in b1.items())
            + "; one-file restore "
            + ", ".join(f"{k} {v:.3f} s" for k, v in phases["one"]["engine"]["phases"].items())
            + " (the rest of the wall time is starting Python and importing).",
        ]
    lines += [
        "",
        "Two cores shared with other processes: ratios from the same run are meaningful, "
        "absolute figures move with the load.",
        "",
    ]
    return "\n".join(lines)


def save_json(path: Path, m, rounds, tools, versions, loads, args) -> None:
    """The run's figures (without the children's output), for --report-from."""
    raw = [
        {
            "info": info,
            "results": {
                t: {k: {kk: vv for kk, vv in v.items() if kk != "stdout"} for k, v in r.items()}
                for t, r in res.items()
            },
        }
        for res, info in rounds
    ]
    saved = {
        "metrics": m,
        "rounds": raw,
        "tools": tools,
        "versions": versions,
        "loads": loads,
        "measured": f"{datetime.now(UTC):%Y-%m-%d %H:%M}",
        "args": {
            "scale": args.scale,
            "seed": args.seed,
            "rounds": len(rounds),
            "borg_compression": Borg.compression,
            "shape": Shape.name,
        },
    }
    path.write_text(json.dumps(saved, indent=1, default=str))


def faults(args, dataset: Path, tools: list[str], versions: dict, log, loads0: float) -> int:
    """--faults: the fault table of backup_faults.py, printed and written to RESULTS.md."""
    import backup_faults  # benchmarks/, beside this script

    with tempfile.TemporaryDirectory(prefix="sctk-bench-faults-", dir=args.work) as tmp:
        out = backup_faults.run_faults(Path(tmp), dataset, tools, log, args.kill_after)
    loads = (loads0, os.getloadavg()[0])
    size = tree_bytes(dataset)
    files = sum(1 for p in dataset.rglob("*") if p.is_file())
    info = f"the {Shape.name} data set at scale {args.scale}, {files} files, {size / MiB:.0f} MiB"
    text = backup_faults.report(out, tools, args, loads, versions, info)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str))
    if not args.no_write:
        write_section(backup_faults.SECTION, text)
        print(f"wrote {RESULTS}")
    return 0


def use_shape(name: str) -> None:
    """Measure the data set NAME (see SHAPES)."""
    Shape.name = name
    Shape.script, Shape.section = SHAPES[name]
    if name == "lab":
        Shape.db, Shape.tables = "db/lab.sqlite", ("samples", "notes")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_engine":
        from sctk.backup.repo import RepoError

        try:
            engine_main(argv[1:])
        except RepoError as exc:  # what the engine says, for the fault table
            print(json.dumps({"ok": False, "error": str(exc)}))
            return 1
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scale",
        default=None,
        help="1.0 is about 1 GiB. Several, comma-separated (e.g. 1,4,16): the scale study "
        "instead (backup_scale.py: every step at each scale beside restic and borg, how each "
        "figure grows, a plot), in the RESULTS.md section 'Backup at scale'.",
    )
    parser.add_argument(
        "--small-files",
        type=int,
        default=0,
        metavar="N",
        help="The scale study on N files of 1 to 16 KB in a results tree (backup_dataset_"
        "small.py), after the --scale list when that has several values.",
    )
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument(
        "--shape",
        choices=sorted(SHAPES),
        default="reference",
        help="reference: backup_dataset.py (1 GiB at scale 1); lab: backup_dataset_lab.py "
        "(thousands of small files, arrays, a database, a few large files; 2 GiB at scale 1).",
    )
    parser.add_argument("--rounds", type=int, default=1, help="Report the median of N rounds.")
    parser.add_argument(
        "--faults",
        action="store_true",
        help="Build the fault table instead (killed backup, flipped bytes, full disk: see "
        "backup_faults.py), in its own RESULTS.md section.",
    )
    parser.add_argument(
        "--kill-after", type=float, default=1.0, help="--faults: kill the backup after S s."
    )
    parser.add_argument(
        "--tools", default=",".join(TOOLS), help="Comma-separated subset of sctk,restic,borg."
    )
    parser.add_argument(
        "--dataset",
        type=Path,
        default=None,
        help="Where the pristine data set is kept between runs "
        "(default: $TMPDIR/sctk-backup-dataset-s<scale>-seed<seed>).",
    )
    parser.add_argument("--work", type=Path, default=None, help="Scratch directory parent.")
    parser.add_argument("--borg-compression", default=Borg.compression)
    parser.add_argument(
        "--remote",
        choices=["s3"],
        default=None,
        help="Instead: first backup and full restore over the S3 API of a moto server, against "
        "restic on the same server (see bench_remote.py), in its own RESULTS.md section.",
    )
    parser.add_argument("--json", type=Path, default=None, help="Also write raw figures here.")
    parser.add_argument("--no-write", action="store_true", help=f"Do not update {RESULTS}.")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="Sample every sctk step with py-spy and print where the time goes "
        "(timings are perturbed: implies --no-write).",
    )
    parser.add_argument(
        "--report-from",
        type=Path,
        default=None,
        help="Write the RESULTS.md section from a run saved with --json (no measuring).",
    )
    args = parser.parse_args(argv)
    use_shape(args.shape)
    if args.work is not None:
        # made here rather than met as a traceback deep in a run (the scale study's mkdtemp)
        try:
            args.work.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            parser.error(f"--work {args.work} cannot be made: {exc.strerror}")
    try:
        scales = [float(v) for v in (args.scale or "1.0").split(",") if v.strip()]
    except ValueError:
        parser.error(f"--scale must be numbers separated by commas, not {args.scale!r}")
    if not scales or any(not 0 < v <= 64 for v in scales):
        parser.error("--scale values must be above 0 and at most 64")
    if args.small_files < 0:
        parser.error("--small-files must be a positive number of files")
    scale_study = len(scales) > 1 or args.small_files > 0
    # the study measures the scales named (none when only --small-files is given)
    study_scales = scales if args.scale is not None else []
    if scale_study and (args.faults or args.remote or args.profile or args.shape != "reference"):
        parser.error("several --scale values or --small-files run the scale study alone")
    args.scale = scales[0]
    if args.report_from:
        saved = json.loads(args.report_from.read_text())
        if "cases" in saved:  # a scale study
            import backup_scale  # benchmarks/, beside this script

            return backup_scale.finish(saved, args)
        Borg.compression = saved["args"]["borg_compression"]
        use_shape(saved["args"].get("shape", "reference"))
        rounds = [(r["results"], r["info"]) for r in saved["rounds"]]
        run_args = argparse.Namespace(**saved["args"])
        text = report(
            saved["metrics"],
            rounds,
            saved["tools"],
            saved["versions"],
            run_args,
            tuple(saved["loads"]),
            saved["measured"],
        )
        print(text)
        if not args.no_write:
            write_section(Shape.section, text)
            print(f"wrote {RESULTS}")
        return 0
    if args.profile:
        if shutil.which("py-spy") is None:
            parser.error("--profile needs py-spy: pip install py-spy")
        args.no_write = True
        Sctk.profile_dir = Path(tempfile.gettempdir()) / "sctk-bench-backup-profile"
        shutil.rmtree(Sctk.profile_dir, ignore_errors=True)
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    if not tools or any(t not in TOOLS for t in tools):
        parser.error("--tools must name some of sctk, restic, borg (comma-separated)")
    for t in tools:
        if t != "sctk" and shutil.which(t) is None:
            parser.error(
                f"{t} is not installed: apt-get install -y {t if t == 'restic' else 'borgbackup'}"
            )
    Borg.compression = args.borg_compression
    if scale_study:
        import backup_scale  # benchmarks/, beside this script

        versions = {t: TOOL_CLASSES[t].version() for t in tools}
        if "sctk" in tools:
            compile_sctk()

        def say(msg: str) -> None:
            print(f"[{datetime.now(UTC):%H:%M:%S}] {msg}", flush=True)

        return backup_scale.study(args, study_scales, tools, versions, say, sys.modules[__name__])
    suffix = "" if Shape.name == "reference" else f"-{Shape.name}"
    dataset = args.dataset or Path(tempfile.gettempdir()) / (
        f"sctk-backup-dataset{suffix}-s{args.scale:g}-seed{args.seed}"
    )
    ensure_dataset(dataset, args.scale, args.seed, Shape.script)
    versions = {t: TOOL_CLASSES[t].version() for t in tools}
    if "sctk" in tools:
        compile_sctk()

    def log(msg: str) -> None:
        print(f"[{datetime.now(UTC):%H:%M:%S}] {msg}", flush=True)

    loads0 = os.getloadavg()[0]
    if args.remote:
        from bench_remote import remote_main  # benchmarks/, beside this script

        return remote_main(args, dataset, tools, versions, log)
    if args.faults:
        return faults(args, dataset, tools, versions, log, loads0)
    rounds = []
    for i in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="sctk-bench-backup-", dir=args.work) as tmp:
            log(f"round {i + 1}/{args.rounds} in {tmp}")
            rounds.append(run_round(Path(tmp), dataset, tools, args.seed, log))
        loads = (loads0, os.getloadavg()[0])
        m = {t: median_metrics(rounds, t) for t in tools}
        if args.json:  # after every round, so an interrupted run keeps what it measured
            save_json(args.json, m, rounds, tools, versions, loads, args)
    print()
    print("\n".join(table(m, tools)))
    print()
    print("\n".join(detail_table(m, tools)))
    print()
    for goal, measured, met in goals(m):
        print(f"{'MET    ' if met else 'NOT MET'}  {goal}: {measured}")
    if args.profile and "sctk" in tools:
        for step, r in rounds[0][0]["sctk"].items():
            prof = r.get("profile") if isinstance(r, dict) else None
            if not prof:
                continue
            print(
                f"\nsctk {step}: {r['seconds']:.2f} s wall, {r['cpu']:.2f} s CPU, "
                f"{prof['samples']} busy samples at 250/s over all threads (waits left out)"
            )
            print("  self time by innermost frame:")
            for frame, share in prof["self"]:
                print(f"    {share:6.1%}  {frame}")
            print("  inclusive, engine functions:")
            for frame, share in prof["inclusive"]:
                print(f"    {share:6.1%}  {frame}")
        print(f"raw samples in {Sctk.profile_dir}")
        costs = dict(stage_costs(dataset))
        print(
            f"\nsingle-thread cost of each step on a {STAGE_SAMPLE // MiB} MiB sample "
            "(MB of raw data per CPU second):"
        )
        for name, value in costs.items():
            print(f"  {name:28} {value:8.2f}")

        def per_gib(*names: str) -> float:
            return sum(1024 / costs[n] for n in names)

        backup = per_gib(
            "FastCDC cut",
            "SHA-256 of the file",
            "keyed BLAKE3 chunk id",
            "zstd as the writer chooses",
            "AES-256-GCM encrypt",
        )
        read = per_gib("AES-256-GCM decrypt", "zstd decompress", "SHA-256 of the file")
        print(
            f"CPU floor per GiB: backup {backup:.1f} s (cut + hash + id + compress + encrypt), "
            f"verify/restore {read:.1f} s (decrypt + decompress + hash); "
            f"with {os.cpu_count()} cores at best {backup / (os.cpu_count() or 1):.1f} s and "
            f"{read / (os.cpu_count() or 1):.1f} s"
        )
    if not args.no_write:
        write_section(Shape.section, report(m, rounds, tools, versions, args, loads))
        print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
