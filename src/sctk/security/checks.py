"""Health checks of the security parts: the keyring is present, private and not mid-rotation."""

from __future__ import annotations

import stat

from sctk.errors import SctkError
from sctk.health.registry import CheckContext, CheckOutcome, Status, check
from sctk.security.keyring import Keyring, ring_path


@check("keyring", "The encryption keyring loads, is private (0600) and is not mid-rotation.")
def keyring(ctx: CheckContext) -> CheckOutcome:
    home = ctx.settings.home
    path = ring_path(home)
    if not path.exists():
        return CheckOutcome("keyring", Status.CRITICAL, f"{path} is missing; run 'sctk init'")
    try:
        ring = Keyring.load(home)
    except SctkError as exc:
        return CheckOutcome("keyring", Status.CRITICAL, exc.message)
    mode = stat.S_IMODE(path.stat().st_mode)
    values = {"keys": len(ring.keys), "current_key": ring.current_id, "mode": oct(mode)[2:]}
    if mode & 0o077:
        return CheckOutcome(
            "keyring",
            Status.WARNING,
            f"{path} is readable by others (mode {oct(mode)[2:]})",
            values,
        )
    if ring.rotation is not None:
        return CheckOutcome(
            "keyring",
            Status.WARNING,
            "a key rotation was interrupted; run 'sctk keys rotate' to finish it",
            values,
        )
    return CheckOutcome(
        "keyring", Status.OK, f"{len(ring.keys)} key(s), current {ring.current_id}", values
    )
