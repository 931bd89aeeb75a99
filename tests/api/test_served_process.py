"""Served-process details: the log file handler (one JSON line per record, formatted once,
rotated by size), the warm-up, and torch's thread count per request thread."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

from sctk import logs


class _CountingFormatter(logs.JsonFormatter):
    calls = 0

    def format(self, record: logging.LogRecord) -> str:
        type(self).calls += 1
        return super().format(record)


def test_records_are_formatted_once_and_rotated_by_size(tmp_path):
    path = tmp_path / "sctk.log"
    handler = logs.LogFileHandler(path, maxBytes=2_000, backupCount=3, encoding="utf-8")
    handler.setFormatter(_CountingFormatter())
    log = logging.getLogger("sctk.test.rotation")
    log.propagate, log.level = False, logging.INFO
    log.addHandler(handler)
    try:
        for i in range(60):
            log.info("line %d", i, extra={"n": i})
    finally:
        log.removeHandler(handler)
        handler.close()
    assert _CountingFormatter.calls == 60
    files = [path, *(tmp_path / f"sctk.log.{k}" for k in (1, 2, 3))]
    assert all(f.exists() for f in files), "rotated into backups"
    assert all(f.stat().st_size < 2_000 for f in files)
    seen = [json.loads(line)["n"] for f in files for line in f.read_text().splitlines()]
    assert sorted(seen) == sorted(set(seen)) and max(seen) == 59  # no line written twice
    entry = json.loads(path.read_text().splitlines()[-1])
    assert entry["message"] == "line 59" and entry["time"].endswith("+00:00")


def test_warm_up_freezes_the_served_process():
    # in a process of its own: gc.freeze() is process-wide
    code = (
        "import gc, sys; from sctk.api.warmup import warm_up; warm_up(); "
        "import torch; assert torch.get_num_threads() == 1; "
        "assert 'torch' in sys.modules and gc.get_freeze_count() > 100_000, gc.get_freeze_count()"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_each_request_thread_runs_torch_on_one_thread():
    # OpenMP keeps the setting per thread: one made in another thread does not hold here
    code = (
        "import threading, torch; from sctk.api.routes.models import _one_torch_thread; "
        "_one_torch_thread(); seen = []; "
        "t = threading.Thread(target=lambda: (_one_torch_thread(), "
        "seen.append(torch.get_num_threads()))); t.start(); t.join(); "
        "assert seen == [1], seen"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
