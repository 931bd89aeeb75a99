"""`sctk selftest`: a smoke test of the installed product, run anywhere, on a scratch home.

An installed sctk carries no test suite; after an upgrade of its packages (`sctk deps
upgrade`) or on a new machine the operator still wants to know that the parts work together.
Each step calls the same domain functions the service uses, on a data directory made for the
run in a temporary directory and removed afterwards: the live data directory, its database
and its backup repository are never opened.

The scratch home takes nothing from SCTK_* variables: they may name the live database or
repository, and the job step's pool process reads its settings from the environment it
inherits. `run` refuses while any is set; the CLI command clears them from its own process
first, and `run_isolated` runs the command in a child process without them (what the weekly
benchmark and `sctk doctor` use, so that the server's environment stays as it is).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import SecretStr
from sqlalchemy import delete, select

from sctk.config import Settings
from sctk.errors import ConfigError, SctkError

if TYPE_CHECKING:
    from sctk.runtime import Runtime

ALPHA = 0.1
MIN_COVERAGE = 0.8  # split conformal promises 0.9 on average; 400 seeded test rows stay above
PASSPHRASE = "sctk-selftest-scratch-repository"  # guards a repository deleted minutes later
OWNER = "selftest"


@dataclass
class Step:
    name: str
    status: str  # pass | fail | skip
    seconds: float
    message: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class SelftestReport:
    ok: bool
    quick: bool
    seconds: float
    steps: list[Step]

    @property
    def failed(self) -> Step | None:
        return next((s for s in self.steps if s.status == "fail"), None)

    def sentence(self) -> str:
        """One line: what passed, or the first step that failed and why."""
        bad = self.failed
        if bad is None:
            return f"self-test passed: {len(self.steps)} steps in {self.seconds:.1f} s"
        return f"self-test step '{bad.name}' failed: {bad.message}"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "summary": self.sentence()}


def live_environment() -> list[str]:
    """The SCTK_* variables of this process that settings would read (the tests' own
    SCTK_TEST_* are not settings)."""
    return sorted(k for k in os.environ if k.startswith("SCTK_") and not k.startswith("SCTK_TEST_"))


def scrubbed_environment() -> dict[str, str]:
    """This process's environment without the variables `live_environment` names."""
    live = set(live_environment())
    return {k: v for k, v in os.environ.items() if k not in live}


@dataclass
class _Scratch:
    parent: Path
    root: Path | None = None
    settings: Settings | None = None
    model_id: int | None = None
    _runtime: Runtime | None = None

    @property
    def home(self) -> Path:
        assert self.root is not None
        return self.root / "home"

    @property
    def runtime(self) -> Runtime:
        """The scratch home's runtime, shared by the steps and closed with the self-test."""
        if self._runtime is None:
            from sctk.runtime import Runtime

            assert self.settings is not None
            self._runtime = Runtime(self.settings)
        return self._runtime

    def close(self) -> None:
        if self._runtime is not None:
            self._runtime.close()


# --- the steps ---------------------------------------------------------------------------


def _home(sc: _Scratch, quick: bool) -> str:
    from sctk import config
    from sctk.backup.restore_run import check_writable
    from sctk.ops.init_home import init_home

    check_writable(sc.parent, "scratch directory")  # root writes where 0o555 says no
    sc.root = Path(tempfile.mkdtemp(prefix="sctk-selftest-", dir=sc.parent))
    report, _ = init_home(sc.home)
    passfile = sc.root / "passphrase"
    passfile.write_text(PASSPHRASE + "\n", encoding="utf-8")
    passfile.chmod(0o600)
    loaded = config.load(sc.home).settings
    # everything a step could reach outside the scratch directory, pinned inside it
    sc.settings = loaded.model_copy(
        update={
            "backup": loaded.backup.model_copy(
                update={
                    "repository": str(sc.root / "repository"),
                    "passphrase_file": passfile,
                    "announce_success": False,
                }
            ),
            "executor": loaded.executor.model_copy(update={"kind": "local", "processes": 1}),
            "jobs": loaded.jobs.model_copy(update={"concurrency": 1, "poll_seconds": 0.05}),
        }
    )
    if not sc.settings.is_sqlite or Path(sc.settings.db_url.split("///", 1)[1]).parent != sc.home:
        raise SctkError("the scratch home's settings do not name its own SQLite database")
    return f"{sc.home} initialised at schema {report.revision_after}; settings load"


