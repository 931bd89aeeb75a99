"""How well a verify keeps its verifier threads busy, measured inside the process so that
other load on the machine does not enter: the mean number of file groups in progress during
the file phase of `check --read-data`, and the share of that phase with at most one.

    python benchmarks/verify_concurrency.py REPO [PASSPHRASE]

(REPO made by backup_memory_probe.py, whose passphrase is the default.) See RESULTS.md,
"Backup index on disk (branch idx26)".
"""

from __future__ import annotations

import sys
import threading
import time

PASSPHRASE = "correct horse battery staple, bench"


def main(argv: list[str]) -> None:
    import sctk.backup.repo.check as check
    from sctk.backup.repo import Repository

    spans: list[tuple[float, float]] = []
    lock = threading.Lock()
    verify = check._verify_versions

    def timed(*args, **kw):
        start = time.perf_counter()
        try:
            return verify(*args, **kw)
        finally:
            with lock:
                spans.append((start, time.perf_counter()))

    check._verify_versions = timed
    repo = Repository.open(argv[0], argv[1] if len(argv) > 1 else PASSPHRASE)
    cpu, wall = time.process_time(), time.perf_counter()
    report = repo.check(read_data=True)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    first, last = min(s for s, _ in spans), max(e for _, e in spans)
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    running, at, lonely = 0, first, 0.0
    for t, step in events:
        if running <= 1:
            lonely += t - at
        running += step
        at = t
    phase = last - first
    print(
        f"ok={report.ok} groups={len(spans)} file phase {phase:.2f} s, "
        f"mean groups in progress {sum(e - s for s, e in spans) / phase:.2f}, "
        f"at most one in progress {lonely / phase:.0%}; whole check {wall:.1f} s, {cpu:.1f} CPU s"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
