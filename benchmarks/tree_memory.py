"""The memory of a process together with its worker processes (Linux /proc).

sctk's backup seals small files in worker processes, so the peak resident set of one
process (GNU time's %M, VmHWM) no longer shows what a backup takes. The measure here is the
proportional set size (PSS) summed over the process and its descendants: each page shared
between them (the interpreter, the libraries) is divided among the processes that map it,
so the sum counts it once, as the kernel does.
"""

from __future__ import annotations

from pathlib import Path


def descendants(pid: int) -> list[int]:
    """PID's live child processes and theirs."""
    out: list[int] = []
    try:
        kids = [
            int(c)
            for t in Path(f"/proc/{pid}/task").iterdir()
            for c in (t / "children").read_text().split()
        ]
    except OSError:
        return out
    for kid in kids:
        out += [kid, *descendants(kid)]
    return out


def tree_pss_kib(pid: int, own: bool = True) -> int:
    """PSS of PID (unless not OWN) and its descendants together, in KiB (0 once they have
    exited)."""
    total = 0
    for p in [pid, *descendants(pid)] if own else descendants(pid):
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass  # exited since it was listed
    return total


def descendants_cpu_s(pid: int) -> float:
    """CPU seconds of PID's live descendants, with those they reaped: GNU time counts only
    the processes it waits for, through the one it ran."""
    import os

    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in descendants(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
    return round(total / tick, 2)
