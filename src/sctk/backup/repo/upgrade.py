"""Upgrading a repository from format version 1 to 2 (snapshot file lists in pieces).

Version 1 stays readable and writable as it is (a backup into it writes version-1 snapshot
files, which sctk before version 2 reads); `upgrade` moves it to version 2, after which older
sctk refuses the repository with a clear sentence instead of misreading it. Order, so that a
kill at any point leaves a consistent repository and the rerun finishes (tests kill it at
each step, see the crashpoints.reached calls):
  1. the config says version 2 (older sctk now refuses the repository; this one reads both
     snapshot formats, so nothing is unreadable in between);
  2. for each version-1 snapshot file: a version-2 copy is written, its header naming the
     file it replaces ("replaces"); a listing shows the copy only from then on;
  3. the verification markers of the old id are written again for the new one (same time
     and report), then the old markers are deleted;
  4. the old snapshot file is deleted.
A rerun finds the copies already written by their "replaces" and does steps 3 and 4 only.
Chunks, packs and the index are untouched: only snapshot files are rewritten.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from sctk import crashpoints
from sctk.backup.repo.errors import RepoError
from sctk.backup.repo.filelist import FileListSink
from sctk.backup.repo.formats import AAD_VERIFIED, VERSION, content_id, open_json, seal_json
from sctk.backup.repo.phases import PhaseReport, Phases


@dataclass
class UpgradeReport:
    from_version: int
    to_version: int
    converted: dict[str, str] = field(default_factory=dict)  # old snapshot id -> new id
    unreadable: dict[str, str] = field(default_factory=dict)  # left as they are: id -> why


def _convert(repo, snap_id: str, header: dict) -> str:
    """Write the version-2 copy of a version-1 snapshot; its id."""
    sink = FileListSink(repo.backend, repo.keys)
    try:
        for f in repo.snapshot_files(snap_id):
            sink.add(f)
        pieces = sink.finish()
        kept = {k: v for k, v in header.items() if k not in ("format", "version", "files")}
        return pieces.commit({**kept, "files": sink.count, "replaces": snap_id})
    finally:
        sink.discard()


def _move_markers(repo, old: str, new: str) -> None:
    """The verification markers of snapshot OLD written again for NEW, then deleted."""
    markers = {}
    for name in repo.backend.list("verified"):
        try:
            markers[name] = open_json(repo.keys, repo.backend.read(name), AAD_VERIFIED, name)
        except (RepoError, FileNotFoundError):
            continue
    have = {(d["snapshot"], d["time"]) for d in markers.values()}
    for name, doc in markers.items():
        if doc["snapshot"] != old:
            continue
        if (new, doc["time"]) not in have:  # not moved already by a killed run
            blob = seal_json(repo.keys, {**doc, "snapshot": new}, AAD_VERIFIED)
            repo.backend.write(f"verified/{content_id(blob)}", blob)
        crashpoints.reached("backup.upgrade.marker-written")
        repo.backend.delete(name)


def upgrade(repo, phase: PhaseReport | None = None) -> UpgradeReport:
    phases = Phases(phase)
    with repo.lock(exclusive=True):
        report = UpgradeReport(from_version=repo.version, to_version=VERSION)
        if repo.version < VERSION:
            config = {**repo.config, "version": VERSION}
            repo.backend.write("config", json.dumps(config, indent=1).encode())
            repo.config = config
            crashpoints.reached("backup.upgrade.config")
        headers: dict[str, dict] = {}
        for snap_id, size in sorted(repo.snapshot_sizes().items()):
            try:
                headers[snap_id] = repo.snapshot_header(snap_id, size)
            except RepoError as exc:
                report.unreadable[snap_id] = str(exc)
        copies = {h["replaces"]: i for i, h in headers.items() if h.get("replaces")}
        old = [i for i, h in headers.items() if h["format"] == 1]
        phases.start("converting", len(old))
        for snap_id in old:
            new = copies.get(snap_id)
            if new is None:
                try:
                    new = _convert(repo, snap_id, headers[snap_id])
                except RepoError as exc:  # a damaged list: left as it is, and named
                    report.unreadable[snap_id] = str(exc)
                    continue
                crashpoints.reached("backup.upgrade.converted")
            _move_markers(repo, snap_id, new)
            repo.backend.delete(f"snapshots/{snap_id}")
            repo.forget_cached(snap_id)
            crashpoints.reached("backup.upgrade.old-deleted")
            report.converted[snap_id] = new
            phases.step()
        phases.end()
        return report
