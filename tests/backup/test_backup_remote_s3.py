"""Backup repositories and copies on a real S3 API server: moto's standalone server on a
loopback port (IAM authentication on), reached through a relay whose link the tests cut."""

from __future__ import annotations

import logging
import os

import pytest

from sctk import config
from sctk.backup.create import create_backup
from sctk.backup.location import init_repo, open_repo
from sctk.backup.verify import verify_backup
from sctk.ops.doctor import diagnose
from sctk.runtime import Runtime
from tests.backup import remote_scenarios as scenario
from tests.backup.backup_support import ENV, set_passphrase
from tests.backup.remote_servers import MotoServer, Relay
from tests.helpers import free_port, run_sctk
from tests.security.conftest import assert_cli_error, sqlite_only

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("moto"), sqlite_only]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = MotoServer(tmp_path_factory.mktemp("moto"))
    relay = Relay(server.port)
    try:
        yield server, relay
    finally:
        relay.cut()
        server.stop()


@pytest.fixture
def aws(s3, monkeypatch):
    """The conventional AWS variables (AWS_ENDPOINT_URL included) point at the relay."""
    server, relay = s3
    for name, value in server.env(f"http://127.0.0.1:{relay.port}").items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    set_passphrase(monkeypatch)
    return relay


@pytest.fixture
def runtime_of():
    """Runtimes for the settings a test makes itself, closed after it."""
    made: list[Runtime] = []

    def make(settings) -> Runtime:
        made.append(Runtime(settings))
        return made[-1]

    yield make
    for rt in made:
        rt.close()


def test_s3_repository_init_create_list_verify_prune_restore_copy(home, tmp_path, aws):
    settings = scenario.configure(home, "s3://life/repo")
    scenario.lifecycle(home, settings, "s3://life-copy/mirror", tmp_path)


def test_s3_copy_continues_after_the_link_drops(home, aws):
    settings = scenario.configure(home, str(home / "backups"))
    scenario.interrupted_copy(settings, "s3://dropped-copy/mirror", aws.cut, aws.restore)


def test_s3_backup_continues_after_the_link_drops(home, aws):
    settings = scenario.configure(home, "s3://dropped-backup/repo")
    init_repo(settings)
    scenario.interrupted_backup(settings, aws.cut, aws.restore)


def test_s3_backup_rides_out_a_short_drop(home, aws, runtime_of):
    """Each remote operation is tried again with backoff: a link that comes back before the
    attempts run out costs a backup nothing."""
    settings = scenario.configure(home, "s3://short-drop/repo", attempts=4, backoff=0.1)
    rt = runtime_of(settings)
    init_repo(settings)
    (home / "data" / "some.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    retried: list[str] = []

    class LinkBack(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            retried.append(record.getMessage())
            aws.restore()  # the link returns while the engine waits to try again

    def drop(done: int, total: int | None) -> None:
        if not retried and aws.listening:
            aws.cut()  # the pack goes up, and the index and snapshot, with the link down

    handler = LinkBack(logging.INFO)
    logger = logging.getLogger("sctk.backup.repo.backend")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        snap = create_backup(rt, "daily", actor="tests", progress=drop)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        if not aws.listening:
            aws.restore()
    assert retried and "s3://short-drop/repo" in retried[0] and "attempt 2 of 4" in retried[0]
    assert [s.id for s in open_repo(settings).snapshots()] == [snap["id"]]
    assert verify_backup(rt, read_data=True, actor="tests")["ok"]


def test_s3_listing_is_read_once_per_command(home, aws, runtime_of):
    settings = scenario.configure(home, "s3://listed/repo")
    rt = runtime_of(settings)
    init_repo(settings)

    def lists_to_verify() -> int:
        before = aws.lists
        assert verify_backup(rt, actor="tests")["ok"]
        return aws.lists - before

    create_backup(rt, "daily", actor="tests")
    lists_to_verify()  # (the first also finds verified/ empty: s3fs asks once more then)
    with_one = lists_to_verify()
    for _ in range(2):
        create_backup(rt, "daily", actor="tests")
    assert lists_to_verify() == with_one, "verify lists the bucket once, not per snapshot"


def test_s3_refused_credentials_and_wrong_endpoint_each_one_sentence(home, s3, aws, monkeypatch):
    server, relay = s3
    settings = scenario.configure(home, "s3://named/repo")
    init_repo(settings)

    refused = run_sctk("backup", "list", home=home, env={**ENV, "AWS_SECRET_ACCESS_KEY": "nope"})
    assert_cli_error(refused, "refused the credentials")
    nowhere = f"http://127.0.0.1:{free_port()}"
    unreachable = run_sctk("backup", "list", home=home, env={**ENV, "AWS_ENDPOINT_URL": nowhere})
    message = assert_cli_error(unreachable, "Cannot reach repository s3://named/repo")
    assert nowhere in message

    def remote_finding(**env) -> tuple[str, str]:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        found = [
            f
            for f in diagnose(Runtime(settings), ["startup"])
            if f.name.startswith("backup_remote")
        ]
        assert len(found) == 1, found
        return found[0].name, found[0].severity

    assert remote_finding() == ("backup_remote", "ok")
    assert remote_finding(AWS_SECRET_ACCESS_KEY="nope") == ("backup_remote_credentials", "fail")
    assert remote_finding(AWS_ENDPOINT_URL=nowhere) == ("backup_remote_endpoint", "fail")
    settings = scenario.configure(home, "gcs://no-driver/repo")
    assert remote_finding() == ("backup_remote_driver", "fail")


def test_s3_credentials_from_storage_options_never_shown(home, s3, aws, monkeypatch, runtime_of):
    server, relay = s3
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name)
    options = {
        "s3": {
            "key": server.key_id,
            "secret": server.secret,
            "endpoint_url": f"http://127.0.0.1:{relay.port}",
        }
    }
    settings = scenario.configure(home, "s3://optioned/repo", options)
    rt = runtime_of(settings)
    init_repo(settings)
    assert create_backup(rt, "daily", actor="tests")["id"]
    shown = run_sctk("config", "show", "--json", home=home)
    assert shown.returncode == 0, shown.stderr
    assert server.secret not in shown.stdout and server.key_id not in shown.stdout
    rows = {k: v for k, v, _ in config.redacted(config.load(home))}
    assert rows["backup.storage_options.s3.secret"] == "**********"
