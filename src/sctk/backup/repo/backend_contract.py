"""What a repository's storage must do: the contract every backend keeps (a local directory
and any fsspec file system today; a new kind of storage implements these and nothing else).

Names are posix paths relative to the repository root ("config", "data/ab/ab12..."). Every
method that fails for a reason the user can act on raises RepoError with one sentence; a
name that does not exist raises FileNotFoundError where a method says so, so callers can
tell "gone" from "broken".
"""

from __future__ import annotations

from typing import Protocol


class PackFile(Protocol):
    """One pack being written piece by piece; it appears under its name only at commit."""

    def append(self, parts) -> None:
        """Add PARTS (bytes-like, in order) to the end; RepoError if they cannot be kept."""

    def read(self, offset: int, length: int) -> bytes:
        """LENGTH bytes appended earlier, from OFFSET (a snapshot's file list reads back the
        pieces it has written while it merges in the next ones)."""

    def commit(self, name: str) -> None:
        """Make the file durable under NAME, whole; afterwards nothing is left to discard.
        On failure nothing is under NAME and the pieces are gone."""

    def discard(self) -> None:
        """Drop what was appended (never raises; a second call does nothing)."""


class Backend(Protocol):
    url: str
    # Files reachable as plain files under `root` (a Path): readers then open packs
    # themselves and read in place instead of asking for each range.
    local: bool
    # A pack being written is held in memory until its commit (remote storage): the pack
    # writer bounds how many wait and uploads several at once to fill the link.
    packs_in_memory: bool

    def probe(self) -> str:
        """'missing', 'empty' or 'present'; RepoError if the location cannot be a repository
        (a file, unreachable, denied)."""

    def read(self, name: str) -> bytes:
        """The whole file; FileNotFoundError if it does not exist."""

    def read_range(self, name: str, offset: int, length: int) -> bytes:
        """LENGTH bytes from OFFSET (fewer only at the end of the file); FileNotFoundError
        if it does not exist."""

    def write(self, name: str, data: bytes | bytearray | memoryview, durable: bool = True) -> None:
        """Store DATA under NAME atomically: a reader sees the old state or all of DATA, never
        part of it; DURABLE: on stable storage before returning."""

    def new_pack(self, folder: str) -> PackFile:
        """A pack file to fill in FOLDER; nothing shows under a real name before commit."""

    def list(self, prefix: str) -> dict[str, int]:
        """Every finished file under the folder PREFIX: name -> size (no temporaries)."""

    def forget_listings(self) -> None:
        """Forget anything cached about listings (another process may have written since)."""

    def temporaries(self) -> list[str]:
        """Temporary files an interrupted write left behind."""

    def size(self, name: str) -> int | None:
        """The file's size, or None if it does not exist."""

    def delete(self, name: str) -> None:
        """Remove NAME; a missing file is not an error."""

    def mkdir_root(self) -> None:
        """Create the repository's root (and its parents) if missing."""

    def close(self) -> None:
        """Release connections; the backend is not used afterwards."""
