"""The README's first command: the example experiment prints plain numbers and no warning."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "minimal_experiment" / "main.py"


def test_the_first_example_prints_plain_numbers_and_no_warning(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-W", "default", str(EXAMPLE), "--executor", "serial"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Warning" not in done.stderr and "WARNING" not in done.stderr, done.stderr  # scipy's on constant data, say
    assert "np." not in done.stdout, done.stdout  # np.float64(...), np.True_: NumPy reprs, not numbers
    baseline = re.search(r"^baseline total: mean (-?[\d.]+) over 12 replicates: \[(.+)\]$", done.stdout, re.M)
    boosted = re.search(r"^boost_total total: mean (-?[\d.]+) over 12 replicates", done.stdout, re.M)
    assert baseline and boosted, done.stdout
    values = [float(v) for v in baseline.group(2).split(", ")]
    assert len(set(values)) > 1  # noisy data: the t-test has a variance to work with
    assert abs(float(boosted.group(1)) - float(baseline.group(1)) - 30.0) < 0.01  # +10 on each of 3 values
    assert re.search(r"^boost_total vs baseline: p = [\d.e-]+, significant: True$", done.stdout, re.M), done.stdout


def test_the_first_example_gives_the_same_numbers_on_every_run_and_executor(tmp_path: Path) -> None:
    """Its docstring promises reruns draw the same: the example fixes its root seed."""
    outputs = []
    for executor in ("serial", "thread"):
        done = subprocess.run(
            [sys.executable, str(EXAMPLE), "--executor", executor],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        outputs.append([line for line in done.stdout.splitlines() if not line.startswith("stored under")])
    assert outputs[0] == outputs[1] and len(outputs[0]) == 3
