"""What the backup engine's worker processes cost in memory (RESULTS.md, "Verify workers
trimmed").

    python benchmarks/worker_memory.py imports
    python benchmarks/worker_memory.py verify REPO auto|on|off

`imports`: each worker entry module started as a worker starts (`python -I`), its private
memory (pages no other process maps: what each more worker adds) and its anonymous memory
once imported (compare the anonymous figure: a library's pages count as private when no
other process maps them, so the private one moves with what else runs), beside an
interpreter that imports only the libraries the work needs
(zstandard, cryptography's AES-GCM, hashlib) and beside a bare interpreter. (Its PSS
depends on which other processes map the same libraries at that moment.)

`verify`: `check(read_data=True, processes=...)` of REPO (a repository made with
backup_memory_probe.py's passphrase), the PSS of this process and of its worker processes
sampled every 20 ms (backup_memory_probe.py samples the tree once a second: too coarse
for a verify of a few seconds). One JSON line: seconds, the highest tree total, this
process's and the workers' highest, the highest one worker reached. An A/B of two source
trees: run it with PYTHONPATH set to each tree's src in turn.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

from backup_memory_probe import PASSPHRASE  # benchmarks/, beside this script
from tree_memory import descendants

LIBS = (
    "import hashlib, zstandard; from cryptography.hazmat.primitives.ciphers.aead import AESGCM; "
    "from cryptography.exceptions import InvalidTag"
)
ENTRIES = ("sctk.backup.repo.checkprocs", "sctk.backup.repo.batchseal")


def _rollup(pid: int) -> dict[str, int]:
    """KiB figures of /proc/PID/smaps_rollup (empty once the process is gone)."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                key, *rest = line.split()
                if key.endswith(":") and rest and rest[0].isdigit():
                    out[key[:-1]] = int(rest[0])
    except OSError:
        pass
    return out


def _held(code: str) -> dict[str, int]:
    """Private and anonymous memory (KiB) of `python -I -c CODE` once it has run, the lower
    of two starts."""
    got = []
    for _ in range(2):
        proc = subprocess.Popen(
            [sys.executable, "-I", "-c", f"{code}; import sys; sys.stdin.read()"],
            stdin=subprocess.PIPE,
        )
        time.sleep(1.0)
        roll = _rollup(proc.pid)
        proc.stdin.close()
        if proc.wait() != 0 or not roll:
            raise SystemExit(f"`python -I -c {code!r}` did not start (see its error above).")
        got.append((roll["Private_Clean"] + roll["Private_Dirty"], roll["Pss_Anon"]))
    private, anon = min(got)
    return {"private_kib": private, "anon_kib": anon}


def imports() -> None:
    path = f"import sys; sys.path[:0] = {[p for p in sys.path if p]!r}"
    rows = {"bare interpreter": _held("pass"), "libraries only": _held(LIBS)}
    for entry in ENTRIES:
        rows[entry] = _held(f"{path}; import {entry}")
    for name, row in rows.items():
        print(json.dumps({"worker": name, **row}))


def _pss_mib(pid: int) -> int:
    return _rollup(pid).get("Pss", 0) // 1024


def verify(repo_path: str, mode: str) -> None:
    from sctk.backup.repo import RepoError, Repository

    processes = {"auto": None, "on": True, "off": False}[mode]
    me = os.getpid()
    top = {"tree": 0, "own": 0, "workers": 0, "one_worker": 0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.02):
            own = _pss_mib(me)
            workers = [_pss_mib(k) for k in descendants(me)]
            now = {
                "tree": own + sum(workers),
                "own": own,
                "workers": sum(workers),
                "one_worker": max(workers, default=0),
            }
            for key, value in now.items():
                top[key] = max(top[key], value)

    try:
        repo = Repository.open(repo_path, PASSPHRASE)
    except RepoError as exc:  # not a repository, or not one made with the probe's passphrase
        raise SystemExit(str(exc)) from None
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    ok = repo.check(read_data=True, processes=processes).ok
    seconds = time.perf_counter() - started
    stop.set()
    sampler.join()
    print(json.dumps({"mode": mode, "seconds": round(seconds, 2), "ok": ok, "peak_mib": top}))


def main(argv: list[str]) -> None:
    if argv[:1] == ["imports"]:
        imports()
    elif argv[:1] == ["verify"] and len(argv) == 3 and argv[2] in ("auto", "on", "off"):
        verify(argv[1], argv[2])
    else:
        raise SystemExit(__doc__.split("\n\n")[1])


if __name__ == "__main__":
    main(sys.argv[1:])
