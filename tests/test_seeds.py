"""The two seed documents run verbatim, and do what their text says."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from seed_blocks import requires_seeds, seed_blocks, seed_files

import crystallize

pytestmark = requires_seeds
SEEDS = {path.name[:3]: path for path in seed_files()}


def run_seed(key: str, replace: dict[str, str] | None = None) -> dict:
    namespace: dict = {"__name__": f"seed_{key}"}
    for block in seed_blocks(SEEDS[key]):
        for old, new in (replace or {}).items():
            block = block.replace(old, new)
        exec(compile(block, f"<seed {SEEDS[key].name}>", "exec"), namespace)
    return namespace


def test_both_seed_documents_are_present_and_have_code() -> None:
    assert set(SEEDS) == {"000", "001"}
    assert len(seed_blocks(SEEDS["000"])) == 4
    assert len(seed_blocks(SEEDS["001"])) == 4


def test_seed_000_full_workflow(capsys: pytest.CaptureFixture[str]) -> None:
    ns = run_seed("000")
    best = ns["best_treatment"]
    # The noise is in [0, 1) per element, so delta=-1 always gives the smallest total.
    assert isinstance(best, crystallize.Treatment)
    assert best.name == "best_delta" and dict(best.apply_map) == {"delta": -1}
    assert ns["optimizer"].results and len(ns["optimizer"].results) == 3
    hyp = ns["result"].get_hypothesis("rank_by_p_value")
    assert set(hyp.results) == {"best_delta"}
    assert hyp.results["best_delta"]["p_value"] < 0.05
    assert bool(hyp.results["best_delta"]["significant"]) is True
    assert "best_delta" in capsys.readouterr().out
    assert len(ns["result"].metrics.baseline.metrics["total"]) == 30
    output = ns["output"]
    assert len(output) == 3 and all(-1.0 <= x < 0.0 for x in output)


def test_seed_000_trials_ran_only_the_asked_treatments() -> None:
    ns = run_seed("000")
    trials = ns["exp"].last_optimization
    assert set(trials.metrics.treatments) == {"trial_-1", "trial_0", "trial_1"}
    assert trials.metrics.baseline.metrics == {}
    for tm in trials.metrics.treatments.values():
        assert len(tm.metrics["total"]) == 5


def test_seed_001_first_experiment() -> None:
    ns = run_seed("001")
    result = ns["result"]
    assert result.metrics.baseline.metrics["total"] == [0.0] * 12
    assert result.metrics.treatments["boost_total"].metrics["total"] == [30.0] * 12
    summary = result.get_hypothesis("order_by_p_value").results["boost_total"]
    assert summary["p_value"] < 0.05 and bool(summary["significant"])
    kinds = {type(p).__name__ for p in ns["experiment"].plugins}
    assert {"ArtifactPlugin", "SeedPlugin", "LoggingPlugin", "ParallelExecution"} <= kinds
    assert (Path("data") / "basic" / "v0" / "run.json").is_file()


def test_seed_001_artifacts_land_where_the_text_says() -> None:
    ns = run_seed("001")
    step = crystallize.pipeline_step()

    def keep_note(data, ctx):
        ctx.artifacts.add("file.txt", b"...")
        return data

    experiment = ns["experiment"]
    experiment.pipeline.steps.append(step(keep_note)())
    experiment.run()
    stored = sorted(Path("data/basic/v1").glob("replicate_*/*/keep_note/file.txt"))
    assert len(stored) == 12 * 2
    assert stored[0].read_bytes() == b"..."


def test_seed_001_with_process_execution_matches_threads() -> None:
    threads = run_seed("001")["result"]
    processes = run_seed("001", {"ParallelExecution(max_workers=4)": 'ParallelExecution(executor_type="process")'})[
        "result"
    ]
    assert processes.to_pandas().equals(threads.to_pandas())


def test_seed_000_is_reproducible_with_a_fixed_seed_under_processes() -> None:
    swap = {
        "exp = Experiment(datasource=datasource, pipeline=pipeline)": (
            "from crystallize import SeedPlugin, ParallelExecution, SerialExecution\n"
            "exp = Experiment(datasource=datasource, pipeline=pipeline, plugins=[SeedPlugin(seed=5), EXECUTION])"
        )
    }
    totals = []
    for execution in ("SerialExecution()", 'ParallelExecution(executor_type="process", max_workers=2)'):
        ns = run_seed("000", {**swap, "EXECUTION": execution})
        totals.append(ns["result"].metrics.treatments["best_delta"].metrics["total"])
    assert totals[0] == totals[1]
    assert not any(math.isnan(t) for t in totals[0])
