"""Where the backup engine's memory goes: one engine step, its peak RSS, and (--trace) the
Python allocation sites at the traced peak.

    python benchmarks/backup_memory_probe.py init REPO
    python benchmarks/backup_memory_probe.py backup REPO DATA [--trace]
    python benchmarks/backup_memory_probe.py check|prune REPO [--trace]
    python benchmarks/backup_memory_probe.py restore REPO TARGET [--trace]

Prints one JSON line: seconds, resident memory now, the highest sampled (with the phase it
was sampled in; and in each phase, whole and its anonymous part: a check's phases are its
own) and VmHWM, the highest sampled proportional set size of the process with its worker
processes, and the CPU time of descendants GNU time does not see; with --trace the top 15
allocation sites (tracemalloc) at the highest traced total. `prune` forgets the older half
of the snapshots. Run it under `/usr/bin/time -f '%e s %U u %S s %M KB'` for CPU time too
(see RESULTS.md, "Backup engine memory at scale").
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import sys
import threading
import time
import tracemalloc
from pathlib import Path

from tree_memory import descendants_cpu_s, tree_pss_kib  # benchmarks/tree_memory.py

PASSPHRASE = "correct horse battery staple, bench"
MiB = 1 << 20


def rss_mib(field: str = "VmRSS") -> int:
    """FIELD of /proc/self/status in MiB: VmRSS, or its anonymous part RssAnon (the rest is
    mapped files: the interpreter's and libraries' code, which pages in as it runs)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) // 1024
    return 0


def main(argv: list[str]) -> None:
    trace = "--trace" in argv
    op, repo_path, *rest = [a for a in argv if a != "--trace"]
    if trace:
        tracemalloc.start(6)
    from sctk.backup.repo import Repository

    phase = ["start"]
    best: dict = {"peak": 0, "snap": None, "when": ""}
    top = {"mib": 0, "phase": ""}
    by_phase: dict[str, int] = {}  # the highest RSS sampled in each phase
    anon_by_phase: dict[str, int] = {}  # ... and of its anonymous part
    tree = {"mib": 0, "phase": ""}  # with its worker processes
    ticks = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            now = rss_mib()
            if now > top["mib"]:
                top.update(mib=now, phase=phase[0])
            if now > by_phase.get(phase[0], 0):
                by_phase[phase[0]] = now
            anon = rss_mib("RssAnon")
            if anon > anon_by_phase.get(phase[0], 0):
                anon_by_phase[phase[0]] = anon
            ticks[0] += 1
            if ticks[0] % 5 == 0:  # every second: reading each process's map costs
                now = tree_pss_kib(os.getpid()) // 1024
                if now > tree["mib"]:
                    tree.update(mib=now, phase=phase[0])
            if trace:
                cur, _ = tracemalloc.get_traced_memory()
                if cur > best["peak"] * 1.05:
                    best.update(peak=cur, snap=tracemalloc.take_snapshot(), when=phase[0])
            stop.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    result: dict = {}  # what the step found (check: whether the repository is sound)
    if op == "init":
        Repository.init(repo_path, PASSPHRASE)
    else:
        repo = Repository.open(repo_path, PASSPHRASE)
        phase[0] = f"opened (rss {rss_mib()} MiB)"
        if op == "backup":
            with repo.writer() as w:
                phase[0] = "reading"
                w.add_tree(Path(rest[0]), collect=False)  # as bench_backup.py: no entries held
                phase[0] = "commit"
                w.commit("probe", {}, host="probe")
        elif op == "check":

            def heard(name: str, _done: int, _total: int | None) -> None:
                phase[0] = name

            result["ok"] = repo.check(read_data=True, phase=heard).ok
        elif op == "restore":
            target = Path(rest[0])
            shutil.rmtree(target, ignore_errors=True)
            repo.restore(repo.find_snapshot("latest").id, target)
        elif op == "prune":

            def half(snaps):
                cut = len(snaps) // 2
                return [(s, "newer half") for s in snaps[cut:]], snaps[:cut]

            repo.prune(None, plan=half)
        else:
            raise SystemExit(f"unknown step {op!r}: init, backup, check, restore or prune")
    stop.set()
    sampler.join()
    out = {
        "op": op,
        "seconds": round(time.perf_counter() - started, 2),
        "rss_now_mib": rss_mib(),
        "rss_top_sampled": top,
        "rss_top_by_phase": by_phase,
        "anon_top_by_phase": anon_by_phase,
        "vmhwm_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
        "tree_pss_top_sampled": tree,
        "descendants_cpu_s": descendants_cpu_s(os.getpid()),
        **result,
    }
    print(json.dumps(out))
    if trace and best["snap"] is not None:
        print(f"traced peak {best['peak'] / MiB:.1f} MiB during {best['when']}")
        for st in best["snap"].statistics("lineno")[:15]:
            print(f"  {st.size / MiB:.2f} MiB {st.count}  {st.traceback}")


if __name__ == "__main__":
    main(sys.argv[1:])
