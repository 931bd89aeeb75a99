"""Running an engine step in a child process that kills itself at a named crash point."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from sctk import crashpoints

SRC = Path(__file__).resolve().parents[3] / "src"


def killed_at(step: str, script: str, *args: str) -> None:
    """Run SCRIPT (python -c) with ARGS, to die of SIGKILL at crash point STEP."""
    env = {**os.environ, crashpoints.ENV: step, "PYTHONPATH": str(SRC)}
    r = subprocess.run(
        [sys.executable, "-c", script, *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == -signal.SIGKILL, f"{step} was not reached: {r.stderr[-2000:]}"
