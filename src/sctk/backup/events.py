"""Backup outcomes on the message bus: `backup.succeeded` and `backup.failed`.

Published once the run's record (and its audit entry) has committed, never before: a
subscriber (the notifier) that hears of a run can read it, and a rolled-back record is
never announced. Payload: {"operation": create|verify|prune|copy|restore, "run_id",
"snapshot_id", "repository", "reason" (failures), "message", "seconds"}.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sctk.runtime import Runtime

log = logging.getLogger(__name__)

SUCCEEDED = "backup.succeeded"
FAILED = "backup.failed"


def publish(rt: Runtime, succeeded: bool, payload: dict[str, Any]) -> None:
    """Publish one outcome on the runtime's bus (this process's bus for its database)."""
    try:
        rt.bus.publish(SUCCEEDED if succeeded else FAILED, payload)
    except Exception:  # the run and its audit entry are stored; readable there
        log.error("publishing a backup event on the bus failed", exc_info=True)
