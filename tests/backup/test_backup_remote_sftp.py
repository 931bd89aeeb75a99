"""Backup repositories and copies on a real SFTP server: Debian's OpenSSH sshd on a loopback
port, run by the test as the current user with a generated host key and user key, stopped
and started again in the middle of a copy and of a backup."""

from __future__ import annotations

import os

import fsspec
import pytest

from sctk.backup.location import init_repo
from sctk.backup.repo import remote_io
from sctk.ops.doctor import diagnose
from sctk.runtime import Runtime
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
    found = {f.name: f for f in diagnose(Runtime(stranger), ["startup"])}
    assert found["backup_remote_credentials"].severity == "fail"

    nowhere = url.replace(f":{server.port}/", f":{free_port()}/")
    scenario.configure(home, nowhere, {"sftp": server.options()})
    unreachable = run_sctk("backup", "list", home=home, env=ENV)
    assert_cli_error(unreachable, "Cannot reach repository")


def test_whole_and_ranged_sftp_transfers_match_fsspecs_own(sftp, backend, tmp_path):
    # remote_io keeps many SFTP requests in flight; what it reads and writes must be what
    # fsspec's one-request-at-a-time calls read and write, ranges at the edges included.
    # (`backend`: the module's tests are parametrised by database; this one needs none.)
    server, _ = sftp
    fs = fsspec.filesystem(
        "sftp", host="127.0.0.1", port=server.port, username=server.user, **server.options()
    )
    blob = os.urandom(300_000)
    ours, theirs = str(tmp_path / "ours.bin"), str(tmp_path / "theirs.bin")
    remote_io.put(fs, ours, blob)
    fs.pipe_file(theirs, blob)
    assert (tmp_path / "ours.bin").read_bytes() == blob == (tmp_path / "theirs.bin").read_bytes()
    assert remote_io.get(fs, ours) == blob
    ranges = [(0, 10), (5, None), (None, 7), (-10, None), (299_990, 10**9), (20, 10), (0, -5)]
    for start, end in ranges:
        # the meaning of a Python slice; fsspec's own SFTP call agrees where it works (it
        # fails on negative positions and reads to the end when END is before START)
        assert remote_io.get(fs, ours, start, end) == blob[start:end], (start, end)
        if (start or 0) >= 0 and (end is None or end >= (start or 0)):
            assert fs.cat_file(theirs, start=start, end=end) == blob[start:end]
    with pytest.raises(FileNotFoundError):
        remote_io.get(fs, str(tmp_path / "missing.bin"))
