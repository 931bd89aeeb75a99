"""`sctk serve` keeps its record in <home>/tmp/serve/<pid> while it runs, which `sctk restore`
consults; the file goes when the service stops, and a stale one does not count."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from sctk import runstate
from sctk.ops.init_home import init_home
from tests.helpers import free_port, wait_until


def test_serve_writes_its_pid_and_clears_it_at_exit(tmp_path):
    home = tmp_path / "home"
    init_home(home)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCTK_")}
    env.update(
        SCTK_HOME=str(home), SCTK_JOBS__WORKERS="0", SCTK_ADMIN_PASSWORD="Basalt-Orchid-7781"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "sctk", "serve", "--port", str(free_port())],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: runstate.running_pid(home) == proc.pid, timeout=60, what="the pid file")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGTERM  # still ends as a SIGTERM'd service does
    assert not runstate.pid_path(home).exists()
    assert runstate.running_pid(home) is None


def test_stale_or_foreign_pid_files(tmp_path):
    home = tmp_path / "home"
    assert runstate.running_pid(home) is None  # no file
    runstate.write_pid(home, pid=2**22 + 12345)  # above pid_max: no such process
    assert runstate.running_pid(home) is None
    runstate.clear_pid(home)  # another process's record: left alone
    assert runstate.pid_path(home, 2**22 + 12345).exists()
    (runstate.run_dir(home) / "not-a-pid").write_text("all\n")
    assert runstate.running_pid(home) is None
    assert runstate.clean_stale(home) == [runstate.pid_path(home, 2**22 + 12345)]
    runstate.write_pid(home)
    assert runstate.running_pid(home) == os.getpid()
    runstate.clear_pid(home)
    assert not runstate.pid_path(home).exists()
