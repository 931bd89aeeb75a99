"""A worker process for the multi-process tests.

    python -m tests.jobs.worker_proc HOME CONCURRENCY READY_FILE GO_FILE

Starts a Worker with the test kinds registered and its process pool warmed up, writes its
id to READY_FILE, waits for GO_FILE to exist (so that every worker starts claiming at the
same moment), runs until the queue is idle and prints its stats as JSON.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main() -> None:
    home, concurrency, ready, go = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
    import tests.jobs.kinds_for_tests  # noqa: F401 - registers the test kinds
    from sctk import config
    from sctk.jobs.worker import Worker

    settings = config.load(home).settings
    with Worker(settings, concurrency=concurrency) as worker:
        worker.executor.warm_up()
        ready.write_text(worker.id)
        deadline = time.monotonic() + 120
        while not Path(go).exists():
            if time.monotonic() > deadline:
                sys.exit("no go signal within 120 s")
            time.sleep(0.02)
        stats = worker.run_until_idle(timeout=240)
    print(json.dumps({"id": worker.id, **stats}))


if __name__ == "__main__":
    main()
