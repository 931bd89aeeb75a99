"""One served sctk (real HTTP, a job worker) shared by the client tests and the notebook's
(one xdist group, so one worker runs both): the client is tested against the real thing,
and its job process, once it has imported torch, trains a tiny model in about a second."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from sctk import config
from sctk.config import Settings
from sctk.ops.init_home import init_home
from sctk.storage.engine import make_engine
from tests.helpers import LiveServer
from tests.security.conftest import ACCOUNTS, Account, create_user
from tests.web.conftest import FAST_JOBS


@dataclass
class Served:
    url: str
    settings: Settings
    accounts: dict[str, Account]


@pytest.fixture(scope="package")
def served(tmp_path_factory) -> Iterator[Served]:
    """sctk on a fresh SQLite data directory, one account per role, jobs run in-process."""
    from sctk.api.app import create_app

    home = tmp_path_factory.mktemp("client") / "home"
    init_home(home)
    settings = config.load(home, FAST_JOBS).settings
    engine = make_engine(settings)
    for account in ACCOUNTS.values():
        create_user(engine, account.username, account.password, account.role)
    engine.dispose()
    with LiveServer(create_app(settings, workers=1)) as server:
        yield Served(server.url, settings, dict(ACCOUNTS))
