"""Ray on a laptop feels like running in-process: worker log lines and prints on the driver, in order, quiet on request.

The command-line tests run a driver in a subprocess (its own private Ray, a private ``TMPDIR``),
so the session's Ray is untouched and the temp folder a private Ray leaves behind can be checked
exactly; the record-level test uses the session's Ray.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("ray")

from crystallize import Experiment, FrozenContext, Pipeline, data_source, pipeline_step
from crystallize_ray import RayExecution

ROOT = Path(__file__).resolve().parent.parent
REPLICATES = 5

EXPERIMENT = textwrap.dedent(
    """
    import logging

    from crystallize import Experiment, FrozenContext, Pipeline, data_source, pipeline_step

    logging.getLogger("myexp").setLevel(logging.INFO)  # on the driver: this logger's INFO lines show
    log = logging.getLogger("myexp.steps")


    @data_source
    def source(ctx):
        return 1


    @pipeline_step()
    def step(data, ctx):
        log.warning("the same line from every replicate")
        log.info("detail at info")
        log.debug("debug noise")
        logging.getLogger("otherlib").info("below the root's level")
        print("a print from a worker")
        ctx.metrics.add("x", data)
        return data


    experiment = Experiment(datasource=source(), pipeline=Pipeline([step()]), replicates={replicates})
    """
)

# Ray's own notices, as Ray prints them on the driver.
RAY_NOTICES = ("pid=", "repeated", "Ray deduplicates", "(raylet)", "(autoscaler", "RAY_DEDUP_LOGS")


@pytest.fixture
def tmpdir_env(tmp_path: Path) -> Iterator[tuple[dict[str, str], Path]]:
    """An environment whose TMPDIR is a fresh short folder (Ray puts sockets in its temp folder)."""
    private = Path(tempfile.mkdtemp(prefix="crl-", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "CRYSTALLIZE_QUIET", "RAY_DEDUP_LOGS")}
    env["TMPDIR"] = str(private)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env["COLUMNS"] = "200"
    try:
        yield env, private
    finally:
        import shutil

        shutil.rmtree(private, ignore_errors=True)


def _crystallize_run(tmp_path: Path, env: dict[str, str], *options: str) -> str:
    """``crystallize run`` on a private Ray; stdout and stderr in one pipe, so their order is kept."""
    (tmp_path / "exp.py").write_text(EXPERIMENT.format(replicates=REPLICATES))
    done = subprocess.run(
        [sys.executable, "-m", "crystallize", "run", "exp.py", "--executor", "ray", *options],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout
    return done.stdout


def _leftovers(private: Path) -> list[str]:
    return sorted(p.name for p in private.glob("cray-*"))


@pytest.mark.timeout(180)
def test_worker_log_lines_keep_level_and_logger_every_one_of_them_before_the_final_table(
    tmp_path: Path, tmpdir_env: tuple[dict[str, str], Path]
) -> None:
    env, private = tmpdir_env
    output = _crystallize_run(tmp_path, env)
    lines = output.splitlines()

    warning = "WARNING myexp.steps: the same line from every replicate"
    assert lines.count(warning) == REPLICATES, output  # level and logger name kept; never merged
    assert lines.count("INFO myexp.steps: detail at info") == REPLICATES, output  # the driver's level, per logger
    assert "debug noise" not in output and "below the root's level" not in output, output
    assert lines.count("a print from a worker") == REPLICATES, output
    assert not [notice for notice in RAY_NOTICES if notice in output], output

    table = next(i for i, line in enumerate(lines) if line.startswith("┏"))
    worker_lines = [
        i for i, line in enumerate(lines) if "from every replicate" in line or "print from a worker" in line
    ]
    assert max(worker_lines) < table, output  # nothing arrives after the final table
    assert _leftovers(private) == [], "the private Ray's temp folder outlived the run"


@pytest.mark.timeout(180)
def test_quiet_silences_ray_but_not_the_users_warnings(tmp_path: Path, tmpdir_env: tuple[dict[str, str], Path]) -> None:
    env, private = tmpdir_env
    output = _crystallize_run(tmp_path, env, "--quiet")

    assert output.splitlines().count("WARNING myexp.steps: the same line from every replicate") == REPLICATES, output
    assert not [notice for notice in (*RAY_NOTICES, "Token authentication is") if notice in output], output
    assert "Starting a private local Ray" not in output and "INFO crystallize" not in output, output
    assert _leftovers(private) == []


DRIVER = textwrap.dedent(
    """
    import logging, os, sys, warnings
    import ray
    from crystallize_ray.connection import ensure_connected
    from ray._private.ray_constants import LOG_PREFIX_EVENT_SUMMARY
    from ray._private.ray_logging import global_worker_stdstream_dispatcher

    RAY_FILE = os.path.join(os.path.dirname(ray.__file__), "_private", "worker.py")
    logging.basicConfig(format="%(message)s")
    logging.captureWarnings(True)  # as the crystallize command does
    os.environ["CRYSTALLIZE_QUIET"] = "1"  # as crystallize run --quiet sets it
    assert ensure_connected(None, init_kwargs={"num_cpus": 1}) == "local"

    def notices(tag):
        for pid in ("raylet", "autoscaler"):
            line = f"{pid} notice {tag}"
            if pid == "autoscaler":  # how Ray's monitor marks the lines it wants shown
                line = LOG_PREFIX_EVENT_SUMMARY + line
            global_worker_stdstream_dispatcher.emit(
                {"ip": "127.0.0.1", "localhost": "127.0.0.1", "pid": pid, "job": "", "is_err": True, "lines": [line]}
            )
        logging.getLogger("ray._private.worker").warning("ray logger notice %s", tag)
        warnings.warn_explicit(f"ray deprecation {tag}", FutureWarning, RAY_FILE, 1)  # as Ray's code raises it
        logging.getLogger("user").warning("user warning %s", tag)
        sys.stderr.flush()

    notices("quiet")
    del os.environ["CRYSTALLIZE_QUIET"]
    notices("loud")
    """
)


@pytest.mark.timeout(120)
def test_quiet_drops_rays_raylet_autoscaler_logger_and_warning_notices_on_the_driver(
    tmp_path: Path, tmpdir_env: tuple[dict[str, str], Path]
) -> None:
    env, private = tmpdir_env
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=90
    )
    assert done.returncode == 0, done.stderr
    err = done.stderr
    for tag, shown in (("quiet", False), ("loud", True)):
        assert (f"raylet notice {tag}" in err) is shown, err
        assert (f"autoscaler notice {tag}" in err) is shown, err
        assert (f"ray logger notice {tag}" in err) is shown, err
        assert (f"ray deprecation {tag}" in err) is shown, err
        assert f"user warning {tag}" in err, err  # the user's own warnings always show
    assert "Token authentication is" not in err, err  # Ray's start-up notice, quiet too
    assert _leftovers(private) == [], "a private Ray started by a script left its temp folder behind"


@data_source
def nothing(ctx: FrozenContext) -> int:
    return 0


@pipeline_step()
def chatty(data: int, ctx: FrozenContext) -> int:
    log = logging.getLogger("wlogs.chatty")
    log.warning("holding %s", threading.Lock())  # an argument that cannot be pickled: formatted in the worker
    try:
        raise ValueError("inside the worker")
    except ValueError:
        log.exception("caught it")
    log.info("kept", extra={"tag": "t1"})
    log.debug("below the driver's level")
    ctx.metrics.add("x", 1)
    return data


@pytest.mark.usefixtures("ray_session")
def test_records_arrive_on_the_drivers_loggers_with_their_fields(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="wlogs")
    experiment = Experiment(
        datasource=nothing(), pipeline=Pipeline([chatty()]), plugins=[RayExecution(progress=False)], replicates=3
    )
    result = experiment.run()
    assert result.failed == 0

    ours = [r for r in caplog.records if r.name == "wlogs.chatty"]
    assert [r.levelname for r in ours].count("WARNING") == 3
    assert all("holding <unlocked _thread.lock object" in r.getMessage() for r in ours if r.levelname == "WARNING")
    errors = [r for r in ours if r.levelname == "ERROR"]
    assert len(errors) == 3 and all("ValueError: inside the worker" in (r.exc_text or "") for r in errors)
    infos = [r for r in ours if r.levelname == "INFO"]
    assert len(infos) == 3 and all(getattr(r, "tag", None) == "t1" for r in infos)
    assert not [r for r in ours if r.levelname == "DEBUG"]
    workers = {getattr(r, "crystallize_worker", "") for r in ours}
    assert all(w and not w.endswith(f":{os.getpid()}") for w in workers), workers  # ran elsewhere, replayed here