def _round_trip(engine) -> None:
    """Write a row, read it back, remove it."""
    from sctk.storage.engine import session_scope
    from sctk.storage.models import CheckResult, utcnow

    marker = f"selftest-{os.getpid()}-{time.time_ns()}"
    with session_scope(engine) as s:
        s.add(CheckResult(name=marker, status="OK", message="round trip", values={"n": 1}))
    with session_scope(engine) as s:
        row = s.scalar(select(CheckResult).where(CheckResult.name == marker))
        if row is None or row.values != {"n": 1} or row.checked_at > utcnow():
            raise SctkError("a row written to the database did not read back as written")
        s.execute(delete(CheckResult).where(CheckResult.name == marker))


def _database(sc: _Scratch, quick: bool) -> str:
    from sctk.storage.engine import ping

    engine = sc.runtime.engine
    _round_trip(engine)
    latency = ping(engine)
    return f"SQLite round trip ({latency:.1f} ms a query)"


def _postgres(url: str) -> Callable[[_Scratch, bool], str]:
    def step(sc: _Scratch, quick: bool) -> str:
        from sctk.backup import dbload
        from sctk.storage.engine import make_engine, normalise_url, ping
        from sctk.storage.migrate import upgrade

        if normalise_url(url).get_backend_name() != "postgresql":
            raise SctkError(f"--database takes a postgresql:// URL, not {url.split(':', 1)[0]}")
        scratch = dbload.scratch_url(url, "selftest")
        dbload.create_database(scratch)  # unreachable or not allowed: one sentence
        try:
            pg = sc.settings.model_copy(update={"database_url": SecretStr(scratch)})
            # a throwaway database beside the scratch home's: an engine of its own, for as
            # long as the database lives
            engine = make_engine(pg)
            try:
                _, revision = upgrade(engine, "head")
                _round_trip(engine)
                latency = ping(engine)
            finally:
                engine.dispose()
        finally:
            dbload.drop_database(scratch)
        name = dbload.database_name(scratch)
        return (
            f"PostgreSQL: throwaway database {name} migrated to {revision}, round trip "
            f"({latency:.1f} ms a query), dropped"
        )

    return step


