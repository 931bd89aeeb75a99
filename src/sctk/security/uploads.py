"""Names and sizes of uploaded files: what a client sends is never used as a path as-is."""

from __future__ import annotations

import re
import unicodedata

from sctk.errors import SctkError

MAX_NAME = 120
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
# Names Windows refuses, which a data directory copied to such a machine would trip over
_RESERVED = {
    "con",
    "prn",
    "aux",
    "nul",
    *(f"com{i}" for i in range(1, 10)),
    *(f"lpt{i}" for i in range(1, 10)),
}


def sanitise_filename(name: str) -> str:
    """A safe base name for a client-supplied file name, keeping its extension.

    Directory parts are dropped (both / and \\), accents folded to ASCII, anything else
    outside [A-Za-z0-9._-] becomes '_', leading dots are removed (no hidden files, no '..').
    """
    base = re.split(r"[\\/]", name)[-1]
    base = unicodedata.normalize("NFKD", base).encode("ascii", "ignore").decode("ascii")
    base = _UNSAFE.sub("_", base).strip("._ ")
    if len(base) > MAX_NAME:
        stem, dot, ext = base.rpartition(".")
        if dot and 0 < len(ext) <= 16:
            base = stem[: MAX_NAME - len(ext) - 1] + "." + ext
        else:
            base = base[:MAX_NAME]
    if not base or base.split(".")[0].lower() in _RESERVED:
        raise SctkError(
            f"The file name {name[:80]!r} has no usable characters; rename the file using "
            "letters, digits, '.', '_' or '-'."
        )
    return base


def check_size(size: int, limit: int, what: str = "The upload") -> None:
    if size > limit:
        raise SctkError(f"{what} is {size} bytes, over the limit of {limit} bytes.")
