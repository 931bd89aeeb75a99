"""Secrets for CLI commands come from a prompt, standard input or a file: never from argv,
which every user of the machine can read in the process list and which shells keep in their
history."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from sctk.errors import SctkError


def stdin_option(flag: str, what: str) -> bool:
    return typer.Option(False, flag, help=f"Read the {what} from the first line of stdin.")


def file_option(flag: str, what: str) -> Path | None:
    return typer.Option(
        None, flag, help=f"Read the {what} from the first line of this file.", dir_okay=False
    )


def refused_on_argv(what: str, flag: str) -> SctkError:
    return SctkError(
        f"The {what} is not taken on the command line, where other users can read it; "
        f"use {flag}-stdin, {flag}-file PATH or answer the prompt."
    )


def _first_line(text: str, what: str, source: str) -> str:
    line = text.split("\n", 1)[0].rstrip("\r")
    if not line:
        raise SctkError(f"No {what} in {source}; put it on the first line.")
    return line


def read_secret(
    what: str, flag: str, *, from_stdin: bool, from_file: Path | None, confirm: bool
) -> str:
    """The secret WHAT from stdin (FROM_STDIN), a file (FROM_FILE) or, with neither, a
    hidden prompt (asked twice when CONFIRM). FLAG is the options' stem, e.g. --password."""
    if from_stdin and from_file is not None:
        raise SctkError(f"Give {flag}-stdin or {flag}-file, not both.")
    if from_stdin:
        return _first_line(sys.stdin.read(), what, "standard input")
    if from_file is not None:
        try:
            text = from_file.read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
            raise SctkError(f"Cannot read the {what} from {from_file}: {why}.") from None
        return _first_line(text, what, str(from_file))
    return typer.prompt(what.capitalize(), hide_input=True, confirmation_prompt=confirm)
