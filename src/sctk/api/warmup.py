"""Ready a served API process for steady load before it answers its first request."""

from __future__ import annotations

import gc
import logging
import time

log = logging.getLogger(__name__)


def warm_up() -> None:
    """Import what predictions need and freeze the garbage collector's view of the process.

    Importing torch and the UQ engine here, rather than on the first prediction, moves that
    cost (1-3 s) from a client's request to the process's start. Then `gc.freeze()` moves
    every object alive at that point (about 300,000: torch, pandas, SQLAlchemy, FastAPI) out
    of the collector's reach: a full collection no longer walks them all, which took over
    100 ms and, triggered every few dozen requests by their allocations, was the tail of
    the API's latency.
    """
    started = time.perf_counter()
    import torch

    from sctk.uq import field_hybrid, hybrid, registry  # noqa: F401

    torch.set_num_threads(1)  # as each request thread does (routes/models.py)
    gc.collect()
    gc.freeze()
    log.info(
        "warmed up in %.1f s; %d objects frozen",
        time.perf_counter() - started,
        gc.get_freeze_count(),
    )
