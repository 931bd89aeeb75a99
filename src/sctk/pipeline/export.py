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
# CPU than the model on 12 million rows of float predictions, which barely compress)
FAST_PARQUET: dict[str, Any] = {"compression": "snappy"}
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

    def take(self) -> bytes:
        out = b"".join(self.parts)
        self.parts = []
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
    frames: Iterable[pd.DataFrame], fmt: str, options: dict[str, Any] | None = None
) -> Iterator[bytes]:
    """The bytes of a .parquet or .csv file holding FRAMES (one table), piece by piece;
    OPTIONS are the Parquet writer's (default: those of stored datasets)."""
    check_format(fmt)
    if fmt == "parquet":
        yield from _parquet_chunks(frames, options or store.PARQUET_OPTIONS)
        return
    from sctk.security.spreadsheet import escape_frame

    header = True
    for frame in frames:
        text = escape_frame(frame).to_csv(index=False, header=header)
        header = False
        yield text.encode("utf-8")


def _parquet_chunks(frames: Iterable[pd.DataFrame], options: dict[str, Any]) -> Iterator[bytes]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = _Sink()
    writer = None
    for frame in frames:
        table = pa.Table.from_pandas(frame, preserve_index=False)
        if writer is None:
            writer = pq.ParquetWriter(sink, table.schema, **options)
        writer.write_table(table, row_group_size=store.PARTITION_ROWS)
        yield sink.take()
    if writer is not None:
        writer.close()
    yield sink.take()


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
    directory = out.parent if str(out.parent) else Path(".")
    if not directory.is_dir():
        raise SctkError(f"The directory {directory} does not exist; create it first.")
    written = 0
    with space_errors(directory, out.name):
        fd, tmp = make_temp(directory, out.name)
        try:
            with os.fdopen(fd, "wb") as fh:
                for piece in pieces:
                    fh.write(piece)
                    written += len(piece)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, out)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return written


def export(home: Path, ds: Dataset, out: Path) -> int:
    """Write DS to the file OUT (.parquet or .csv) atomically; the bytes written."""
    fmt = format_of(out.name)
    directory = out.parent if str(out.parent) else Path(".")
    if not directory.is_dir():
        raise SctkError(f"The directory {directory} does not exist; create it first.")
    check_readable(home, ds)
    return write_file(chunks(home, ds, fmt), out)
