"""What the CLI prints: --help without type placeholders and with its brackets, times in
`users list`, the effective old value in `config set`, progress lines off a terminal, what
`deps check` is doing, and one result line for `uq train --inline`. Run through the CLI's
entry point in this process (a subprocess pays seconds of imports) unless a pipe matters."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

import click
import pytest
import typer
from rich.console import Console

from sctk.cli import COMMANDS, app, main
from sctk.cli import progress as progress_mod
from sctk.cli.progress import Ticker, progress
from sctk.security import users
from sctk.storage.engine import session_scope
from tests.helpers import UNREACHABLE_INDEX, run_sctk
from tests.security.conftest import engine, sqlite_only  # noqa: F401 - fixtures used by name
from tests.uq.registry_helpers import frame, import_csv

PLACEHOLDER = re.compile(r"<(bool|str|int|float|path|file|list\[[^>]*|[a-z]+ range)>")
TAG_LIKE = re.compile(r"\\?\[[a-z#/@][^\[\]]*\]")  # what rich would read as markup


@dataclass
class Ran:
    code: int
    out: str
    err: str


@pytest.fixture
def sctk(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "200")

    def run(*args: str, home=None) -> Ran:
        if home is not None:
            monkeypatch.setenv("SCTK_HOME", str(home))
        capsys.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return Ran(code, captured.out, captured.err)

    return run


def _commands() -> Iterator[tuple[list[str], click.Command]]:
    root = typer.main.get_command(app)
    ctx = root.context_class(root)
    yield [], root
    stack = [([name], root.get_command(ctx, name)) for name in COMMANDS]
    while stack:
        path, command = stack.pop()
        yield path, command
        stack.extend(([*path, n], c) for n, c in getattr(command, "commands", {}).items())


def test_no_flag_has_a_type_placeholder_and_help_keeps_its_brackets(sctk):
    bracketed = []
    for path, command in _commands():
        ctx = command.context_class(command)
        for param in command.get_params(ctx):
            shown = param.metavar or ""
            assert not PLACEHOLDER.search(shown), (path, param.name, shown)
            if getattr(param, "is_flag", False):
                assert shown == "", (path, param.name, shown)
            for tag in TAG_LIKE.findall(getattr(param, "help", None) or ""):
                bracketed.append((path, tag))
        for tag in TAG_LIKE.findall(command.help or ""):
            bracketed.append((path, tag))
    assert (["uq", "train"], r"\[model]") in bracketed  # escaped for rich

    for path in {tuple(p) for p, _ in bracketed} | {("uq", "train"), ("users", "add"), ()}:
        ran = sctk(*path, "--help")
        assert ran.code == 0, (path, ran.err)
        assert not PLACEHOLDER.search(ran.out), (path, PLACEHOLDER.search(ran.out))
        for p, tag in bracketed:
            if tuple(p) == path:
                assert tag.replace("\\", "") in ran.out, (path, tag)
    train = sctk("uq", "train", "--help").out
    assert "(or a [model] table)" in " ".join(train.split())
    assert re.search(r"--data\s+TEXT\b", train) and re.search(r"--config\s+PATH\b", train)
    assert re.search(r"--wait\s+Wait for the job", train)  # a flag: nothing between
    add = sctk("users", "add", "--help").out
    assert "USERNAME" in add and "--password-stdin" in add
    assert "--password-stdin" in sctk("users", "reset-password", "--help").out


@sqlite_only
def test_users_list_shows_times_like_the_other_tables(sctk, settings, engine):  # noqa: F811
    with session_scope(engine) as s:
        users.create(s, "ada", "long enough password 1", "analyst", actor="test")
    ran = sctk("users", "list", home=settings.home)
    assert ran.code == 0, ran.err
    row = next(line for line in ran.out.splitlines() if " ada " in line)
    created = re.findall(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?![.\d+])", row)
    assert len(created) == 1, row  # created; never logged in: empty
    assert "+00:00" not in ran.out
    listed = json.loads(sctk("users", "list", "--json", home=settings.home).out)
    assert [u["last_login_at"] for u in listed if u["username"] == "ada"] == [None]


@sqlite_only
def test_config_set_names_the_value_in_force_before(sctk, settings):
    ran = sctk("config", "set", "maintenance.key_max_age_days", "120", home=settings.home)
    assert ran.code == 0, ran.err
    assert "maintenance.key_max_age_days: 90.0 -> 120" in ran.out, ran.out
    ran = sctk("config", "set", "maintenance.key_max_age_days", "60", home=settings.home)
    assert "maintenance.key_max_age_days: 120 -> 60" in ran.out, ran.out  # as the file has it
    ran = sctk("config", "set", "server.host", "0.0.0.0", home=settings.home)
    assert "server.host: '127.0.0.1' -> '0.0.0.0'" in ran.out, ran.out


def test_the_ticker_prints_a_line_every_few_seconds_off_a_terminal():
    now = [0.0]
    out = io.StringIO()
    console = Console(file=out, width=200)
    assert not console.is_terminal
    ticker = Ticker("job 7", console, every=5.0, clock=lambda: now[0])
    for t, fraction in [(1, 0.1), (4.9, 0.2), (5.0, 0.3), (7, 0.4), (10.5, 0.9), (11, 1.0)]:
        now[0] = t
        ticker.update(fraction, f"epoch {t:g}")
    assert out.getvalue().splitlines() == ["job 7: 30% epoch 5", "job 7: 90% epoch 10.5"]
    # progress() picks it where the console is not a terminal
    with progress("job 8", console) as update:
        assert update.__self__.__class__ is Ticker  # type: ignore[attr-defined]


@sqlite_only
def test_uq_train_inline_reports_progress_off_a_terminal_and_its_result_once(
    sctk, settings, tmp_path, monkeypatch
):
    import_csv(settings, frame(60), "runs")
    cfg = tmp_path / "model.toml"
    cfg.write_text("[model]\nepochs = 3\nhidden = [8]\npatience = 2\nbatch_size = 64\n")
    monkeypatch.setattr(progress_mod, "EVERY_SECONDS", 0.0)  # a line at every update
    ran = sctk(
        "uq", "train", "--inline", "--data", "runs", "--target", "y", "--config", str(cfg),
        home=settings.home,
    )  # fmt: skip
    assert ran.code == 0, ran.err
    lines = ran.err.splitlines()
    # 60 rows: CV+ (no rows held out), its members' epochs counted together
    assert "training: 5% training on 60 rows, 2 features" in lines, lines
    epochs = [re.fullmatch(r"training: (\d+)% epoch (\d+)/(\d+), loss \S+", x) for x in lines]
    epochs = [m for m in epochs if m]
    assert epochs and epochs[0].group(2) == "1", lines
    percents = [int(m.group(1)) for m in epochs]
    assert percents == sorted(percents), lines  # progress never goes back
    assert epochs[-1].group(2) == epochs[-1].group(3), lines
    assert lines[-1] == "training: 100% stored model 'runs-y' v1", lines
    said = (ran.out + ran.err).count("stored model 'runs-y' v1 (id ")
    assert said == 1 and ran.out.startswith("stored model 'runs-y' v1 (id "), (ran.out, ran.err)


def test_deps_check_says_what_it_is_doing(tmp_path):
    done = run_sctk("deps", "check", home=tmp_path / "home", env=UNREACHABLE_INDEX)
    assert done.returncode == 0, done.stderr
    first = done.stderr.splitlines()[0]
    assert re.fullmatch(
        r"asking the package index for the newest versions of sctk's \d+ dependencies "
        r"\(pip index, pip list --outdated\)\.\.\.",
        first,
    ), done.stderr
    assert "could not reach the package index" in done.stdout


@sqlite_only
def test_a_waited_job_reports_progress_off_a_terminal(sctk, settings, tmp_path, monkeypatch):
    """`--wait` follows a job a worker runs: its progress as lines on stderr, then the result."""
    import threading

    from sctk import config
    from sctk.jobs.worker import Worker

    import_csv(settings, frame(20), "runs")
    pipeline = tmp_path / "pick.toml"
    pipeline.write_text('[[steps]]\nop = "select"\ncolumns = ["a", "y"]\n', encoding="utf-8")
    monkeypatch.setattr(progress_mod, "EVERY_SECONDS", 0.0)
    fast = config.load(settings.home, {"jobs": {"poll_seconds": 0.05}}).settings
    worker = Worker(fast, concurrency=1)
    thread = threading.Thread(target=worker.run_forever, kwargs={"grace": 5.0}, daemon=True)
    thread.start()
    try:
        ran = sctk("data", "transform", "runs", "--pipeline", str(pipeline), "--wait",
                   home=settings.home)  # fmt: skip
    finally:
        worker.stop()
        thread.join(timeout=30)
        from sctk.bus import shutdown_all

        shutdown_all(1.0)  # the submitting command's bus threads
    assert ran.code == 0, ran.err
    lines = ran.err.splitlines()
    assert lines and all(x.startswith("job 1: ") for x in lines), lines
    assert re.fullmatch(r"job 1: \d+% \S.*", lines[-1]), lines
    assert ran.out.startswith("stored dataset 'runs-pick': 20 rows"), ran.out
