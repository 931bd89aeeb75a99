"""Engines a process builds: a served app (one worker loop, the collector and the scheduler)
over 40 requests, and three commands run in-process, on a fresh SQLite data directory.

Engines are counted by wrapping `create_engine` as `sctk.storage.engine` calls it, so the
same script measures a tree from before the runtime (issue 21) and after it:

    PYTHONPATH=OTHER_TREE/src python benchmarks/engines_built.py
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import sctk.storage.engine as storage_engine

built: list[int] = []
_create = storage_engine.create_engine


def _counting(*args, **kwargs):
    built.append(1)
    return _create(*args, **kwargs)


def main() -> None:
    storage_engine.create_engine = _counting  # every SQLite engine passes through here
    from fastapi.testclient import TestClient

    from sctk import config
    from sctk.api.app import create_app
    from sctk.cli import main as sctk
    from sctk.ops.init_home import init_home

    home = Path(tempfile.mkdtemp()) / "home"
    os.environ["SCTK_HOME"] = str(home)
    init_home(home)
    settings = config.load(home).settings
    for args in (["health", "--json"], ["jobs", "submit", "noop"], ["maintenance", "run", "tmp"]):
        before = len(built)
        with contextlib.suppress(SystemExit):
            sctk(["--home", str(home), *args])
        print(f"sctk {' '.join(args)}: {len(built) - before} engine(s) built")
    before = len(built)
    app = create_app(settings, workers=1, collect=True, schedule=True)
    with TestClient(app) as client:
        for _ in range(20):
            client.get("/health/ready")
            client.post("/api/v1/auth/token", json={"username": "x", "password": "y"})
    print(f"served app, 40 requests: {len(built) - before} engine(s) built")


if __name__ == "__main__":
    main()
