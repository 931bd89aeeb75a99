"""Crash points: named steps of long procedures (upgrade, key rotation, training, imports) at
which a test can have the process killed with SIGKILL, from the step itself rather than from a
timer, to show that every step leaves the home consistent and a rerun completes.

A step calls `reached("upgrade.migrated")`; when the environment variable SCTK_CRASH_AT names
that step, the process kills itself there. When SCTK_PAUSE_AT names it instead, the process
writes its pid to the file SCTK_PAUSED_FILE names and waits there for a signal, so that a test
can act while the procedure is held midway (a second process trying the same thing) and then
kill it. Unset (always, outside tests) both do nothing.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

ENV = "SCTK_CRASH_AT"
PAUSE_ENV = "SCTK_PAUSE_AT"
PAUSED_FILE_ENV = "SCTK_PAUSED_FILE"


def reached(step: str) -> None:
    """Die of SIGKILL here when SCTK_CRASH_AT names STEP, or wait here when SCTK_PAUSE_AT
    does (test hooks; a no-op otherwise)."""
    if os.environ.get(ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get(PAUSE_ENV) == step:
        Path(os.environ[PAUSED_FILE_ENV]).write_text(str(os.getpid()))
        while True:
            signal.pause()
