"""Backup repositories and copies on a real SFTP server: Debian's OpenSSH sshd on a loopback
port, run by the test as the current user with a generated host key and user key, stopped
and started again in the middle of a copy and of a backup."""

from __future__ import annotations

import pytest

from sctk.backup.location import init_repo
from sctk.ops.doctor import diagnose
from tests.backup import remote_scenarios as scenario
from tests.backup.backup_support import ENV, set_passphrase
from tests.backup.remote_servers import SshServer
from tests.helpers import free_port, run_sctk
from tests.security.conftest import assert_cli_error, sqlite_only

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("sshd"), sqlite_only]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    server = SshServer(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def sftp(sshd, monkeypatch, tmp_path):
    """The repository's place on the server, and the options naming the user key."""
    set_passphrase(monkeypatch)
    for name in ("SSH_AUTH_SOCK",):
        monkeypatch.delenv(name, raising=False)
    return sshd, tmp_path / "srv"


def test_sftp_repository_init_create_list_verify_prune_restore_copy(home, tmp_path, sftp):
    server, srv = sftp
    settings = scenario.configure(home, server.url(srv / "repo"), {"sftp": server.options()})
    scenario.lifecycle(home, settings, server.url(srv / "mirror"), tmp_path)


def test_sftp_copy_continues_after_the_server_restarts(home, sftp):
    server, srv = sftp
    settings = scenario.configure(home, str(home / "backups"), {"sftp": server.options()})
    scenario.interrupted_copy(settings, server.url(srv / "mirror"), server.stop, server.start)


def test_sftp_backup_continues_after_the_server_restarts(home, sftp):
    server, srv = sftp
    settings = scenario.configure(home, server.url(srv / "repo"), {"sftp": server.options()})
    init_repo(settings)
    scenario.interrupted_backup(settings, server.stop, server.start)


def test_sftp_refused_key_and_unreachable_host_each_one_sentence(home, sftp):
    server, srv = sftp
    url = server.url(srv / "repo")
    settings = scenario.configure(home, url, {"sftp": server.options()})
    init_repo(settings)

    scenario.configure(home, url, {"sftp": server.options("stranger_key")})
    refused = run_sctk("backup", "list", home=home, env=ENV)
    assert_cli_error(refused, "refused the credentials")
    stranger = scenario.configure(home, url, {"sftp": server.options("stranger_key")})
    found = {f.name: f for f in diagnose(stranger, ["startup"])}
    assert found["backup_remote_credentials"].severity == "fail"

    nowhere = url.replace(f":{server.port}/", f":{free_port()}/")
    scenario.configure(home, nowhere, {"sftp": server.options()})
    unreachable = run_sctk("backup", "list", home=home, env=ENV)
    assert_cli_error(unreachable, "Cannot reach repository")