def _problem(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded regression with noise that grows with the first feature."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1.0, 1.0, size=(n, 2))
    y = 2.0 * X[:, 0] - X[:, 1] + rng.normal(0.0, 0.1 + 0.2 * (X[:, 0] + 1.0), n)
    return X, y


def _uq(sc: _Scratch, quick: bool) -> str:
    from sctk.uq import metrics, prediction, registry
    from sctk.uq.hybrid import HybridRegressor

    X, y = _problem(300, seed=7)
    X_test, y_test = _problem(400, seed=8)
    model = HybridRegressor(
        hidden=(16,), epochs=15 if quick else 60, batch_size=64, patience=20, seed=0, threads=1
    )
    model.fit(X[:200], y[:200], X_cal=X[200:], y_cal=y[200:])
    with sc.runtime.session() as s:
        row = registry.save(
            s, sc.home, model, "selftest", lineage={"features": ["x0", "x1"]}, owner=OWNER
        )
        sc.model_id = row.id
    with sc.runtime.session() as s:
        row = registry.get(s, sc.model_id)
        out = prediction.predict(s, sc.home, row, X_test, ALPHA)
    lower, upper = np.asarray(out["lower"]), np.asarray(out["upper"])
    covered = metrics.coverage(y_test, lower, upper)
    if not np.all(upper > lower):
        raise SctkError("the model returned intervals whose upper bound is not above the lower")
    if covered < MIN_COVERAGE:
        raise SctkError(
            f"the calibrated intervals covered {covered:.1%} of the seeded test rows, fewer than "
            f"{MIN_COVERAGE:.0%} (asked for {1 - ALPHA:.0%})"
        )
    return (
        f"trained, calibrated, saved and loaded; {1 - ALPHA:.0%} intervals covered "
        f"{covered:.1%} of {len(y_test)} seeded test rows"
    )


def _jobs(sc: _Scratch, quick: bool) -> str:
    from sctk.jobs import queue
    from sctk.jobs.worker import Worker
    from sctk.storage.engine import session_scope

    worker = Worker(sc.settings, concurrency=1)
    try:
        with session_scope(worker.engine) as s:
            job_id = queue.submit(s, "noop", {"selftest": True}, owner=OWNER).id
        worker.run_until_idle(timeout=60)
        with session_scope(worker.engine) as s:
            job = queue.get(s, job_id)
            status, error = job.status, job.error
    finally:
        worker.close()
    if status != "succeeded":
        raise SctkError(f"job {job_id} ended {status}" + (f": {error}" if error else ""))
    return f"job {job_id} queued, claimed by a worker, run in its process pool, succeeded"


def _files(root: Path) -> dict[str, bytes]:
    from sctk.backup import manifest

    found = {}
    for top in (manifest.CONFIG_FILE, manifest.KEYS_DIR, *manifest.DATA_DIRS):
        base = root / top
        paths = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        for path in paths:
            found[path.relative_to(root).as_posix()] = path.read_bytes()
    return found


def _backup(sc: _Scratch, quick: bool) -> str:
    from sctk.backup.create import create_backup
    from sctk.backup.location import init_repo, open_repo
    from sctk.backup.restore_run import restore
    from sctk.backup.scratch_restore import compare
    from sctk.backup.verify import verify_backup

    settings, rt = sc.settings, sc.runtime
    init_repo(settings)
    snap = create_backup(rt, "manual", actor=OWNER)
    checked = verify_backup(rt, snap["id"], read_data=not quick, actor=OWNER)
    if not checked["ok"]:
        raise SctkError(f"the verification of snapshot {snap['id'][:8]} found problems")
    target = sc.root / "restored"
    result = restore(rt, open_repo(settings), snap["id"], target=target, safety_backup=False)
    before, after = _files(sc.home), _files(target)
    differ = sorted(p for p in before if after.get(p) != before[p])
    if differ:
        raise SctkError(
            f"{len(differ)} restored file(s) differ from the original: {', '.join(differ[:5])}"
        )
    # the restored database against the row counts the snapshot's manifest recorded
    _, mismatches = compare(snap["manifest"], result.tables, result.revision_after)
    if mismatches:
        raise SctkError(f"the restored database disagrees with its manifest: {mismatches[0]}")
    counts = result.tables
    return (
        f"snapshot {snap['id'][:8]} of {len(before)} files verified"
        f"{'' if quick else ' (data read)'}, restored byte-identically, "
        f"{len(counts)} tables with the same row counts"
    )


def _bus(sc: _Scratch, quick: bool) -> str:
    from sctk.bus.envelope import InvalidEnvelope, sign, verify
    from sctk.security.keyring import Keyring

    ring = Keyring.load(sc.home)
    sent = sign(ring, "selftest.ping", {"n": 1}, source=OWNER)
    got = verify(Keyring.load(sc.home), sent.to_dict())
    if got.payload != {"n": 1}:
        raise SctkError("a signed bus message did not verify with its payload intact")
    altered = {**sent.to_dict(), "payload": {"n": 2}}
    try:
        verify(ring, altered)
    except InvalidEnvelope:
        return f"message signed with bus key {sent.kid}, verified; an altered copy refused"
    raise SctkError("an altered bus message verified: signatures are not checked")


def _health(sc: _Scratch, quick: bool) -> str:
    from sctk.health import Status, run_checks

    report = run_checks(sc.runtime)  # the scratch home's
    bad = [o for o in report.outcomes if o.status is Status.CRITICAL]
    if bad:
        raise SctkError("; ".join(f"check {o.name} is CRITICAL: {o.message}" for o in bad))
    return f"{len(report.outcomes)} health checks ran, none critical (overall {report.status.name})"


def _plugins(sc: _Scratch, quick: bool) -> str:
    """Every installed package's physics entry point imports: a plugin broken by an upgrade
    would otherwise surface only when a model that names it is loaded."""
    from sctk.uq import physics_registry

    names = []
    for ep in metadata.entry_points(group=physics_registry.ENTRY_POINT_GROUP):
        dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist else "an installed package"
        try:
            # the entry point itself first: its error names what the plugin lacks
            ep.load()
            physics_registry.resolve(ep.name)
        except SctkError as exc:
            raise SctkError(
                f"physics '{ep.name}' of {dist} cannot be loaded: {exc.message}"
            ) from None
        except Exception as exc:  # whatever the plugin's import raises
            raise SctkError(
                f"physics '{ep.name}' of {dist} cannot be imported: {type(exc).__name__}: {exc}"
            ) from None
        names.append(ep.name)
    if not names:
        return "no physics plugins installed"
    return f"{len(names)} physics plugin(s) load: {', '.join(sorted(names))}"


STEPS: list[tuple[str, str, Callable[[_Scratch, bool], str]]] = [
    ("home", "a scratch data directory initialised and its settings loaded", _home),
    ("database", "a database round trip on the scratch SQLite database", _database),
    ("plugins", "the installed physics plugins import", _plugins),
    ("uq", "a tiny tabular UQ model trained, calibrated, saved and asked for intervals", _uq),
    ("jobs", "a job through the queue and a worker", _jobs),
    ("backup", "a backup of the scratch home verified and restored byte-identically", _backup),
    ("bus", "a signed bus message verified, an altered one refused", _bus),
    ("health", "the health checks on the scratch home", _health),
]


def _reason(exc: BaseException) -> str:
    if isinstance(exc, SctkError):
        return exc.message
    if isinstance(exc, OSError) and exc.strerror:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return f"{type(exc).__name__}: {exc}"


def run(
    quick: bool = False,
    database_url: str | None = None,
    scratch: Path | None = None,
    progress: Callable[[Step], None] | None = None,
) -> SelftestReport:
    """Every step in order on a new scratch home under SCRATCH (default: the system's
    temporary directory); a step that fails leaves the ones needing the home skipped."""
    live = live_environment()
    if live:
        raise ConfigError(
            f"The self-test does not run with {', '.join(live)} set: those could point its "
            "scratch home at live resources. Run 'sctk selftest', which clears them."
        )
    steps = list(STEPS)
    if database_url:
        steps.insert(2, ("postgresql", "a throwaway PostgreSQL database", _postgres(database_url)))
    started = time.perf_counter()
    done: list[Step] = []
    sc = _Scratch(Path(scratch) if scratch else Path(tempfile.gettempdir()))
    try:
        for name, _, func in steps:
            t0 = time.perf_counter()
            if name != "home" and sc.settings is None:
                step = Step(name, "skip", 0.0, "skipped: the scratch home could not be made")
            else:
                try:
                    step = Step(name, "pass", 0.0, func(sc, quick))
                except Exception as exc:  # a failing step is the finding
                    step = Step(name, "fail", 0.0, _reason(exc))
            # microseconds: a fast step (the postgresql probe) rounded to milliseconds read 0.0
            step.seconds = round(time.perf_counter() - t0, 6)
            done.append(step)
            if progress is not None:
                progress(step)
    finally:
        sc.close()
        if sc.root is not None:
            shutil.rmtree(sc.root, ignore_errors=True)
    seconds = round(time.perf_counter() - started, 3)
    return SelftestReport(all(s.status == "pass" for s in done), quick, seconds, done)


def run_isolated(quick: bool = True, timeout: float = 300.0) -> SelftestReport:
    """`sctk selftest --json` in a child process of this interpreter, without SCTK_*
    variables; for callers (the scheduler, the doctor) whose own process serves."""
    args = [sys.executable, "-m", "sctk", "selftest", "--json", *(["--quick"] if quick else [])]
    started = time.perf_counter()
    try:
        done = subprocess.run(
            args, capture_output=True, text=True, env=scrubbed_environment(), timeout=timeout
        )
        data = json.loads(done.stdout)
        keys = ("name", "status", "seconds", "message")
        steps = [Step(**{k: s[k] for k in keys}) for s in data["steps"]]
        return SelftestReport(bool(data["ok"]), quick, float(data["seconds"]), steps)
    except subprocess.TimeoutExpired:
        why = f"did not finish within {timeout:g} s"
    except (ValueError, KeyError, TypeError):
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        why = f"exited {done.returncode}: {tail[0][:300]}"
    seconds = round(time.perf_counter() - started, 3)
    return SelftestReport(False, quick, seconds, [Step("start", "fail", seconds, why)])
