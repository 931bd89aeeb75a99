"""How `--help` reads: flags without a value placeholder, values named in words, and help text
shown as written.

Typer's rich help prints the Python type after every option (`--wait <bool>`,
`--data <str>`), which reads as if every flag took a value; and it reads help text as rich
markup, so "(or a [model] table)" loses "[model]". `tidy()` fixes both on a built command
tree: a flag gets no placeholder, an option that takes a value gets a word (TEXT, INTEGER,
PATH, the choices), an argument its name in capitals, and every help text is escaped.
"""

from __future__ import annotations

import click
from rich.markup import escape

# typer's type label -> the word shown after an option that takes such a value
WORDS = {
    "str": "TEXT",
    "int": "INTEGER",
    "float": "NUMBER",
    "bool": "BOOLEAN",
    "path": "PATH",
    "file": "FILE",
    "directory": "DIRECTORY",
    "datetime": "DATETIME",
}
_DONE = "_sctk_help_tidied"


def placeholder(param: click.Parameter, ctx: click.Context) -> str:
    """What --help shows after PARAM: nothing for a flag, else a word for its value."""
    # duck-typed: typer builds its commands with a click of its own
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        return ""
    if param.param_type_name == "argument":
        return (param.name or "value").upper()
    display = getattr(param, "display_type", None)
    label = display(ctx).strip("<>") if display else param.type.name
    if label.startswith("list[") and label.endswith("]"):
        label = label[5:-1]  # a repeatable option: one value per use
    if "|" in label:  # choices are shown as they are typed
        return label
    label = label.removesuffix(" range")  # the range itself is shown beside it
    return WORDS.get(label, label.upper())


def _no_type(ctx: click.Context) -> str:
    return ""


def tidy_params(params: list[click.Parameter], ctx: click.Context) -> None:
    for param in params:
        if getattr(param, _DONE, False):
            continue
        if param.metavar is None:
            param.metavar = placeholder(param, ctx)
        if param.param_type_name == "argument":
            # typer prints an argument's Python type beside its name whatever its metavar:
            # the name in capitals says it already
            param.display_type_rich = _no_type  # type: ignore[method-assign]
        help_text = getattr(param, "help", None)
        if help_text:
            param.help = escape(help_text)  # type: ignore[attr-defined]
        setattr(param, _DONE, True)


def tidy(command: click.Command) -> click.Command:
    """Tidy COMMAND's help and that of every command under it; returns COMMAND."""
    if getattr(command, _DONE, False):
        return command
    ctx = command.context_class(command)
    for attr in ("help", "short_help", "epilog"):
        text = getattr(command, attr, None)
        if text:
            setattr(command, attr, escape(text))
    # get_params adds the --help option, built lazily: tidied with the rest
    tidy_params(command.get_params(ctx), ctx)
    setattr(command, _DONE, True)
    for sub in getattr(command, "commands", {}).values():
        tidy(sub)
    return command
