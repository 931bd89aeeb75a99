"""A worker process's own side of the engine's worker processes (workerprocs.py starts them):
the frames on its stdin and stdout, and its main loop.

Apart from the starting side so that a worker imports only what it runs: this module needs
os, pickle, signal and struct, and each kind of worker its work's libraries (checkprocs.py,
batchseal.py). The starting side's subprocess, threading and concurrent.futures (which
imports logging) cost each worker ~1.5 MiB of its own memory and ~10 ms at its start;
pathlib, shutil and tempfile, imported before by the modules a verify worker runs, as much
again (benchmarks/RESULTS.md, "Verify workers trimmed").
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
from collections.abc import Callable

FRAME = struct.Struct("<II")  # the lengths of a frame's pickle and of its raw bytes


class WorkerFailed(Exception):
    """A worker process met an error it could not answer a batch with (a file's or a chunk's
    own errors are answers)."""


def send(out, obj, raw: bytes = b"") -> None:
    """A frame: OBJ pickled, then RAW as it is (bulk bytes, such as sealed chunks, are not
    copied into the pickle and out again)."""
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    out.write(FRAME.pack(len(data), len(raw)))
    out.write(data)
    if raw:
        out.write(raw)
    out.flush()


def receive(inp) -> tuple | None:
    """The next frame's (object, raw bytes), or None at the end of the stream."""
    head = inp.read(FRAME.size)
    if len(head) < FRAME.size:
        return None
    n, m = FRAME.unpack(head)
    data = inp.read(n)
    raw = bytearray(m)
    got = inp.readinto(raw) if m else 0
    if len(data) < n or got < m:
        return None
    return pickle.loads(data), raw


def serve(setup: Callable, work: Callable) -> None:
    """A worker process's main loop: STATE = SETUP(the first frame's object), then for each
    batch WORK(STATE, batch) gives the answer's (object, raw bytes), until the caller closes
    its stdin (or dies). An exception WORK raises is answered as a WorkerFailed."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the caller's process handles Ctrl-C
    inp = os.fdopen(os.dup(0), "rb")
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # nothing printed may reach the caller's channel
    init, _ = receive(inp)
    state = setup(init)
    send(out, "ready")
    while (batch := receive(inp)) is not None:
        try:
            got, raw = work(state, batch[0])
        except Exception as exc:  # e.g. MemoryError: the caller fails its pass with it
            got, raw = WorkerFailed(f"{type(exc).__name__}: {exc}"), b""
        send(out, got, raw)
