"""Structured logging: JSON lines to <home>/logs/sctk.log, rotated by size; text on the console.

A request id, set per API request in a context variable, is attached to every line logged
while that request is handled.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import json
import logging
import logging.handlers
from datetime import UTC, datetime
from pathlib import Path

from sctk.config import Settings

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

LOG_FILE = "sctk.log"
_HANDLER_MARK = "_sctk_handler"
# Attributes every LogRecord has; anything else was passed through `extra=` and is kept.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    # The access log writes a line per request: the timestamp's date and time are formatted
    # once a second and only the milliseconds per line (isoformat costs as much as the rest).
    # One tuple, read and replaced whole, so that threads sharing the formatter never pair
    # one second with another's text.
    _second_text: tuple[int, str] = (-1, "")

    def _time(self, created: float) -> str:
        second = int(created)
        cached, text = self._second_text
        if cached != second:
            text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._second_text = (second, text)
        return f"{text}.{int((created - second) * 1000):03d}+00:00"

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self._time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if getattr(record, "request_id", None):
            entry["request_id"] = record.request_id
        for key, value in vars(record).items():
            if key not in _STANDARD and key != "request_id":
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class LogFileHandler(logging.handlers.RotatingFileHandler):
    """Size-rotated log file that formats each record once.

    The standard handler formats a record twice (once to decide whether to roll over, once
    to write it) and stats the file per record; on the API's access log that was most of the
    cost of answering a trivial request.
    """

    # records dropped while the disk was full; counted, and said once space returns
    dropped = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
            if self.stream is None:
                self.stream = self._open()
            if self.dropped:
                line = self._dropped_notice() + line
            if self.maxBytes > 0:
                # seek to the end first: other processes (uvicorn workers) append too
                self.stream.seek(0, 2)
                if self.stream.tell() + len(line) >= self.maxBytes:
                    self.doRollover()
            self.stream.write(line)
            self.stream.flush()
            self.dropped = 0
        except RecursionError:
            raise
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                self.handleError(record)
                return
            # a full disk must not print a traceback per record nor stop the service: the
            # record is dropped, and the half-written buffer with it
            self.dropped += 1
            self._discard_stream()
        except Exception:
            self.handleError(record)

    def _dropped_notice(self) -> str:
        # the failed write may have left half a line: end it, so the next line stands alone
        self.stream.seek(0, 2)
        torn = self.stream.tell() > 0 and not self._ends_with_newline()
        notice = logging.makeLogRecord(
            {
                "name": __name__,
                "levelno": logging.WARNING,
                "levelname": "WARNING",
                "msg": "%d log record(s) dropped while the disk was full",
                "args": (self.dropped,),
            }
        )
        return ("\n" if torn else "") + self.format(notice) + self.terminator

    def _ends_with_newline(self) -> bool:
        with open(self.baseFilename, "rb") as fh:
            fh.seek(-1, 2)
            return fh.read(1) == b"\n"

    def _discard_stream(self) -> None:
        stream, self.stream = self.stream, None
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


class ConsoleFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        rid = getattr(record, "request_id", None)
        return f"{line} [request {rid}]" if rid else line


def configure(
    settings: Settings, console: bool = True, console_level: str = "WARNING"
) -> Path | None:
    """Install sctk's handlers on the root logger (once per process; safe to call again)."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(settings.log.level)
    # Neither formatter prints the caller's file and line or the process and thread names:
    # not looking them up saves a stack walk per record (the logging HOWTO's advice).
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    log_dir = settings.home / "logs"
    path: Path | None = None
    if log_dir.is_dir():
        path = log_dir / LOG_FILE
        file_handler = LogFileHandler(
            path,
            maxBytes=settings.log.max_bytes,
            backupCount=settings.log.backup_count,
            encoding="utf-8",
        )
        file_handler.setFormatter(JsonFormatter())
        file_handler.addFilter(RequestIdFilter())
        setattr(file_handler, _HANDLER_MARK, True)
        root.addHandler(file_handler)
    if console:
        stream = logging.StreamHandler()
        stream.setFormatter(ConsoleFormatter())
        stream.addFilter(RequestIdFilter())
        # the console is for people: by default only what needs attention
        level = max(logging.getLevelName(console_level), logging.getLevelName(settings.log.level))
        stream.setLevel(level)
        setattr(stream, _HANDLER_MARK, True)
        root.addHandler(stream)
    return path
