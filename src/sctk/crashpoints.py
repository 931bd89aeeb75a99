"""Crash points: named steps of long procedures (upgrade, key rotation, training, imports) at
which a test can have the process killed with SIGKILL, from the step itself rather than from a
timer, to show that every step leaves the home consistent and a rerun completes.

A step calls `reached("upgrade.migrated")`; when the environment variable SCTK_CRASH_AT names
that step, the process kills itself there. Unset (always, outside tests) it does nothing.
"""

from __future__ import annotations

import os
import signal

ENV = "SCTK_CRASH_AT"


def reached(step: str) -> None:
    """Die of SIGKILL here when SCTK_CRASH_AT names STEP (a test hook; a no-op otherwise)."""
    if os.environ.get(ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)
