"""Restoring a snapshot into a data directory: full or partial, staged, then swapped atomically.

The order of a restore, and why:

1. Everything a user can get wrong is checked first (snapshot, parts, target, database), and a
   service running on the target is refused: nothing has changed when one of these fails.
2. A safety backup of the target is taken (label pre-update), so even a restore of the wrong
   snapshot can be undone.
3. The snapshot's files are written into <target>/tmp/restore/staging. tmp/ is inside the
   target, so it is on the same file system (renames are atomic), needs no permission beyond
   the target's own, and is never backed up. The engine checks every file's SHA-256 while
   writing, so damaged data stops the restore here, before the target is touched. Into a
   fresh --target (no sctk data directory there, so nothing to lose) the restore is partial
   instead: every intact file is restored, and the damaged ones are named (a non-zero exit).
4. The swap, per top-level item (sctk.toml, keys/, data/, ..., sctk.db): rename the old item
   to tmp/restore/old, rename the staged one in. A journal (tmp/restore/journal.json) says
   which phase is running; from the journal and which of old/, staging/ and the target hold
   each item, a rerun can always tell how far the swap got. A restore killed while staging
   is rolled back (the target was never touched); one killed while swapping is rolled
   forward (every staged item was verified complete before the first rename).
5. PostgreSQL is loaded by psql inside one transaction (dbload.load_postgres) right before
   the file swap, into the configured database. We do not restore into a new database and
   rename it over the old one: that needs CREATEDB, a maintenance connection, no other
   session on either database and two renames that must both happen; and it changes the
   database's owner and grants. A single transaction gets the same all-or-nothing from the
   server itself (a killed psql or sctk rolls back), with only the rights the service
   already has. The journal keeps the transaction id, so a rerun asks the server whether
   that load committed (then the files are rolled forward) or not (then rolled back).
6. Old items are deleted, stale SQLite -wal/-shm files went aside with the old database, an
   older schema is migrated, the health checks run, and the audit log and the bus are told.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from sctk import config, crashpoints
from sctk.backup import dbload, kinds
from sctk.backup.manifest import CONFIG_FILE, DATA_DIRS, DB_FILES, KEYS_DIR, PARTS, part_of
from sctk.config import Settings
from sctk.errors import Conflict, SctkError
from sctk.fsutil import atomic_write, fsync_dir
from sctk.storage.layout import SUBDIRS, is_data_dir

if TYPE_CHECKING:
    from sctk.runtime import Runtime

log = logging.getLogger(__name__)

WORK_DIR = Path("tmp") / "restore"
JOURNAL = "journal.json"
SQLITE_SIDE_FILES = ("sctk.db-wal", "sctk.db-shm", "sctk.db-journal")
SAFETY_LABEL = "pre-update"


def parse_parts(only: list[str] | None) -> list[str]:
    """The parts to restore (all when ONLY is empty); an unknown name is one sentence."""
    if not only:
        return list(PARTS)
    names: list[str] = []
    for raw in only:
        for name in (n.strip().lower() for n in raw.split(",")):
            if name not in PARTS:
                raise SctkError(
                    f"Unknown part '{name}' for --only; choose from {', '.join(PARTS)}."
                )
            if name not in names:
                names.append(name)
    return names


def check_writable(path: Path, what: str = "--target") -> None:
    """PATH (or the directory that would hold it) accepts new files; a real probe, since
    root passes every permission test os.access can make."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise SctkError(
            f"{path} cannot be used: {probe} is not a directory; choose another {what}."
        )
    try:
        fd, tmp = tempfile.mkstemp(prefix=".sctk-write-test-", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise SctkError(
            f"{path} is not writable ({exc.strerror}); choose a writable {what} or fix its "
            "permissions."
        ) from None


# ------------------------------------------------------------------------------ listing


def list_files(repo, ref: str, include_safety: bool = False) -> tuple[Any, list[dict[str, Any]]]:
    """A snapshot and its files: path, size, part, mode, sha256."""
    info = kinds.find(repo, ref, include_safety)
    rows = [
        {
            "path": f.path,
            "size": f.size,
            "part": _part(f.path),
            "mode": oct(f.mode),
            "sha256": f.sha256,
        }
        for f in repo.files(info.id)
    ]
    return info, rows


def _part(path: str) -> str:
    try:
        return part_of(path)
    except ValueError:
        return "other"


def extract_file(
    repo, ref: str, path: str, dest_dir: Path, force: bool = False, include_safety: bool = False
) -> Path:
    """Write one file of a snapshot into DEST_DIR (its base name); reads only that file's
    chunks. The file appears complete and authenticated, or not at all."""
    info = kinds.find(repo, ref, include_safety)
    path = path.strip().lstrip("/")
    dest = dest_dir / PurePosixPath(path).name
    if dest.exists() and not force:
        raise Conflict(
            f"{dest} already exists; pass --force to overwrite it or choose another --target."
        )
    check_writable(dest_dir)
    # the first chunk is read before anything is created: an unknown path changes nothing
    chunks = iter(repo.read_file(info.id, path))
    first = next(chunks, b"")
    dest_dir.mkdir(parents=True, exist_ok=True)
    dbload.write_file(itertools.chain([first], chunks), dest, mode=0o600)
    return dest


# ------------------------------------------------------------------------------ planning


@dataclass
class Item:
    """A top-level entry of the data directory the restore replaces."""

    name: str
    part: str
    staged: bool  # False: only moved aside (stale SQLite side files)
    action: str = ""  # replace | create | remove | keep
    files: int = 0
    bytes: int = 0


@dataclass
class Plan:
    snapshot: str
    label: str
    created_at: str
    target: Path
    parts: list[str]
    backend: str
    fresh: bool
    items: list[Item]
    database: str | None  # where a PostgreSQL dump is loaded (no password)
    database_url: str | None = field(default=None, repr=False)
    running_pid: int | None = None
    interrupted: bool = False  # an earlier restore's journal is there: it is settled first
    pending_snapshot: str | None = None  # the snapshot that interrupted restore was restoring
    safety_backup: bool = False
    schema_revision: str = ""
    migrate: bool = False
    files: int = 0
    bytes: int = 0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("database_url")
        data["target"] = str(self.target)
        return data


def _target_settings(settings: Settings, target: Path, database_url: str | None) -> Settings | None:
    overrides = {"database_url": database_url} if database_url else None
    if target.resolve() == settings.home.resolve() and not database_url:
        return settings if is_data_dir(target) else None
    if is_data_dir(target):
        return config.load(target, overrides).settings
    return None


@contextmanager
def _runtime_of(rt: Runtime, settings: Settings) -> Iterator[Runtime]:
    """The runtime that writes to the database of SETTINGS (the target's, from
    `_target_settings`). The data directory restored in place is RT's own: RT, released
    first, since the restore may have replaced the database under its pooled connections.
    A --target or --database-url restore writes a database this process does not serve:
    a runtime of its own, hence an engine of its own, closed when the block ends."""
    if settings is rt.settings:
        rt.release()
        yield rt
        return
    from sctk.runtime import Runtime

    with Runtime(settings) as own:
        yield own


def make_plan(
    settings: Settings,
    repo,
    ref: str,
    parts: list[str],
    target: Path | None = None,
    database_url: str | None = None,
    explicit_parts: bool = False,
    force: bool = False,
    include_safety: bool = False,
) -> Plan:
    """Check everything and say what a restore would do; changes nothing. 'latest' is the
    newest regular snapshot (any kind with INCLUDE_SAFETY), or, when an interrupted restore
    left its journal on TARGET, the snapshot that restore was restoring."""
    from sctk import runstate
    from sctk.storage.migrate import head

    target = (target or settings.home).expanduser().absolute()
    check_writable(target)
    if target.exists() and not target.is_dir():
        raise SctkError(f"{target} is a file, not a directory; choose another --target.")
    pending = pending_snapshot(target)
    info = repo.find_snapshot(pending) if pending and _is_latest(ref) else None
    info = info or kinds.find(repo, ref, include_safety)
    manifest = info.manifest or {}
    tally = _Tally(repo, info.id)
    backend = manifest.get("backend") or ("postgresql" if tally.postgres else "sqlite")
    for p in ("db", "config"):
        if p in parts and not tally.parts[p][0]:
            if explicit_parts:
                raise SctkError(f"Snapshot {info.id[:12]} holds no {p} part; nothing to restore.")
            parts = [x for x in parts if x != p]

    tsettings = _target_settings(settings, target, database_url)
    fresh = tsettings is None
    if fresh and target.is_dir() and not force and any(p.name != "tmp" for p in target.iterdir()):
        # its own data/, keys/ ... would be replaced, and no safety backup can cover them
        raise SctkError(
            f"{target} is not empty and is not an sctk data directory; choose an empty or "
            "new --target, or pass --force to restore into it anyway."
        )
    db_url: str | None = None
    if "db" in parts and backend == "postgresql":
        if database_url:
            db_url = database_url
        elif tsettings is not None and not tsettings.is_sqlite:
            db_url = tsettings.db_url
        else:
            raise SctkError(
                f"Snapshot {info.id[:12]} holds a PostgreSQL database and {target} names none; "
                "pass --database-url postgresql://USER@HOST/DB to say where to load it."
            )
        if not db_url.startswith("postgres"):
            raise SctkError(
                "--database-url must name a PostgreSQL database for this snapshot "
                "(postgresql://USER@HOST/DB)."
            )
    if (
        "db" in parts
        and backend == "sqlite"
        and tsettings is not None
        and not tsettings.is_sqlite
        and "config" not in parts
    ):
        raise SctkError(
            f"Snapshot {info.id[:12]} holds a SQLite database but {target} uses PostgreSQL; "
            "restore it with its configuration (no --only) or into a fresh --target."
        )

    items: list[Item] = []
    if "db" in parts and backend == "sqlite":
        items.append(Item(DB_FILES["sqlite"], "db", True))
        items += [Item(n, "db", False) for n in SQLITE_SIDE_FILES]
    if "config" in parts:
        items.append(Item(CONFIG_FILE, "config", True))
    if "keys" in parts:
        items.append(Item(KEYS_DIR, "keys", True))
    if "data" in parts:
        items += [Item(n, "data", True) for n in DATA_DIRS]
    for item in items:
        item.files, item.bytes = tally.tops.get(item.name, (0, 0))
        exists = (target / item.name).exists()
        if item.staged:
            item.action = "replace" if exists else "create"
        else:
            item.action = "remove" if exists else "keep"
    if db_url:
        items.append(Item("database", "db", False, "load", *tally.parts["db"]))
    items = [i for i in items if i.action != "keep"]
    revision = manifest.get("schema_revision") or ""
    return Plan(
        snapshot=info.id,
        label=info.label,
        created_at=info.time.isoformat(),
        target=target,
        parts=parts,
        backend=backend,
        fresh=fresh,
        items=items,
        database=(dbload.describe_target(dbload.normalise_url(db_url)) if db_url else None),
        database_url=db_url,
        running_pid=runstate.running_pid(target),
        interrupted=_work(target).exists(),
        pending_snapshot=pending,
        safety_backup=not fresh,
        schema_revision=revision,
        migrate="db" in parts and bool(revision) and revision != head(),
        files=sum(tally.parts[p][0] for p in parts),
        bytes=sum(tally.parts[p][1] for p in parts),
    )


class _Tally:
    """What a plan needs of a snapshot's files, counted as its list streams by (a piece at
    a time): files and bytes per part and per top-level name (every item a restore swaps is
    one), and whether it holds a PostgreSQL dump. Holding the entries (with their chunk ids)
    was ~1 KiB a file: 1 GiB for a million files, before a byte was restored."""

    def __init__(self, repo, snap_id: str):
        self.parts: dict[str, list[int]] = {p: [0, 0] for p in PARTS}
        self.tops: dict[str, list[int]] = {}
        self.postgres = False
        dump = DB_FILES["postgresql"]
        for f in repo.snapshot_files(snap_id):
            path, size = f["path"], f["size"]
            self.postgres = self.postgres or path == dump
            part = self.parts.get(_part(path))
            if part is not None:
                part[0] += 1
                part[1] += size
            top = self.tops.setdefault(path.split("/", 1)[0], [0, 0])
            top[0] += 1
            top[1] += size


# ------------------------------------------------------------------------------ journal


def _work(target: Path) -> Path:
    return target / WORK_DIR


def _write_journal(target: Path, data: dict[str, Any]) -> None:
    atomic_write(_work(target) / JOURNAL, json.dumps(data, indent=1), mode=0o600)


def _read_journal(target: Path) -> dict[str, Any] | None:
    try:
        return json.loads((_work(target) / JOURNAL).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        # written atomically, so unreadable means never completely written: staging phase
        return {"state": "staging", "items": []}


def pending_snapshot(target: Path) -> str | None:
    """The snapshot an interrupted restore on TARGET was restoring (its journal says)."""
    journal = _read_journal(target)
    snap = (journal or {}).get("snapshot")
    return snap if isinstance(snap, str) and snap else None


def _is_latest(ref: str) -> bool:
    return (ref or "").strip().lower() == "latest"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _roll_forward(target: Path, items: list[dict[str, Any]]) -> None:
    work = _work(target)
    (work / "old").mkdir(parents=True, exist_ok=True)
    for item in items:
        name = item["name"]
        live, old, staged = target / name, work / "old" / name, work / "staging" / name
        if item["staged"]:
            if not (staged.exists() or staged.is_symlink()):
                continue  # already swapped in
            if (live.exists() or live.is_symlink()) and not old.exists():
                os.rename(live, old)
            elif live.exists():
                _remove(live)  # cannot happen in sequence; never lose the staged item
            os.rename(staged, live)
            crashpoints.reached("restore.swapping")
        elif (live.exists() or live.is_symlink()) and not old.exists():
            os.rename(live, old)
    fsync_dir(target)


def _roll_back(target: Path, items: list[dict[str, Any]]) -> None:
    work = _work(target)
    for item in reversed(items):
        name = item["name"]
        live, old, staged = target / name, work / "old" / name, work / "staging" / name
        if old.exists() or old.is_symlink():
            if live.exists() or live.is_symlink():
                _remove(live)  # the new item, swapped in
            os.rename(old, live)
        elif item["staged"] and not staged.exists() and live.exists():
            _remove(live)  # the target never had it: the new item goes
    if target.exists():
        fsync_dir(target)


def recover(target: Path) -> str | None:
    """Finish or undo a restore interrupted on TARGET (crash, kill -9); None if there was
    none, else 'rolled back' or 'rolled forward'."""
    journal = _read_journal(target)
    work = _work(target)
    if journal is None:
        if work.exists():  # staging began before the first journal write: nothing swapped
            shutil.rmtree(work)
            return "rolled back"
        return None
    state, items = journal.get("state"), journal.get("items", [])
    outcome = "rolled back"
    if state == "swapping":
        forward = True
        db = journal.get("database")
        if db:
            xid = db.get("xid")
            status = dbload.xact_status(db["url"], xid) if xid else None
            forward = status == "committed"
        if forward:
            _roll_forward(target, items)
            outcome = "rolled forward"
        else:
            _roll_back(target, items)
    elif state == "done":
        outcome = "rolled forward"
    shutil.rmtree(work, ignore_errors=True)
    return outcome


# ------------------------------------------------------------------------------ restoring


@dataclass
class RestoreResult:
    snapshot: str
    target: str
    parts: list[str]
    files: int
    bytes: int
    seconds: float
    safety_snapshot: str | None
    recovered: str | None
    revision_before: str | None
    revision_after: str | None
    tables: dict[str, int]
    health: dict[str, Any]
    damaged: list[dict[str, str]] = field(default_factory=list)  # {path, reason} left out

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _safety_backup(rt: Runtime, tsettings: Settings, repo) -> str:
    """Snapshot the target before replacing it; its id, so the restore can be undone."""
    from sctk.backup import create

    with _runtime_of(rt, tsettings) as target_rt:
        return create.take(target_rt, repo, SAFETY_LABEL).id


def _stage(
    repo, plan: Plan, staging: Path, progress: Callable[[int], None] | None
) -> list[tuple[str, str]]:
    """Write the snapshot's files into STAGING; the damaged ones left out (a fresh target
    only: an existing data directory is replaced all or nothing)."""
    parts = set(plan.parts)
    dump = DB_FILES["postgresql"]
    stats = repo.restore(
        plan.snapshot,
        staging,
        include=lambda p: p != dump and _part(p) in parts,
        progress=progress,
        partial=plan.fresh,
    )
    for item in plan.items:
        if item.staged and item.part in ("keys", "data"):
            path = staging / item.name
            path.mkdir(exist_ok=True)  # an empty directory holds no file a snapshot keeps
            os.chmod(path, SUBDIRS.get(item.name, 0o750))
    db = staging / DB_FILES["sqlite"]
    if db.exists():
        os.chmod(db, 0o600)  # it holds password hashes and encrypted secrets
    toml = staging / CONFIG_FILE
    if toml.exists() and plan.database_url and plan.backend == "postgresql":
        _point_config_at(toml, plan.database_url)
    return stats.damaged


def _flush_to_disk(path: Path) -> None:
    """Make the staged files durable before they replace the old ones: after a power cut, a
    swapped-in file must not turn out empty. One syncfs of the file system beats an fsync per
    file; os.sync where syncfs is missing."""
    import ctypes

    try:
        syncfs = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        syncfs(fd)
    finally:
        os.close(fd)


def _point_config_at(toml: Path, database_url: str) -> None:
    """The restored configuration names the database the restore loaded."""
    import tomlkit

    doc = tomlkit.parse(toml.read_text(encoding="utf-8"))
    if doc.get("database_url") != database_url:
        doc["database_url"] = database_url
        atomic_write(toml, tomlkit.dumps(doc), mode=0o640)


def _complete_layout(target: Path) -> None:
    for name, mode in SUBDIRS.items():
        path = target / name
        if not path.exists():
            path.mkdir(mode=mode)
            os.chmod(path, mode)


def restore(
    rt: Runtime,
    repo,
    ref: str,
    parts: list[str] | None = None,
    *,
    target: Path | None = None,
    database_url: str | None = None,
    force: bool = False,
    safety_backup: bool = True,
    explicit_parts: bool = False,
    progress: Callable[[int], None] | None = None,
    actor: str = "system",
    migrate: bool = True,
    include_safety: bool = False,
) -> RestoreResult:
    """Restore snapshot REF (parts, default all) into TARGET (default: the data directory).

    'latest' is the newest regular snapshot (any kind with INCLUDE_SAFETY). A restore that
    was interrupted on TARGET is settled first, and it decides: 'latest' (or its own id)
    finishes that restore; another snapshot is refused with a sentence naming both.
    MIGRATE=False keeps an older snapshot at its own schema revision: a rollback after a
    failed upgrade must not run the upgrade that failed again."""
    from sctk import runstate

    settings = rt.settings
    start = time.perf_counter()
    parts = parts or list(PARTS)
    target = (target or settings.home).expanduser().absolute()
    if not force:  # --force: the operator takes the service's lost writes on himself
        runstate.refuse_while_serving(target, "the restore", override="--force")
    recovered = None
    journal = _read_journal(target)
    pending = pending_snapshot(target)
    asked = kinds.find(repo, ref, include_safety).id if not (pending and _is_latest(ref)) else None
    if journal is not None or _work(target).exists():
        recovered = recover(target)
        log.warning("an interrupted restore of %s was %s", target, recovered)
    if pending and asked not in (None, pending):
        raise Conflict(
            f"An interrupted restore of snapshot {pending[:12]} into {target} was {recovered} "
            f"first; this run asked for snapshot {asked[:12]}, so nothing more was done. Run "
            f"'sctk restore {pending[:12]}' to finish the interrupted restore, or run this "
            "command again to restore the snapshot it names."
        )
    settled = pending is not None and recovered == "rolled forward"
    if pending:
        ref = pending
        if settled and journal and journal.get("parts"):
            parts = [p for p in journal["parts"] if p in PARTS] or parts
    plan = make_plan(
        settings, repo, ref, parts, target, database_url, explicit_parts, force, include_safety
    )
    plan.migrate = plan.migrate and migrate
    started = time.monotonic()
    try:
        if settled:  # the swap had finished: only what follows it is left to do
            safety_id = (journal or {}).get("safety_snapshot")
            result = _finish(rt, repo, plan, start, recovered, safety_id)
        else:
            result = _restore(rt, repo, plan, safety_backup, progress, start, recovered)
    except BaseException as exc:
        _announce(rt, plan, repo, started, ok=False, actor=actor, error=exc)
        raise
    _announce(rt, plan, repo, started, ok=True, actor=actor, result=result)
    return result


def _restore(
    rt: Runtime,
    repo,
    plan: Plan,
    safety_backup: bool,
    progress: Callable[[int], None] | None,
    start: float,
    recovered: str | None,
) -> RestoreResult:
    target = plan.target
    tsettings = _target_settings(rt.settings, target, plan.database_url)
    safety_id = None
    if safety_backup and tsettings is not None:
        safety_id = _safety_backup(rt, tsettings, repo)
    if tsettings is rt.settings:
        rt.release()  # no pooled connection left open on the files the swap replaces
    target.mkdir(parents=True, exist_ok=True)
    work = _work(target)
    staging, old = work / "staging", work / "old"
    items = [{"name": i.name, "staged": i.staged} for i in plan.items if i.name != "database"]
    base = {
        "snapshot": plan.snapshot,
        "parts": plan.parts,
        "items": items,
        "safety_snapshot": safety_id,
    }
    if plan.database_url:
        base["database"] = {"url": plan.database_url, "xid": None}
    work.mkdir(parents=True, exist_ok=True)
    _write_journal(target, {**base, "state": "staging"})
    try:
        staging.mkdir()
        old.mkdir()
        damaged = _stage(repo, plan, staging, progress)
        _flush_to_disk(staging)
        crashpoints.reached("restore.staged")
        _write_journal(target, {**base, "state": "swapping"})
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    try:
        if plan.database_url:
            if not dbload.database_exists(plan.database_url):
                dbload.create_database(plan.database_url)

            def keep_xid(xid: str) -> None:
                base["database"]["xid"] = xid
                _write_journal(target, {**base, "state": "swapping"})

            chunks = repo.read_file(plan.snapshot, DB_FILES["postgresql"])
            dbload.load_postgres(plan.database_url, chunks, on_xid=keep_xid)
        _roll_forward(target, items)
    except BaseException:
        # if undoing fails too, old/ and the journal stay for the next run to settle
        _roll_back(target, items)
        shutil.rmtree(work, ignore_errors=True)
        raise
    _write_journal(target, {**base, "state": "done"})
    shutil.rmtree(work, ignore_errors=True)
    return _finish(rt, repo, plan, start, recovered, safety_id, damaged)


def _finish(
    rt: Runtime,
    repo,
    plan: Plan,
    start: float,
    recovered: str | None,
    safety_id: str | None,
    damaged: list[tuple[str, str]] = (),
) -> RestoreResult:
    """What follows the swap: the layout completed, the schema migrated, the run records
    reconciled with the repository, the health checks run."""
    target = plan.target
    _complete_layout(target)

    # the restored directory, as the service will see it from now on
    from sctk.health.registry import run_checks
    from sctk.storage.migrate import current, upgrade

    after = _target_settings(rt.settings, target, plan.database_url)
    if any(path == DB_FILES["sqlite"] for path, _ in damaged):
        after = None  # no database to migrate or check
    before_rev = after_rev = None
    tables: dict[str, int] = {}
    health: dict[str, Any] = {}
    if after is not None:
        with _runtime_of(rt, after) as after_rt:
            if "db" in plan.parts:
                before_rev = current(after_rt.engine)
                if before_rev is not None and plan.migrate:
                    before_rev, after_rev = upgrade(after_rt.engine, "head")
                else:
                    after_rev = before_rev
                from sctk.backup.scratch_restore import table_counts

                tables, _ = table_counts(after.db_url)
                _reconcile_runs(after_rt, repo)
            health = run_checks(after_rt).as_dict()
    return RestoreResult(
        snapshot=plan.snapshot,
        target=str(target),
        parts=plan.parts,
        files=plan.files,
        bytes=plan.bytes,
        seconds=round(time.perf_counter() - start, 3),
        safety_snapshot=safety_id,
        recovered=recovered,
        revision_before=before_rev,
        revision_after=after_rev,
        tables=tables,
        health=health,
        damaged=[{"path": path, "reason": why} for path, why in damaged],
    )


def _reconcile_runs(rt: Runtime, repo) -> None:
    """The restored database's backup records, brought in line with the repository."""
    from sctk.backup import runs
    from sctk.backup.location import display

    with rt.session() as session:
        counts = runs.reconcile(session, repo.snapshots(), display(repo.url))
    if any(counts.values()):
        log.info("backup run records reconciled with the repository: %s", counts)


def _announce(
    rt: Runtime,
    plan: Plan,
    repo,
    started: float,
    *,
    ok: bool,
    actor: str,
    result: RestoreResult | None = None,
    error: BaseException | None = None,
) -> None:
    """A backup run of kind restore (its row, audit entry restore.completed/restore.failed,
    bus event backup.succeeded/backup.failed) in the target's database, else the invoking
    data directory's. The run is only opened now: a row opened before the swap would be
    replaced with the rest of the old database."""
    from sctk.backup import runs
    from sctk.backup.create import reason

    settings = rt.settings
    where = _target_settings(settings, plan.target, plan.database_url)
    if where is None and is_data_dir(settings.home):
        where = settings
    if where is None:
        return
    details: dict[str, Any] = {"target": str(plan.target), "parts": plan.parts}
    if result is not None:
        message = (
            f"Restored snapshot {plan.snapshot[:8]} ({', '.join(plan.parts)}) into "
            f"{plan.target}: {result.files} files, {result.bytes} bytes."
        )
        details.update(
            files=result.files,
            bytes=result.bytes,
            safety_snapshot=result.safety_snapshot,
            revision_before=result.revision_before,
            revision_after=result.revision_after,
            health=result.health.get("status"),
        )
    else:
        message = f"Restore of snapshot {plan.snapshot[:8]} into {plan.target} failed: "
        message += reason(error) if error is not None else "unknown reason."
    if result is not None and result.damaged:
        ok = False  # a partial restore: the damaged files are named, the run is not a success
        names = ", ".join(d["path"] for d in result.damaged[:5])
        message += f" {len(result.damaged)} damaged file(s) were left out: {names}."
        details["damaged"] = result.damaged
    with _runtime_of(rt, where) as where_rt:
        run = runs.Run(where_rt, "restore", actor, repo.url, started=started)
        runs.finish(
            run,
            ok,
            message,
            snapshot_id=plan.snapshot,
            details=details,
            repo=repo if ok else None,
            audit_event="restore.completed" if ok else "restore.failed",
        )
