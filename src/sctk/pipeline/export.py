"""A stored dataset out to a Parquet or CSV file, a partition at a time.

`sctk data export` and GET /api/v1/datasets/{name}/download share `chunks`: the bytes of the
exported file, produced in pieces so that neither holds more than one partition in memory.
A Parquet dataset exported as Parquet is its stored file itself (checked against its sha256
first), so the export's SHA-256 is the dataset's. CSV cells that a spreadsheet would run as
a formula are escaped, as every CSV sctk writes.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from sctk.errors import SctkError
from sctk.fsutil import make_temp, space_errors
from sctk.pipeline import store
from sctk.storage.models import Dataset

FORMATS = ("parquet", "csv")
_COPY = 1024 * 1024
# a file written once for a reader, not stored and hashed: fast compression (zstd took more
# CPU than the model on 12 million rows of float predictions, which barely compress), and no
# dictionaries: for float columns whose values never repeat the encoder hashed every value
# of a row group's first megabyte only to fall back to plain (0.34 against 0.13 CPU s per
# million rows of 13 columns, measured, issue 22)
FAST_PARQUET: dict[str, Any] = {"compression": "snappy", "use_dictionary": False}
BATCH_ROWS = 65_536  # rows converted at once: a CSV text of a million rows is ~10x its floats


def format_of(filename: str) -> str:
    """'parquet' or 'csv' from a file name's extension, or one sentence."""
    suffix = Path(filename).suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise SctkError(
            f"Cannot export to {Path(filename).name}: use a .parquet or .csv file name."
        )
    return suffix[1:]


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise SctkError(f"Unknown export format '{fmt}'; use parquet or csv.")
    return fmt


def check_readable(home: Path, ds: Dataset) -> None:
    """Refuse a dataset whose file is missing or changed, before any byte is sent."""
    check = store.verify(home, ds)
    if check.status != "ok":
        raise SctkError(
            f"Dataset '{ds.name}' failed verification ({check.detail}); restore it from a "
            "backup before exporting it."
        )


class _Sink(io.RawIOBase):
    """A write-only file whose bytes are taken out as they come (for the Parquet writer)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.position = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        chunk = bytes(data)
        self.parts.append(chunk)
        self.position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self.position

    def take(self) -> list[bytes]:
        """The pieces written since the last call (not joined: a row group is ~100 MB)."""
        out, self.parts = self.parts, []
        return out


def chunks(home: Path, ds: Dataset, fmt: str) -> Iterator[bytes]:
    """The bytes of DS exported as FMT ('parquet' or 'csv'), piece by piece."""
    check_format(fmt)
    if fmt == "parquet" and ds.format == "parquet":
        with store.dataset_file(home, ds).open("rb") as fh:
            while piece := fh.read(_COPY):
                yield piece
        return
    yield from frame_chunks(store.iter_frames(home, ds, BATCH_ROWS), fmt)


def frame_chunks(
    frames: Iterable[Any], fmt: str, options: dict[str, Any] | None = None
) -> Iterator[bytes]:
    """The bytes of a .parquet or .csv file holding FRAMES (DataFrames or Arrow tables, one
    table), piece by piece; OPTIONS are the Parquet writer's (default: those of stored
    datasets)."""
    check_format(fmt)
    if fmt == "parquet":
        sink = _Sink()
        for _rows in store.write_parquet(
            sink, frames, store.PARTITION_ROWS, options or store.PARQUET_OPTIONS
        ):
            yield from sink.take()
        yield from sink.take()  # the footer, or nothing for no frames at all
        return
    from sctk.security.spreadsheet import escape_frame

    header = True
    for frame in _csv_batches(frames):
        text = escape_frame(frame).to_csv(index=False, header=header)
        header = False
        yield text.encode("utf-8")


def _csv_batches(frames: Iterable[Any]) -> Iterator[pd.DataFrame]:
    """FRAMES as DataFrames of at most BATCH_ROWS rows (the CSV text of a batch is about ten
    times its floats)."""
    for frame in frames:
        if isinstance(frame, pd.DataFrame):
            yield frame
            continue
        if frame.num_rows == 0:
            yield frame.to_pandas()
        for start in range(0, frame.num_rows, BATCH_ROWS):
            yield frame.slice(start, BATCH_ROWS).to_pandas()


def ahead(items: Iterable[Any], depth: int = 1) -> Iterator[Any]:
    """ITEMS, produced on a thread DEPTH items ahead of the consumer: reading and predicting
    (NumPy, torch, Arrow all release the GIL) then overlap with encoding and writing. An
    error of the producer is raised in the consumer; a consumer that stops early stops it."""
    import queue
    import threading

    done = object()
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        slots.put((item, None), timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slots.put((done, None))
        except BaseException as exc:  # handed to the consumer
            slots.put((done, exc))

    thread = threading.Thread(target=produce, name="sctk-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, error = slots.get()
            if item is done:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        thread.join()


def write_file(pieces: Iterable[bytes], out: Path) -> int:
    """Write PIECES to the file OUT atomically (a temporary file, fsync, rename); the bytes
    written. A failure midway leaves no file behind."""

    def fill(tmp: Path) -> None:
        with tmp.open("wb") as fh:
            for piece in pieces:
                fh.write(piece)

    return _atomically(out, fill)


def write_parquet(frames: Iterable[Any], out: Path, options: dict[str, Any]) -> int:
    """Write FRAMES (DataFrames or Arrow tables, one table in batches) to the Parquet file
    OUT with OPTIONS, atomically, each batch a row group as it comes (none is held back to
    make bigger ones: a row group of a million rows of 13 columns held 100 MB, over the
    memory goal of issue 22); the bytes written. Arrow writes the file itself, without a
    Python file object between (each page was copied through one)."""

    def fill(tmp: Path) -> None:
        for _rows in store.write_parquet(str(tmp), frames, None, options):
            pass

    return _atomically(out, fill)


def _atomically(out: Path, fill) -> int:
    """FILL (a function writing the file at the path it is given) run on a temporary file
    next to OUT, fsynced and renamed to OUT; the file's size. A failure midway leaves no
    file behind."""
    directory = out.parent if str(out.parent) else Path(".")
    if not directory.is_dir():
        raise SctkError(f"The directory {directory} does not exist; create it first.")
    with space_errors(directory, out.name):
        fd, tmp = make_temp(directory, out.name)
        os.close(fd)
        try:
            fill(tmp)
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
                size = os.fstat(fd).st_size
            finally:
                os.close(fd)
            os.replace(tmp, out)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return size


def export(home: Path, ds: Dataset, out: Path) -> int:
    """Write DS to the file OUT (.parquet or .csv) atomically; the bytes written."""
    fmt = format_of(out.name)
    directory = out.parent if str(out.parent) else Path(".")
    if not directory.is_dir():
        raise SctkError(f"The directory {directory} does not exist; create it first.")
    check_readable(home, ds)
    return write_file(chunks(home, ds, fmt), out)
