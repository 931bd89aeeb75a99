"""docs/formats.md: every example in it runs as shown (its files written, its `$ sctk` lines
run through the CLI's entry point, their output and the stored datasets compared), and it
covers every op with its keys, every dtype and every check the code knows."""

from __future__ import annotations

import io
import math
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from sctk.cli import common, main
from sctk.pipeline import expressions, schema, store, transforms
from sctk.storage.engine import make_engine, session_scope
from tests.security.conftest import sqlite_only

DOC = Path(__file__).resolve().parents[2] / "docs" / "formats.md"
FENCE = re.compile(r"^```(\w*)([^\n]*)\n(.*?)^```", re.M | re.S)


@dataclass
class Block:
    lang: str
    attrs: dict[str, str]
    text: str


def blocks() -> list[Block]:
    out = []
    for lang, info, text in FENCE.findall(DOC.read_text(encoding="utf-8")):
        attrs = dict(part.split("=", 1) for part in info.split() if "=" in part)
        out.append(Block(lang, attrs, text))
    return out


def section(title_start: str) -> str:
    """The doc's text from the heading that starts with TITLE_START to the next heading of
    that level or above."""
    text = DOC.read_text(encoding="utf-8")
    match = re.search(rf"^(#+) {re.escape(title_start)}.*$", text, re.M)
    assert match, title_start
    rest = text[match.end() :]
    end = re.search(rf"^#{{1,{len(match.group(1))}}} ", rest, re.M)
    return rest[: end.start()] if end else rest


def sessions(text: str) -> list[tuple[str, list[str]]]:
    """(command, expected output lines) for each `$ ` line of a console block."""
    out: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("$ "):
            out.append((line[2:], []))
        elif line.strip():
            out[-1][1].append(line)
    return out


def run(argv: list[str], capsys) -> tuple[int, list[str]]:
    capsys.readouterr()
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    captured = capsys.readouterr()
    # a run's log lines (stderr) come before its result (stdout), as on a terminal
    return code, [x for x in (captured.err + captured.out).splitlines() if x.strip()]


def same_cell(actual, expected: str) -> bool:
    try:
        return math.isclose(float(actual), float(expected), abs_tol=1e-4)
    except (TypeError, ValueError):
        return str(actual) == expected


def assert_dataset(settings, name: str, expected_csv: str) -> None:
    engine = make_engine(settings)
    try:
        with session_scope(engine) as s:
            frame = store.read(settings.home, store.get(s, name))
    finally:
        engine.dispose()
    expected = pd.read_csv(io.StringIO(expected_csv), dtype=str, keep_default_na=False)
    assert list(frame.columns) == list(expected.columns), name
    assert len(frame) == len(expected), name
    for col in expected.columns:
        for i, (got, want) in enumerate(zip(frame[col], expected[col], strict=True)):
            assert same_cell(got, want), (name, col, i + 1, got, want)


@sqlite_only
def test_every_example_in_the_formats_doc_runs_as_shown(settings, tmp_path, monkeypatch, capsys):
    # one line per sentence, as the doc shows it (the CLI's consoles may have been made, and
    # their width fixed, by an earlier test in this process: COLUMNS alone is not enough)
    monkeypatch.setenv("COLUMNS", "500")
    monkeypatch.setattr(common.console, "width", 500)
    monkeypatch.setattr(common.err_console, "width", 500)
    monkeypatch.setenv("SCTK_HOME", str(settings.home))
    monkeypatch.chdir(tmp_path)
    ran = results = 0
    for block in blocks():
        if "file" in block.attrs:
            (tmp_path / block.attrs["file"]).write_text(block.text, encoding="utf-8")
        elif "result" in block.attrs:
            assert_dataset(settings, block.attrs["result"], block.text)
            results += 1
        elif block.lang == "console":
            for command, expected in sessions(block.text):
                argv = shlex.split(command)
                assert argv[0] == "sctk", command
                code, lines = run(argv[1:], capsys)
                failing = bool(expected) and expected[0].startswith("Error: ")
                assert (code != 0) == failing, (command, code, lines)
                assert len(lines) == len(expected), (command, lines)
                for got, want in zip(lines, expected, strict=True):
                    if want.endswith("..."):
                        assert got.startswith(want[:-3].rstrip()), (command, got, want)
                    else:
                        assert got == want, (command, got, want)
                ran += 1
    assert ran >= 12 and results >= 8


def test_the_formats_doc_covers_every_op_dtype_and_check():
    schemas, pipelines = section("1. Schemas"), section("2. Pipelines")
    for dtype in schema.DTYPES:
        assert f"| `{dtype}` |" in schemas, dtype
    for key in (*schema.COLUMN_KEYS, *schema.TOP_KEYS):
        assert f"`{key}`" in schemas, key
    for policy in schema.EXTRA_POLICIES:
        assert f'"{policy}"' in schemas, policy
    for key in transforms.TOP_KEYS:
        assert f"| `{key}` |" in pipelines, key
    for op in transforms.OPS:
        required, optional = transforms.STEP_KEYS[op]
        row = next(x for x in pipelines.splitlines() if x.startswith(f"| `{op}` |"))
        for key in (*required, *optional):
            assert f"`{key}`" in row, (op, key)
        example = section(f"2.{transforms.OPS.index(op) + 1} `{op}`")
        assert f'op = "{op}"' in example, op  # and an example of it
    for method in transforms.NORMALISE_METHODS:
        assert f'"{method}"' in pipelines, method
    grammar = section("2.7 Expressions")
    for name in expressions.FUNCTIONS:
        assert f"`{name}" in grammar, name
    for name in expressions.CONSTANTS:
        assert f"`{name}`" in grammar, name


def test_the_formats_doc_toml_blocks_parse_as_what_they_show():
    """The outlines too, which no example runs (a typo shown as refused is refused)."""
    for block in (b for b in blocks() if b.lang == "toml"):
        name = block.attrs.get("file", "outline.toml")
        if "[[steps]]" not in block.text:
            schema.parse_schema(block.text.replace("[columns.NAME]", "[columns.x]"), name)
        elif name == "typo.toml":
            with pytest.raises(transforms.PipelineError):
                transforms.parse_pipeline(block.text, name)
        else:
            transforms.parse_pipeline(block.text, name)
