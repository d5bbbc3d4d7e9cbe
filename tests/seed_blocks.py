"""Extract the runnable code blocks of the seed documents in ``../shared/seeds``.

Seed 000 is Markdown with fenced ``python`` blocks. Seed 001 is a page scraped to
text: its code lost its indentation, so blocks are found (they start at a column-0
``from``/``import`` line and run to the first blank or indented line) and function
bodies are re-indented (a body ends with its ``return`` at bracket depth 0).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

# ``shared/`` sits beside the checkout on CI (and on the development machine); a user's
# clone has nothing beside it, and then every seed test is skipped, with this one reason.
# CRYSTALLIZE_SEEDS_DIR points elsewhere (tests/test_self_contained.py uses it to play a bare clone).
SEEDS_DIR = Path(os.environ.get("CRYSTALLIZE_SEEDS_DIR") or Path(__file__).resolve().parents[2] / "shared" / "seeds")
SEEDS_AVAILABLE = SEEDS_DIR.is_dir()
SKIP_REASON = "../shared/seeds is not beside this checkout (CI has it; a clone does not)"
requires_seeds = pytest.mark.skipif(not SEEDS_AVAILABLE, reason=SKIP_REASON)


def seed_files() -> list[Path]:
    return sorted(SEEDS_DIR.glob("*.txt"))


def fenced_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.S)


def _depth_change(line: str) -> int:
    stripped = re.sub(r"(\"[^\"]*\"|'[^']*')", "", line)
    return sum(stripped.count(c) for c in "([{") - sum(stripped.count(c) for c in ")]}")


def _reindent(lines: list[str]) -> str:
    out: list[str] = []
    in_body = False
    depth = 0
    for line in lines:
        indent = ""
        if in_body:
            indent = "    " if depth == 0 else "        "
        elif depth > 0:
            indent = "    "
        out.append(indent + line)
        starts_return = line.startswith("return") and depth == 0
        depth += _depth_change(line)
        if re.match(r"^(async\s+)?def\s.*:\s*$", line) and depth == 0:
            in_body = True
        elif in_body and starts_return and depth == 0:
            in_body = False
    return "\n".join(out) + "\n"


def flattened_blocks(text: str) -> list[str]:
    blocks: list[list[str]] = []
    current: list[str] | None = None
    for line in text.splitlines():
        if current is None:
            if re.match(r"^(from|import)\s+\w", line):
                current = [line]
        elif line.strip() and not line[0].isspace():
            current.append(line)
        else:
            blocks.append(current)
            current = None
            if re.match(r"^(from|import)\s+\w", line):
                current = [line]
    if current:
        blocks.append(current)
    return [_reindent(block) for block in blocks]


def seed_blocks(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    return fenced_blocks(text) or flattened_blocks(text)
