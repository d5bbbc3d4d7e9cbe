"""Every run record says where it came from: git commit and dirtiness, library versions, host, cluster size.

The git state is taken on the driver from the folder of the experiment's own code, so workers
need no ``.git``; outside a repository, without a git binary or with a git that hangs, the
values are None and the run goes on.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from crystallize import Experiment, Pipeline, SeedPlugin, data_source, pipeline_step
from crystallize import provenance as run_provenance
from crystallize.runs import load_run


@data_source
def one(ctx):
    return 1.0


@pipeline_step()
def record(data, ctx):
    ctx.metrics.add("value", data + ctx["replicate"])
    return data


def _experiment(plugin, name: str) -> Experiment:
    return Experiment(one(), Pipeline([record()]), [plugin, SeedPlugin(seed=3)], name=name, replicates=2)


def test_every_executor_records_versions_host_git_and_cluster_size(execution) -> None:
    result = _experiment(execution, "prov").run()
    prov = result.provenance
    versions = prov["versions"]
    assert set(versions) == {"python", "numpy", "scipy", "pyarrow", "cloudpickle", "ray", "crystallize"}
    assert versions["python"] == platform.python_version()
    import numpy
    import pyarrow

    assert versions["numpy"] == numpy.__version__ and versions["pyarrow"] == pyarrow.__version__
    assert prov["host"] == {"hostname": socket.gethostname(), "platform": platform.platform()}
    # the step is defined in this file: the git state is that of the folder holding it
    assert prov["git"] == run_provenance.git_state(Path(__file__).parent)
    executor = prov["executor"]
    if executor["executor"] == "ray":
        import ray

        assert executor["nodes"] == sum(1 for n in ray.nodes() if n.get("Alive")) >= 1
        assert executor["cpus"] == ray.cluster_resources()["CPU"] == 2  # the session Ray of conftest
    else:
        assert executor["nodes"] == 1 and executor["cpus"] == os.cpu_count()
    stored = json.loads(Path(f"data/prov/v{prov['version']}/run.json").read_text())["provenance"]
    for key in ("git", "versions", "host", "executor"):
        assert stored[key] == prov[key], key
    assert load_run(f"data/prov/v{prov['version']}").provenance["versions"] == versions


def test_ray_version_is_read_without_importing_ray() -> None:
    code = (
        "import sys; from crystallize.provenance import library_versions; v = library_versions(); "
        "assert 'ray' not in sys.modules, 'ray was imported'; print(v['ray'])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    import importlib.metadata

    assert done.stdout.strip() == importlib.metadata.version("ray")


# ---------------------------------------------------------------- git


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


STEP_MODULE = """
from crystallize import pipeline_step

@pipeline_step()
def repo_step(data, ctx):
    ctx.metrics.add("value", data)
    return data
"""


def _import(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _run_with_step_from(folder: Path, module_name: str, name: str) -> dict:
    module = _import(folder / f"{module_name}.py", module_name)
    try:
        experiment = Experiment(one(), Pipeline([module.repo_step()]), name=name, replicates=1)
        return experiment.run().provenance
    finally:
        sys.modules.pop(module_name, None)


@pytest.mark.skipif(shutil.which("git") is None, reason="no git binary")
def test_git_commit_and_dirty_state_of_the_experiments_code(tmp_path: Path) -> None:
    repo = tmp_path / "project"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "steps_clean.py").write_text(STEP_MODULE)
    _git(repo, "add", "steps_clean.py")
    _git(repo, "commit", "-q", "-m", "first")
    head = _git(repo, "rev-parse", "HEAD")

    clean = _run_with_step_from(repo, "steps_clean", "clean")["git"]
    assert clean == {"commit": head, "dirty": False, "root": str(repo.resolve())}
    # Untracked files (the run's own data/ and .cache/ folders in the repository) do not count.
    (repo / "data").mkdir()
    (repo / "data" / "run.json").write_text("{}")
    assert _run_with_step_from(repo, "steps_clean", "untracked")["git"]["dirty"] is False

    (repo / "steps_clean.py").write_text(STEP_MODULE + "\n# edited, not committed\n")
    dirty = _run_with_step_from(repo, "steps_clean", "dirty")["git"]
    assert dirty == {"commit": head, "dirty": True, "root": str(repo.resolve())}
    assert json.loads(Path("data/dirty/v0/run.json").read_text())["provenance"]["git"] == dirty


def test_outside_a_repository_the_git_values_are_none(tmp_path: Path) -> None:
    folder = tmp_path / "no_repo"
    folder.mkdir()
    (folder / "steps_loose.py").write_text(STEP_MODULE)
    if run_provenance.git_state(folder)["root"] is not None:
        pytest.skip(f"{tmp_path} is inside a git repository")
    prov = _run_with_step_from(folder, "steps_loose", "loose")
    assert prov["git"] == {"commit": None, "dirty": None, "root": None}


def test_a_repository_without_commits_has_a_root_and_no_commit(tmp_path: Path) -> None:
    if shutil.which("git") is None:
        pytest.skip("no git binary")
    repo = tmp_path / "fresh"
    repo.mkdir()
    _git(repo, "init", "-q")
    state = run_provenance.git_state(repo)
    assert state["root"] == str(repo.resolve()) and state["commit"] is None


def test_no_git_binary_or_a_hung_git_never_fails_a_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no git on the path
    assert _experiment_run("nogit")["git"] == {"commit": None, "dirty": None, "root": None}

    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "git").write_text("#!/bin/sh\nexec sleep 30\n")
    (fake / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}/bin{os.pathsep}/usr/bin")
    monkeypatch.setattr(run_provenance, "GIT_TIMEOUT_SECONDS", 0.3)
    assert _experiment_run("hungit")["git"] == {"commit": None, "dirty": None, "root": None}


def _experiment_run(name: str) -> dict:
    return Experiment(one(), Pipeline([record()]), name=name, replicates=1).run().provenance


@pytest.mark.skipif(shutil.which("git") is None, reason="no git binary")
def test_crystallize_run_of_a_script_records_the_scripts_repository(tmp_path: Path) -> None:
    """``crystallize run`` runs the script under a module name gone after it ran, from another folder:
    the commit must still be the script's repository's, not the working directory's or the CLI's."""
    from test_cli import cli, ok, write_experiment

    repo = tmp_path / "science"
    repo.mkdir()
    _git(repo, "init", "-q")
    write_experiment(repo)
    _git(repo, "add", "experiment.py")
    _git(repo, "commit", "-q", "-m", "experiment")
    head = _git(repo, "rev-parse", "HEAD")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    ok(cli("run", str(repo / "experiment.py"), "--executor", "serial", "--replicates", "2", cwd=elsewhere))
    stored = json.loads((elsewhere / "data/demo/v0/run.json").read_text())["provenance"]
    assert stored["git"] == {"commit": head, "dirty": False, "root": str(repo.resolve())}
    shown = ok(cli("show", "data/demo/v0", cwd=elsewhere)).stdout
    assert f"code: git {head[:12]} (clean) in {repo.resolve()}" in shown
    assert "boost" in shown and "10.0" in shown  # the treatment's parameter
