"""The executor comparison script still runs end to end (its smallest mode, serial only).

Not a speed test: it only checks that the script writes its Markdown and JSON with numbers
in them, so the benchmark cannot rot between full runs.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "compare_executors.py"


@pytest.mark.timeout(180)
def test_smoke_mode_writes_a_table_and_json_with_numbers(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--out", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["errors"] == [], results["errors"]
    measured = {(m["workload"], m["executor"]): m for m in results["measurements"]}
    assert set(measured) == {("noop", "serial"), ("cpu", "serial")}
    for m in measured.values():
        assert m["seconds"] > 0 and math.isfinite(m["per_unit"])
        assert len(m["runs"]) == 1
    assert measured["noop", "serial"]["units"] == 2 * 20  # replicate-conditions: 2 conditions
    assert [p["replicates"] for p in results["scaling"]] == [10, 100]
    assert all(p["peak_rss_mib"] >= p["base_rss_mib"] > 0 for p in results["scaling"])
    assert results["machine"]["cpus"] and "--smoke" in results["command"]

    table = (out / "results.md").read_text()
    noop_row = next(line for line in table.splitlines() if line.startswith("| noop |"))
    value = noop_row.split("|")[3].strip().replace(",", "")
    assert float(value) > 0
    assert "Reproduce: `python benchmarks/compare_executors.py --smoke" in table
    for plot in results["plots"]:
        assert (out / plot).stat().st_size > 0
    assert not list(tmp_path.glob("data")) and not list(tmp_path.glob(".cache"))  # runs stay in their temp folder
