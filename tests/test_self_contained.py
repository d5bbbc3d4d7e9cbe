"""A clone tests itself: nothing in the suite needs a file outside the repository."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from seed_blocks import SKIP_REASON

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


def test_seed_tests_skip_with_one_reason_when_the_seeds_are_absent(tmp_path: Path) -> None:
    """Play a user's bare clone: point the seeds folder at an empty place and run the seed tests."""
    env = {**os.environ, "CRYSTALLIZE_SEEDS_DIR": str(tmp_path / "no-seeds-here")}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(TESTS / "test_seeds.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    summary = done.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"=* ?\d+ skipped in [\d.]+s ?=*", summary), summary
    assert "passed" not in summary and "error" not in summary
    assert SKIP_REASON in done.stdout


def test_only_the_seed_helper_looks_outside_the_repository() -> None:
    """Paths that climb out of the checkout (parents[2], '../shared') appear in one place only."""
    climbing = re.compile(r"parents\[[2-9]\]|\.\./shared|/shared/seeds")
    offenders = [
        path.name
        for path in sorted(TESTS.glob("*.py"))
        if path.name not in {"seed_blocks.py", Path(__file__).name} and climbing.search(path.read_text())
    ]
    assert offenders == []
    assert climbing.search((TESTS / "seed_blocks.py").read_text())
    assert not (REPO / "docs" / "architecture.md").read_text().count("../shared")
