"""Every backend keeps the storage contract (backend_contract.Backend): the same calls give
the same answers on a local directory and on an fsspec file system, and a pack file shows
under its name only once committed, whole, or not at all."""

from __future__ import annotations

import inspect
import uuid

import pytest

from sctk.backup.repo.backend import open_backend
from sctk.backup.repo.backend_contract import Backend, PackFile


@pytest.fixture(params=["local", "memory"])
def backend(request, tmp_path) -> Backend:
    url = str(tmp_path / "repo") if request.param == "local" else f"memory://{uuid.uuid4().hex}"
    made = open_backend(url)
    made.mkdir_root()
    yield made
    made.close()


def _members(protocol) -> set[str]:
    """The contract's methods and declared attributes."""
    methods = {n for n, v in vars(protocol).items() if inspect.isfunction(v) and n[0] != "_"}
    return methods | set(vars(protocol).get("__annotations__", {}))


def test_each_backend_has_every_member_of_the_contract_with_its_signature(backend):
    for name in _members(Backend):
        assert hasattr(backend, name), f"{type(backend).__name__} lacks {name}"
        wanted = getattr(Backend, name, None)
        if inspect.isfunction(wanted):
            have = inspect.signature(getattr(type(backend), name))
            assert list(have.parameters) == list(inspect.signature(wanted).parameters), name
    pack = backend.new_pack("data")
    for name in _members(PackFile):
        assert callable(getattr(pack, name)), f"{type(pack).__name__} lacks {name}"


def test_files_are_written_whole_and_listed_without_temporaries(backend):
    assert backend.probe() == "empty"
    backend.write("config", b"abc")
    assert backend.read("config") == b"abc"
    assert backend.read_range("config", 1, 5) == b"bc"
    assert backend.size("config") == 3 and backend.size("nothing") is None
    with pytest.raises(FileNotFoundError):
        backend.read("nothing")
    pack = backend.new_pack("data")
    pack.append([b"he", b"llo"])
    pack.append([memoryview(b" world")])
    assert backend.list("data") == {}  # nothing under a real name before the commit
    pack.commit("data/ab/ab01")
    backend.forget_listings()
    assert backend.list("data") == {"data/ab/ab01": 11}
    assert backend.read("data/ab/ab01") == b"hello world"
    assert backend.temporaries() == []
    assert backend.probe() == "present"
    backend.delete("data/ab/ab01")
    backend.delete("data/ab/ab01")  # gone already: not an error
    backend.forget_listings()
    assert backend.list("data") == {}


def test_a_discarded_pack_leaves_nothing(backend):
    pack = backend.new_pack("data")
    pack.append([b"x" * 1000])
    pack.discard()
    pack.discard()  # twice: nothing happens
    backend.forget_listings()
    assert backend.list("data") == {} and backend.temporaries() == []
    empty = backend.new_pack("data")
    empty.discard()  # never written to: nothing to drop
    assert backend.temporaries() == []


@pytest.mark.parametrize("spill", [False, True])
def test_a_pack_reads_back_what_it_was_given(backend, monkeypatch, spill):
    from sctk.backup.repo import backend as backend_mod

    if spill:  # a remote pack past the threshold waits in a local temporary file
        monkeypatch.setattr(backend_mod, "SPILL_BYTES", 4)
    pack = backend.new_pack("snapshots")
    assert pack.read(0, 4) == b""
    pack.append([b"piece-one|"])
    pack.append([b"piece-two|", b"tail"])
    assert pack.read(6, 3) == b"one" and pack.read(16, 3) == b"two"
    pack.append([b"!"])
    assert pack.read(20, 10) == b"tail!"
    pack.commit("snapshots/s1")
    assert backend.read("snapshots/s1") == b"piece-one|piece-two|tail!"
