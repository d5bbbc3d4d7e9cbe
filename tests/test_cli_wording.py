"""Advice speaks the reader's language: ``--resume`` and ``crystallize show --errors`` at the command,
``strategy='resume'`` and ``result.replicate_errors`` in Python."""

from __future__ import annotations

import logging
import runpy
from pathlib import Path

import pytest
from test_cli import cli, ok, write_experiment
from test_show_errors import SCRIPT as FRAGILE

from crystallize import GridSearchOptimizer, Objective
from crystallize.cli.main import main
from crystallize.cli_hints import at_command_line, command_line, hint, resume_option
from crystallize.errors import ValidationError


def test_the_hint_follows_the_command_and_ends_with_it() -> None:
    assert not at_command_line() and resume_option() == "strategy='resume'"
    with command_line():
        assert at_command_line() and resume_option() == "--resume"
        assert hint("python words", "cli words") == "cli words"
    assert not at_command_line() and hint("python words", "cli words") == "python words"


def test_resuming_a_changed_experiment_names_resume_as_whoever_asked_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    write_experiment(tmp_path, replicates=2)
    assert main(["run", "experiment.py", "--executor", "serial", "--quiet", "--seed", "1"]) == 0
    write_experiment(tmp_path, replicates=2, treatments='treatment("boost", {"delta": 5.0})')  # changed
    capsys.readouterr()

    assert main(["run", "experiment.py", "--executor", "serial", "--quiet", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "the experiment changed since it ran" in err
    assert "Run without --resume to start a new version." in err
    assert "strategy" not in err
    assert not at_command_line()  # the command's mark ends with it

    experiment = runpy.run_path("experiment.py", run_name="again")["experiment"]
    with pytest.raises(ValidationError) as info:
        experiment.run(strategy="resume")
    assert "Run without strategy='resume' to start a new version." in str(info.value)
    assert "--resume" not in str(info.value)


def test_resuming_an_optimize_record_says_how_to_start_a_new_run_in_each_language(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    write_experiment(tmp_path, replicates=2)
    experiment = runpy.run_path("experiment.py", run_name="opt")["experiment"]
    experiment.optimize(GridSearchOptimizer({"delta": [1.0]}, Objective("total")), num_trials=1)
    capsys.readouterr()

    assert main(["run", "experiment.py", "--executor", "serial", "--quiet", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "optimize() made it, and only runs resume; run without --resume for a new version" in err
    assert "strategy" not in err

    with pytest.raises(ValidationError, match=r"optimize\(\) record, not a run\(\); run without strategy='resume'"):
        experiment.run(strategy="resume")


def test_many_failures_point_to_show_errors_at_the_command_and_to_replicate_errors_in_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "fragile.py").write_text(FRAGILE)
    err = ok(cli("run", "fragile.py", "--quiet", cwd=tmp_path)).stderr  # 8 failures: more than five
    assert "More replicates failed; `crystallize show RUN --errors` lists all of them with their tracebacks" in err
    assert "replicate_errors" not in err and "Result." not in err

    monkeypatch.chdir(tmp_path)
    experiment = runpy.run_path("fragile.py", run_name="fragile_py")["experiment"]
    with caplog.at_level(logging.WARNING, logger="crystallize"):
        result = experiment.run()
    assert sum(len(errors) for errors in result.replicate_errors.values()) == 8
    said = [r.getMessage() for r in caplog.records if "More replicates failed" in r.getMessage()]
    assert said == [
        "More replicates failed; result.replicate_errors holds all of them with their tracebacks "
        "(`crystallize show RUN --errors` lists them)."
    ]


def test_the_shared_global_rng_warning_names_executor_options_at_the_command_and_classes_in_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from crystallize import ParallelExecution

    monkeypatch.chdir(tmp_path)
    write_experiment(tmp_path, replicates=2)
    assert main(["run", "experiment.py", "--executor", "thread", "--workers", "2", "--quiet"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
    assert "Draw from ctx.rng" in out and "or use --executor process or ray." in out
    assert "ParallelExecution" not in out

    experiment = runpy.run_path("experiment.py", run_name="threads")["experiment"]
    experiment.plugins = [p for p in experiment.plugins if not isinstance(p, ParallelExecution)]
    experiment.plugins.append(ParallelExecution(max_workers=2, progress=False))
    warnings = experiment.run().warnings
    assert any("or use ParallelExecution(executor_type='process') or RayExecution." in w for w in warnings)
