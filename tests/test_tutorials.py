"""The tutorials in docs/tutorials run top to bottom, and do what their text says.

Each tutorial's fenced ``python`` blocks run in order in one fresh namespace, in the
per-test working folder of ``conftest.py``; then a check reads the namespace and
asserts what the prose promises (numbers, winners, where records land).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import crystallize

REPO = Path(__file__).resolve().parents[1]
TUTORIALS_DIR = REPO / "docs" / "tutorials"
EXPECTED = ("01-first-experiment.md", "02-optimize-run-apply.md", "03-graph.md")
_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```", re.S | re.M)


def tutorial_files() -> list[Path]:
    return sorted(TUTORIALS_DIR.glob("*.md"))


def code_blocks(path: Path) -> list[tuple[int, str]]:
    """``(first line number, code)`` of every fenced python block, in order."""
    text = path.read_text(encoding="utf-8")
    return [(text.count("\n", 0, match.start(1)), match.group(1)) for match in _FENCE.finditer(text)]


def failed_replicates(namespace: dict) -> dict[str, str]:
    """The first error of every ``Result`` in ``namespace`` that has failed replicates, by variable name."""
    failures = {}
    for name, value in namespace.items():
        if isinstance(value, crystallize.Result):
            for condition, errors in value.replicate_errors.items():
                for replicate, error in errors.items():
                    failures.setdefault(name, f"{condition}/{replicate}: {error.exception_type}: {error.message}")
    return failures


def run_tutorial(path: Path) -> dict:
    namespace: dict = {"__name__": f"tutorial_{path.stem.replace('-', '_')}"}
    for offset, code in code_blocks(path):
        try:
            # Padding keeps line numbers in tracebacks equal to the Markdown file's.
            exec(compile("\n" * offset + code, str(path), "exec"), namespace)
        except Exception as exc:
            failures = failed_replicates(namespace)
            if failures:  # a block tripped over missing metrics: say why the replicates failed
                raise AssertionError(f"{path.name}: {exc!r}; replicates had failed: {failures}") from exc
            raise
    return namespace


# ---------------------------------------------------------------------- tutorial 1


def check_first_experiment(ns: dict) -> None:
    result = ns["result"]
    baseline, shifted = ns["baseline_means"], ns["shifted_means"]
    assert len(baseline) == len(shifted) == 8
    assert np.std(baseline) > 0.01  # ctx.rng gives each replicate its own noise
    summary = result.get_hypothesis("offset_moves_mean").results["shifted"]
    assert summary["significant"] is True and summary["p_value"] < 0.01
    # The same seed for both conditions of a replicate: the difference is exactly the offset.
    np.testing.assert_allclose(ns["differences"], 0.5, atol=1e-9)

    run_folder = ns["run_folder"]
    assert run_folder == Path("data") / "first_experiment" / "v0"
    assert {"plan.json", "outcomes", "metrics.parquet", "run.json"} <= {p.name for p in run_folder.iterdir()}
    assert crystallize.load_run(str(run_folder)).metrics.baseline.metrics["mean"] == baseline

    seeded, seeded_again = ns["seeded"], ns["seeded_again"]
    assert seeded.provenance["root_seed"] == 2024
    assert (seeded.provenance["version"], seeded_again.provenance["version"]) == (1, 2)
    assert seeded.metrics.baseline.metrics["mean"] == seeded_again.metrics.baseline.metrics["mean"]
    assert seeded.metrics.treatments == seeded_again.metrics.treatments
    assert seeded.metrics.baseline.metrics["mean"] != baseline  # the unseeded run drew its own root seed

    in_processes = ns["in_processes"]
    assert in_processes.provenance["executor"]["executor"] == "process"
    assert seeded.provenance["executor"]["executor"] == "serial"
    assert in_processes.metrics.baseline.metrics == seeded.metrics.baseline.metrics
    assert in_processes.metrics.treatments == seeded.metrics.treatments
    assert len(in_processes.metrics.treatments["shifted"].metrics["mean"]) == 8


# ---------------------------------------------------------------------- tutorial 2


def check_optimize_run_apply(ns: dict) -> None:
    grid, best = ns["grid"], ns["best"]
    assert grid.batch_size == 2
    assert isinstance(best, crystallize.Treatment)
    assert best.name == "grid_2" and dict(best.apply_map) == {"correction": 2.0}
    # num_trials=2 rounds of batch_size=2 candidates: the whole grid, in order.
    assert [row["candidate"] for row in grid.history] == ["grid_0", "grid_1", "grid_2", "grid_3"]
    scores = {row["candidate"]: row["objective"] for row in grid.history}
    assert scores["grid_2"] < 0.3 and all(score > 0.7 for name, score in scores.items() if name != "grid_2")

    # batch_size defaults to 1, also with two worker threads: num_trials=6 asks six candidates.
    sampler, sampled_best = ns["sampler"], ns["sampled_best"]
    assert sampler.batch_size == 1
    assert len(sampler.history) == 6
    assert set(ns["experiment"].last_optimization.metrics.treatments) == {f"random_{i}" for i in range(6)}
    assert all(len(m.metrics["error"]) == 4 for m in ns["experiment"].last_optimization.metrics.treatments.values())
    assert abs(sampled_best.apply_map["correction"] - 2.0) < 0.5

    result, verdict = ns["result"], ns["verdict"]
    baseline_error = result.metrics.baseline.metrics["error"]
    winner_error = result.metrics.treatments[best.name].metrics["error"]
    assert len(baseline_error) == len(winner_error) == 10
    assert np.mean(winner_error) < 0.3 < 1.5 < np.mean(baseline_error)
    assert verdict["significant"] is True and verdict["p_value"] < 0.05

    readings, again = ns["readings"], ns["again"]
    assert isinstance(readings, np.ndarray) and readings.shape == (50,)
    assert abs(float(np.mean(readings)) - 5.0) < 0.25  # corrected, not the raw ~3.0
    assert np.array_equal(readings, again)
    # Two searches and one run made versions; apply() made none.
    assert sorted(p.name for p in Path("data/calibration").iterdir()) == ["v0", "v1", "v2"]
    stored = list(Path("data/calibration/v2").rglob("corrected.json"))
    assert len(stored) == 10 * 2  # archive ran in run() for every replicate of both conditions


# ---------------------------------------------------------------------- tutorial 3


def check_graph(ns: dict) -> None:
    graph, produced, analysed = ns["graph"], ns["produced"], ns["analysed"]
    assert graph.order() == ["simulate_waves", "denoise_waves"]
    assert graph.dependencies("denoise_waves") == {"simulate_waves"}
    noise = produced.metrics.baseline.metrics["noise_rms"]
    assert len(noise) == 6 and all(0.3 < x < 0.5 for x in noise)

    baseline = analysed.metrics.baseline.metrics["rms_error"]
    smoothed = analysed.metrics.treatments["smoothed"].metrics["rms_error"]
    # A window of 1 leaves the signal as it was: replicate i saw exactly producer replicate i's noise.
    np.testing.assert_allclose(baseline, noise, rtol=1e-9)
    assert np.mean(smoothed) < 0.6 * np.mean(baseline)
    assert all(s < b for s, b in zip(smoothed, baseline, strict=True))

    folder = ns["producer_folder"]
    assert folder == Path("data") / "simulate_waves" / "v0"
    for replicate in range(6):
        stored = folder / f"replicate_{replicate}" / "baseline" / "simulate" / "signal.json"
        assert len(json.loads(stored.read_text())["noisy"]) == 200
    assert ns["signal"].pinned_version == produced.provenance["version"] == 0

    again = ns["again"]
    assert {name: r.provenance["version"] for name, r in again.items()} == {"simulate_waves": 0, "denoise_waves": 0}
    assert again["denoise_waves"].metrics.treatments == analysed.metrics.treatments
    assert [p.name for p in Path("data/denoise_waves").iterdir()] == ["v0"]


CHECKS: dict[str, Callable[[dict], None]] = {
    "01-first-experiment.md": check_first_experiment,
    "02-optimize-run-apply.md": check_optimize_run_apply,
    "03-graph.md": check_graph,
}


def test_there_are_exactly_the_three_tutorials_with_code() -> None:
    assert tuple(p.name for p in tutorial_files()) == EXPECTED
    for path in tutorial_files():
        assert len(code_blocks(path)) >= 2, f"{path.name} has fewer than 2 python blocks"


def test_tutorial_links_point_at_files_that_exist() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for name in EXPECTED:
        assert f"docs/tutorials/{name}" in readme, f"README.md does not link {name}"
    for path in tutorial_files():
        for target in re.findall(r"\]\(([^)#:]+\.md)\)", path.read_text(encoding="utf-8")):
            assert (path.parent / target).is_file(), f"{path.name} links to missing {target}"


@pytest.mark.parametrize("name", [p.name for p in tutorial_files()])
def test_tutorial_runs_and_keeps_its_promises(name: str) -> None:
    namespace = run_tutorial(TUTORIALS_DIR / name)
    assert not failed_replicates(namespace), f"failed replicates: {failed_replicates(namespace)}"
    CHECKS[name](namespace)
