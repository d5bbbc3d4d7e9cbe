"""Static checks as tests, so the suite (all CI runs) enforces them: mypy finds no errors, ruff passes.

Both read their settings from ``pyproject.toml`` (``[tool.mypy]``, ``[tool.ruff]``) and run from the
repository root, exactly as ``mypy`` and ``ruff check .`` do there. mypy keeps its incremental cache
in ``.mypy_cache`` (git-ignored), so a second run takes about a second.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_mypy_finds_no_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    from mypy import api

    monkeypatch.chdir(ROOT)  # mypy reads [tool.mypy] (files, overrides) from ./pyproject.toml
    stdout, stderr, status = api.run([])
    report = f"{stdout}{stderr}".strip()
    assert status == 0, f"mypy (run from {ROOT}) reported errors:\n{report}"
    assert "Success" in stdout, report


def test_ruff_passes() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, f"ruff check . reported problems:\n{completed.stdout}{completed.stderr}"
