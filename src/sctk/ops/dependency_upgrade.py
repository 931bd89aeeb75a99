"""`sctk deps upgrade`: the guide's package update procedure for the environment sctk runs in.

Save the exact installed set (a lock file), plan the upgrades sctk's own requirement ranges
and every installed package's pins allow, upgrade group by group (scientific, web, ml), and
after each group run an import check and `sctk selftest --quick` in fresh processes (the
upgraded code is only seen by a new interpreter). Any failure reinstalls the saved set and
names what failed. pip does every change; this module decides what to ask of it.

The saved versions of what a plan changes are fetched as wheels before anything changes
(<home>/archive/deps/wheels-STAMP/), so that the rollback needs neither the index nor the
network, and an upgrade whose rollback could not be done is refused up front.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from sctk.config import Settings
from sctk.errors import Conflict, SctkError
from sctk.fsutil import atomic_write
from sctk.runtime import Runtime

log = logging.getLogger(__name__)

LOCK_DIR = Path("archive") / "deps"
KEEP_LOCKS = 5
PIP_TIMEOUT = 1800.0  # a torch wheel over a slow line
GROUPS = ("scientific", "web", "ml")
# sctk's requirements by the guide's groups; the rest of them (the web stack, the database,
# the CLI) are "web". Plugins (packages with an sctk.* entry point) are scientific.
SCIENTIFIC = {
    "numpy",
    "scipy",
    "pandas",
    "pyarrow",
    "matplotlib",
    "zstandard",
    "pyfastcdc",
    "blake3",
    "fsspec",
    "dask",
}
ML = {"torch"}
SKIPPED_EXTRAS = {"dev"}  # test tools, not what the service runs on
PLUGIN_GROUPS = ("sctk.physics",)


def group_of(name: str, plugin_names: set[str] = frozenset()) -> str:
    """The upgrade group of package NAME (PLUGIN_NAMES: sctk's plugins, all scientific)."""
    name = canonicalize_name(name)
    if name in ML:
        return "ml"
    return "scientific" if name in SCIENTIFIC or name in plugin_names else "web"


# --- what is installed ---------------------------------------------------------------------


def pip(*args: str, timeout: float = PIP_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """pip of this interpreter (the environment sctk runs in)."""
    return subprocess.run(
        [sys.executable, "-m", "pip", *args, "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _pip_ok(*args: str) -> subprocess.CompletedProcess[str]:
    done = pip(*args)
    if done.returncode != 0:
        lines = [ln for ln in (done.stderr or done.stdout).strip().splitlines() if ln.strip()]
        why = next((ln for ln in reversed(lines) if "ERROR" in ln), lines[-1] if lines else "")
        raise SctkError(f"pip {args[0]} failed: {why.strip()[:400] or 'no output'}")
    return done


def installed() -> dict[str, str]:
    """canonical name -> version of every distribution pip lists, read in a new process."""
    rows = json.loads(_pip_ok("list", "--format=json").stdout)
    return {canonicalize_name(r["name"]): r["version"] for r in rows}


def _record_hash(dist: metadata.Distribution) -> str | None:
    text = dist.read_text("RECORD")
    return hashlib.sha256(text.encode("utf-8")).hexdigest() if text is not None else None


def lock_entries(versions: dict[str, str]) -> list[dict[str, Any]]:
    """The saved set: each package's version and the sha256 of the RECORD pip wrote when it
    installed it (the list of its files with their hashes)."""
    hashes = {}
    for dist in metadata.distributions():
        name = canonicalize_name(dist.metadata["Name"] or "")
        if name in versions and dist.version == versions[name] and name not in hashes:
            hashes[name] = _record_hash(dist)
    return [
        {"name": n, "version": v, "record_sha256": hashes.get(n)}
        for n, v in sorted(versions.items())
    ]


# --- sctk's ranges and every installed pin -------------------------------------------------


def _marker_ok(req: Requirement, extra: str = "") -> bool:
    if req.marker is None:
        return True
    env = {**default_environment(), "extra": extra}
    return req.marker.evaluate(env)


def sctk_ranges(have: dict[str, str]) -> dict[str, SpecifierSet]:
    """name -> the range sctk requires, for its runtime requirements and those of its extras
    whose package is installed (the dev extra's test tools excepted)."""
    extras = [
        e
        for e in metadata.metadata("sctk").get_all("Provides-Extra") or []
        if e not in SKIPPED_EXTRAS
    ]
    ranges: dict[str, SpecifierSet] = {}
    for line in metadata.requires("sctk") or []:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        runtime = _marker_ok(req)
        if not runtime and not (name in have and any(_marker_ok(req, e) for e in extras)):
            continue
        ranges[name] = ranges.get(name, SpecifierSet()) & req.specifier
    return ranges


def plugins() -> set[str]:
    """Distributions that add to sctk through its entry points."""
    found = set()
    for group in PLUGIN_GROUPS:
        for ep in metadata.entry_points(group=group):
            if ep.dist is not None:
                found.add(canonicalize_name(ep.dist.metadata["Name"]))
    return found


def pins(names: set[str]) -> dict[str, list[tuple[str, SpecifierSet]]]:
    """For each of NAMES, the (requiring package, its specifier) of every installed package
    other than sctk that requires it with a range."""
    out: dict[str, list[tuple[str, SpecifierSet]]] = {n: [] for n in names}
    seen = set()
    for dist in metadata.distributions():
        owner = canonicalize_name(dist.metadata["Name"] or "")
        if owner in seen or owner == "sctk":
            continue
        seen.add(owner)
        for line in dist.requires or []:
            try:
                req = Requirement(line)
            except InvalidRequirement:
                continue
            name = canonicalize_name(req.name)
            if name in out and str(req.specifier) and _marker_ok(req):
                out[name].append((f"{owner} {dist.version}", req.specifier))
    return out


# --- the plan ------------------------------------------------------------------------------


@dataclass
class Source:
    """Where pip looks: passed through to it (--find-links alone means offline)."""

    find_links: list[str] = field(default_factory=list)
    index_url: str | None = None

    def args(self) -> list[str]:
        out = [f"--find-links={f}" for f in self.find_links]
        if self.index_url:
            out.append(f"--index-url={self.index_url}")
        elif self.find_links:
            out.append("--no-index")
        return out


@dataclass
class Planned:
    name: str
    installed: str | None
    version: str
    group: str
    reason: str = ""  # why it is in the plan when not asked for: a dependency of one that is


@dataclass
class Held:
    name: str
    installed: str
    latest: str
    why: str


@dataclass
class Plan:
    upgrades: list[Planned]
    held: list[Held]
    candidates: list[str]

    def groups(self) -> list[tuple[str, list[Planned]]]:
        return [(g, [p for p in self.upgrades if p.group == g]) for g in GROUPS]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _version(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


def outdated(source: Source) -> dict[str, str]:
    """canonical name -> newest version the source offers, for installed packages behind it."""
    rows = json.loads(_pip_ok("list", "--outdated", "--format=json", *source.args()).stdout)
    return {canonicalize_name(r["name"]): r["latest_version"] for r in rows}


def candidates(have: dict[str, str], group: str = "all", only: list[str] | None = None):
    """name -> allowed range of the packages this run may upgrade; unknown --only names are
    refused in one sentence."""
    ranges = sctk_ranges(have)
    for name in plugins():
        ranges.setdefault(name, SpecifierSet())
    ranges = {n: s for n, s in ranges.items() if n in have}
    if only:
        wanted = {canonicalize_name(n) for n in only}
        unknown = sorted(wanted - set(ranges))
        if unknown:
            raise SctkError(
                f"'{unknown[0]}' is not an installed dependency or plugin of sctk; "
                "'sctk deps check' lists them."
            )
        ranges = {n: s for n, s in ranges.items() if n in wanted}
    if group != "all":
        if group not in GROUPS:
            raise SctkError(f"Unknown group '{group}'; use one of {', '.join(GROUPS)} or all.")
        own = plugins()
        ranges = {n: s for n, s in ranges.items() if group_of(n, own) == group}
    return ranges


def classify(
    have: dict[str, str], latest: dict[str, str], ranges: dict[str, SpecifierSet]
) -> tuple[dict[str, SpecifierSet], list[Held]]:
    """The allowed range of each candidate behind the index (sctk's range and every pin), and
    what those ranges hold back from the newest version."""
    pinned = pins(set(ranges))
    allowed: dict[str, SpecifierSet] = {}
    held: list[Held] = []
    for name, own in sorted(ranges.items()):
        if name not in latest:
            continue
        limits = [("sctk", own)] if str(own) else []
        limits += pinned.get(name, [])
        spec = own
        for _, other in limits:
            spec = spec & other
        allowed[name] = spec
        newest = _version(latest[name])
        if newest is not None and not spec.contains(newest, prereleases=True):
            why = "; ".join(
                f"{who} requires {name}{other}"
                for who, other in limits
                if not other.contains(newest, prereleases=True)
            )
            held.append(Held(name, have[name], latest[name], why))
    return allowed, held


def resolve(
    have: dict[str, str], allowed: dict[str, SpecifierSet], source: Source, groups=GROUPS
) -> list[Planned]:
    """pip's own resolution (install --dry-run) of the newest allowed versions, group by
    group; what it would install or change, dependencies included."""
    own = plugins()
    planned: list[Planned] = []
    for group in groups:
        reqs = {n: s for n, s in allowed.items() if group_of(n, own) == group}
        if not reqs:
            continue
        done = _pip_ok(
            "install",
            "--dry-run",
            "--quiet",
            "--report",
            "-",
            "--upgrade",
            *source.args(),
            *[f"{n}{s}" for n, s in sorted(reqs.items())],
        )
        report = json.loads(done.stdout or "{}")
        for item in report.get("install", []):
            name = canonicalize_name(item["metadata"]["name"])
            version = item["metadata"]["version"]
            if have.get(name) == version:
                continue
            why = "" if name in reqs else "needed by the upgrades of this group"
            planned.append(Planned(name, have.get(name), version, group, why))
    return planned


def plan(source: Source, group: str = "all", only: list[str] | None = None, have=None) -> Plan:
    have = have or installed()
    ranges = candidates(have, group, only)
    allowed, held = classify(have, outdated(source), ranges)
    # a candidate whose newest version is held back may still have a newer one in range
    return Plan(resolve(have, allowed, source), held, sorted(ranges))


# --- lock files ----------------------------------------------------------------------------


def lock_dir(settings: Settings) -> Path:
    return settings.home / LOCK_DIR


def save_lock(settings: Settings, have: dict[str, str], stamp: str) -> Path:
    path = lock_dir(settings) / f"lock-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    data = {
        "created_at": datetime.now(UTC).isoformat(),
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "packages": lock_entries(have),
    }
    atomic_write(path, json.dumps(data, indent=1) + "\n", mode=0o640)
    # the same set for `pip install -r`, by hand, when sctk itself no longer starts
    pinned = "".join(f"{p['name']}=={p['version']}\n" for p in data["packages"])
    atomic_write(path.with_suffix(".txt"), pinned, mode=0o640)
    return path


def read_lock(path: Path) -> dict[str, str]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return {p["name"]: p["version"] for p in data["packages"]}


def prune_locks(settings: Settings, keep: int = KEEP_LOCKS) -> list[Path]:
    """Keep the newest KEEP lock files and the saved wheels of the same runs."""
    folder = lock_dir(settings)
    locks = sorted(folder.glob("lock-*.json"))
    gone = locks[:-keep] if keep else locks
    for path in gone:
        path.unlink(missing_ok=True)
        path.with_suffix(".txt").unlink(missing_ok=True)
        shutil.rmtree(folder / path.stem.replace("lock-", "wheels-"), ignore_errors=True)
    return gone


# --- checks after each group ---------------------------------------------------------------

_IMPORT_CHECK = """
import importlib, json, sys
failed = []
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except BaseException as exc:
        failed.append(f"{name}: {type(exc).__name__}: {exc}")
print(json.dumps(failed))
"""
NOT_MODULES = {"tests", "test", "docs", "examples", "benchmarks", "scripts"}  # stray tops
SCTK_MODULES = ("sctk", "sctk.cli")  # the rest of sctk is what the self-test exercises


def import_names(names: set[str]) -> list[str]:
    """The top-level modules the distributions NAMES provide (sctk imports them by these)."""
    found = set()
    for module, dists in metadata.packages_distributions().items():
        usable = module.isidentifier() and not module.startswith("_")
        if (
            usable
            and module not in NOT_MODULES
            and any(canonicalize_name(d) in names for d in dists)
        ):
            found.add(module)
    return sorted(found)


def import_check(names: set[str]) -> str | None:
    """None when the top-level modules of NAMES (and sctk's entry) import in a new
    interpreter, else one sentence naming the first that does not."""
    upgraded = import_names(names)
    if not upgraded:
        return None
    modules = [*SCTK_MODULES, *upgraded]
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_CHECK, *modules],
        capture_output=True,
        text=True,
        timeout=600,
    )
    try:
        failed = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return f"the import check did not run ({tail[:300]})"
    return f"import of {failed[0][:400]}" if failed else None


def broken_requirements() -> set[str]:
    """What `pip check` reports, read from the installed metadata in this process (pip's own
    check takes seconds to start): each installed package's requirement that is missing or
    outside its range. Read afresh: pip has just changed the files under this process."""
    importlib.invalidate_caches()
    have: dict[str, str] = {}
    dists = []
    for dist in metadata.distributions():
        name = canonicalize_name(dist.metadata["Name"] or "")
        if name and name not in have:  # the first on sys.path is the one imported
            have[name] = dist.version
            dists.append((name, dist))
    found = set()
    for name, dist in dists:
        for line in dist.requires or []:
            try:
                req = Requirement(line)
            except InvalidRequirement:
                continue
            if not _marker_ok(req):
                continue
            need = canonicalize_name(req.name)
            version = _version(have[need]) if need in have else None
            if need not in have:
                found.add(f"{name} {dist.version} requires {req}, which is not installed")
            elif version is not None and not req.specifier.contains(version, prereleases=True):
                found.add(
                    f"{name} {dist.version} requires {req}, but {need} {have[need]} is installed"
                )
    return found


# --- running it ----------------------------------------------------------------------------


@dataclass
class UpgradeResult:
    ok: bool
    dry_run: bool
    message: str
    plan: dict[str, Any]
    lock_file: str | None = None
    changed: dict[str, list[str | None]] = field(default_factory=dict)  # name: [from, to]
    failed_step: str | None = None
    rolled_back: bool = False
    services: list[int] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def refuse_while_serving(settings: Settings, force: bool) -> list[int]:
    """The pids of services on the home; Conflict unless FORCE when there are any."""
    from sctk import runstate

    running = runstate.services(settings.home)
    if running and not force:
        named = "; ".join(f"pid {s.pid}, role {s.role}" for s in running)
        raise Conflict(
            f"sctk is running on {settings.home} ({named}): upgrading packages under a running "
            "service mixes old and new code in it; stop it first and run the command again, "
            "or pass --force to upgrade anyway and restart it afterwards."
        )
    return [s.pid for s in running]


def _fetch_saved(plan: Plan, source: Source, folder: Path) -> None:
    """Wheels of the installed versions the plan replaces, for an offline rollback."""
    olds = [f"{p.name}=={p.installed}" for p in plan.upgrades if p.installed]
    if not olds:
        return
    folder.mkdir(parents=True, exist_ok=True)
    done = pip(
        "download", "--no-deps", "--only-binary=:all:", "-d", str(folder), *source.args(), *olds
    )
    if done.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
        raise SctkError(
            f"The installed versions ({', '.join(olds)}) cannot be fetched as wheels for a "
            f"rollback ({lines[-1].strip()[:300]}); nothing was changed. Pass --find-links to "
            "a directory holding them, or --index-url to an index that has them."
        )


def _rollback(saved: dict[str, str], wheels: Path, source: Source) -> tuple[bool, str]:
    """Reinstall SAVED exactly: changed versions back, added packages out. (done, sentence)."""
    now = installed()
    added = sorted(set(now) - set(saved))
    back = sorted(n for n in saved if now.get(n) != saved[n])
    if back:
        links = [f"--find-links={wheels}"] if wheels.is_dir() else []
        args = links + (
            source.args() if (source.find_links or source.index_url) else ["--no-index"]
        )
        done = pip("install", "--no-deps", *args, *[f"{n}=={saved[n]}" for n in back])
        if done.returncode != 0:
            log.error("rollback install failed: %s", done.stderr[-2000:])
    if added:
        pip("uninstall", "--yes", *added)
    after = installed()
    differ = sorted(n for n in set(saved) | set(after) if saved.get(n) != after.get(n))
    if differ:
        shown = ", ".join(
            f"{n} {after.get(n) or 'absent'} (saved {saved.get(n) or 'absent'})" for n in differ[:5]
        )
        return False, f"the rollback did not restore the saved set: {shown}"
    return (
        True,
        f"the saved set was reinstalled ({len(back)} package(s) back, {len(added)} removed)",
    )


def _record(rt: Runtime, result: UpgradeResult, actor: str, started: datetime) -> None:
    """Maintenance history, audit log and a notice on the notifiers."""
    from sctk.monitoring import notifiers
    from sctk.security import audit_log
    from sctk.storage.models import MaintenanceRun

    settings = rt.settings

    status = "ok" if result.ok else "fail"
    details = {k: v for k, v in result.as_dict().items() if k != "message"}
    with rt.session() as s:
        s.add(
            MaintenanceRun(
                task="deps_upgrade",
                trigger="manual",
                status=status,
                summary=result.message[:2000],
                details=details,
                started_at=started,
                finished_at=datetime.now(UTC),
            )
        )
        audit_log.record(
            s,
            "deps.upgrade",
            actor=actor,
            target="environment",
            outcome="ok" if result.ok else "failure",
            details={"changed": result.changed, "failed_step": result.failed_step},
        )
    note = notifiers.Notification(
        kind="report",
        title="sctk packages upgraded" if result.ok else "sctk package upgrade rolled back",
        severity="info" if result.ok else "warning",
        text=result.message,
    )
    try:
        # each channel's attempt lands in the notifications table, as an alert's does
        record = notifiers.db_recorder(rt.sessionmaker)
        with rt.session() as s:
            notifiers.broadcast(note, settings.alerts, s, rt.keyring, record=record, timeout=30)
    except Exception:  # the run is recorded; the notice is best effort
        log.warning("announcing the package upgrade on the notifiers failed", exc_info=True)


def upgrade(
    rt: Runtime,
    source: Source,
    group: str = "all",
    only: list[str] | None = None,
    dry_run: bool = False,
    force: bool = False,
    confirm: Callable[[Plan], bool] | None = None,
    actor: str = "cli",
) -> UpgradeResult:
    """The whole procedure; see the module's docstring. CONFIRM sees the plan before anything
    changes (False: stop). The self-test is `sctk selftest --quick` in a child process."""
    import time

    from sctk.storage.layout import require_data_dir

    settings = rt.settings
    require_data_dir(settings)
    if group != "all" and group not in GROUPS:
        raise SctkError(f"Unknown group '{group}'; use one of {', '.join(GROUPS)} or all.")
    t0, started = time.perf_counter(), datetime.now(UTC)
    services = [] if dry_run else refuse_while_serving(settings, force)
    have = installed()
    the_plan = plan(source, group, only, have)
    restart = (
        f" Restart the sctk service(s) on {settings.home} (pid "
        f"{', '.join(map(str, services))}) so that they run the new packages."
        if services
        else " Restart any sctk service on this machine so that it runs the new packages."
    )
    base = {"dry_run": dry_run, "plan": the_plan.as_dict(), "services": services}
    if dry_run or not the_plan.upgrades:
        n = len(the_plan.upgrades)
        message = (
            f"{n} upgrade(s) planned, {len(the_plan.held)} held back; nothing changed (dry run)."
            if dry_run
            else f"Nothing to upgrade: {len(the_plan.held)} package(s) held back by ranges."
        )
        return UpgradeResult(True, message=message, **base)
    if confirm is not None and not confirm(the_plan):
        return UpgradeResult(True, message="Not confirmed; nothing changed.", **base)
    stamp = started.strftime("%Y%m%dT%H%M%S%fZ")
    lock = save_lock(settings, have, stamp)
    wheels = lock.parent / f"wheels-{stamp}"
    _fetch_saved(the_plan, source, wheels)
    problems_before = broken_requirements()
    try:
        failed = _upgrade_groups(the_plan, source, problems_before)
    except KeyboardInterrupt:
        _rollback(have, wheels, source)  # an operator's Ctrl-C leaves the saved set, too
        raise
    except Exception as exc:  # pip timing out, a full disk: roll back first
        failed = ("error", f"the upgrade stopped: {type(exc).__name__}: {exc}")
    after = installed()
    changed = {
        n: [have.get(n), after.get(n)]
        for n in sorted(set(have) | set(after))
        if have.get(n) != after.get(n)
    }
    if failed is None:
        message = (
            f"Upgraded {len(changed)} package(s): "
            + ", ".join(f"{n} {a or '-'} -> {b}" for n, (a, b) in changed.items())
            + f"; import check and self-test passed. Saved set: {lock}."
            + restart
        )
        result = UpgradeResult(True, message=message, lock_file=str(lock), changed=changed, **base)
    else:
        step, sentence = failed
        back, how = _rollback(have, wheels, source)
        message = f"Upgrade rolled back: {sentence}; {how}."
        result = UpgradeResult(
            False,
            message=message,
            lock_file=str(lock),
            changed=changed,
            failed_step=step,
            rolled_back=back,
            **base,
        )
    prune_locks(settings)
    result.seconds = round(time.perf_counter() - t0, 3)
    _record(rt, result, actor, started)
    return result


def _upgrade_groups(
    the_plan: Plan,
    source: Source,
    problems_before: set[str],
) -> tuple[str, str] | None:
    """Install the plan group by group, checking after each; (failed step, sentence) of the
    first failure, or None."""
    for group_name, items in the_plan.groups():
        if not items:
            continue
        what = ", ".join(f"{p.name} {p.installed or '-'} -> {p.version}" for p in items)
        done = pip(
            "install", "--no-deps", *source.args(), *[f"{p.name}=={p.version}" for p in items]
        )
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            return ("pip install", f"the {group_name} group ({what}): pip failed: {tail[:300]}")
        # plugins are loaded through their entry points, which the self-test's plugins step
        # does (naming the physics and its package); the import check is sctk's own stack
        broken = import_check({p.name for p in items} - plugins())
        if broken:
            return ("import check", f"the {group_name} group ({what}) broke the {broken}")
        new = sorted(broken_requirements() - problems_before)
        if new:
            return ("requirements", f"the {group_name} group ({what}) broke a pin: {new[0]}")
        passed, summary = _selftest()
        if not passed:
            return (
                "selftest",
                f"the {group_name} group ({what}) failed the self-test: {summary}",
            )
    return None


def _selftest() -> tuple[bool, str]:
    from sctk.ops import selftest

    report = selftest.run_isolated(quick=True)
    return report.ok, report.sentence()
