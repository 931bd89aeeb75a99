"""benchmarks/RESULTS.md: each benchmark script owns one '## ' section and replaces it."""

from __future__ import annotations

import os
import re
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
HEADER = (
    "# Benchmark results\n\n"
    "Figures produced by the scripts in this directory, run by hand on the machine named "
    "in each section; every section says how its figures are produced and the command "
    "that reproduces them. They compare against a named peer in the same run.\n\n"
)


def write_section(section: str, text: str) -> None:
    """Put TEXT (which starts with the SECTION heading) in place of that section, or append
    it; written atomically so an interrupted run never leaves a half file."""
    current = RESULTS.read_text() if RESULTS.exists() else HEADER
    pattern = re.compile(rf"^{re.escape(section)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(current):
        updated = pattern.sub(lambda _m: text.rstrip("\n") + "\n\n", current, count=1)
    else:
        updated = current.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n"
    tmp = RESULTS.with_suffix(".md.tmp")
    tmp.write_text(updated.rstrip("\n") + "\n")
    os.replace(tmp, RESULTS)
