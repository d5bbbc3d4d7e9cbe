"""``crystallize show --errors``: every failed replicate with its traceback, not only the first five."""

from __future__ import annotations

import textwrap
from pathlib import Path

from test_cli import cli, ok

SCRIPT = textwrap.dedent(
    """
    from crystallize import Experiment, Pipeline, SerialExecution, Treatment, data_source, pipeline_step


    @data_source
    def zero(ctx):
        return 0


    @pipeline_step()
    def fragile(data, ctx, *, delta: float = 0.0):
        if ctx["replicate"] % 3 == 0:
            raise ValueError(f"replicate {ctx['replicate']} is unlucky")
        return data, {"value": data + delta}


    experiment = Experiment(
        datasource=zero(),
        pipeline=Pipeline([fragile()]),
        treatments=[Treatment("shifted", {"delta": 1.0})],
        plugins=[SerialExecution(progress=False)],
        replicates=12,
        name="fragile",
    )
    """
)


def test_show_lists_five_failures_and_says_how_to_see_all_and_errors_lists_each_with_its_traceback(
    tmp_path: Path,
) -> None:
    (tmp_path / "fragile.py").write_text(SCRIPT)
    ok(cli("run", "fragile.py", "--quiet", cwd=tmp_path))  # some failed replicates still exit 0
    summary = ok(cli("show", "fragile", cwd=tmp_path)).stdout
    assert "8 failed replicate(s):" in summary  # replicates 0, 3, 6, 9 of both conditions
    assert summary.count("is unlucky") == 5
    assert "... and 3 more; crystallize show fragile --errors lists each with its traceback" in summary
    full = ok(cli("show", "fragile", "--errors", cwd=tmp_path)).stdout
    for condition in ("baseline", "shifted"):
        for replicate in (0, 3, 6, 9):
            assert f"condition '{condition}', replicate {replicate}, step 'fragile'" in full, full
    assert full.count("Traceback (most recent call last)") == 8
    assert full.count('raise ValueError(f"replicate {ctx') == 8  # the user's own line, in each traceback
    assert "--errors lists" not in full
