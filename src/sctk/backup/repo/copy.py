"""Off-site copies: mirror the repository's files into another location.

The copy is the same repository (same config, same key: the same passphrase opens it). Files
the destination lacks are copied config first, then packs, index files, snapshots and
verification markers, so an interrupted copy is still a valid repository (at worst with
unindexed packs). Each copied file is read back and its size and SHA-256 compared. Nothing
is ever deleted in the destination; prune it separately.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable

from sctk.backup.repo.backend import open_backend
from sctk.backup.repo.errors import RepoError
from sctk.backup.repo.models import CopyReport


def copy_to(repo, dest_url: str, progress: Callable[[int], None] | None = None) -> CopyReport:
    started = time.perf_counter()
    dest = open_backend(dest_url)
    if dest_url == repo.url:
        raise RepoError("The copy destination is the repository itself; give another location.")
    state = dest.probe()
    config = repo.backend.read("config")
    copied = skipped = nbytes = 0

    def put(name: str, data: bytes) -> None:
        nonlocal copied, nbytes
        dest.write(name, data)
        try:
            back = dest.read(name)
        except FileNotFoundError:
            back = b""
        if len(back) != len(data) or hashlib.sha256(back).digest() != hashlib.sha256(data).digest():
            raise RepoError(
                f"Copying {name} to {dest_url} did not verify (size or SHA-256 differ after "
                "transfer); check the destination storage and copy again."
            )
        copied += 1
        nbytes += len(data)
        if progress is not None:
            progress(nbytes)

    if state == "present" and dest.size("config") is not None:
        try:
            theirs = json.loads(dest.read("config"))
        except ValueError:
            theirs = {}
        if theirs.get("id") != repo.config["id"]:
            raise RepoError(
                f"{dest_url} holds a different backup repository; copy into an empty location "
                "or a copy of this repository."
            )
        skipped += 1
    elif state == "present":
        raise RepoError(
            f"{dest_url} is a non-empty location that is not a backup repository; "
            "choose an empty or new location."
        )
    else:
        dest.mkdir_root()
        put("config", config)

    with repo.lock(exclusive=False):
        for folder in ("data", "index", "snapshots", "verified"):
            theirs = dest.list(folder)
            for name, size in sorted(repo.backend.list(folder).items()):
                if theirs.get(name) == size:
                    skipped += 1
                    continue
                try:
                    data = repo.backend.read(name)
                except FileNotFoundError:
                    continue  # removed by a prune since we listed
                # Content-named files must match their name before they are spread further.
                if hashlib.sha256(data).hexdigest() != name.rpartition("/")[2]:
                    raise RepoError(
                        f"{name} in {repo.url} is damaged (content does not match its name); "
                        "run check before copying."
                    )
                put(name, data)
    return CopyReport(
        files_copied=copied,
        bytes_copied=nbytes,
        files_skipped=skipped,
        seconds=round(time.perf_counter() - started, 3),
    )
