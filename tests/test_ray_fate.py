"""Every process of the private Ray a driver started dies with the driver, even on SIGKILL.

Ray's kernel fate sharing covers only the driver's own children (GCS, raylet, ...); the agents
and workers the raylet starts used to outlive a killed driver (issue #10, point 8). The driver
runs in its own process here and starts its private Ray through ``ensure_connected``, in a
private ``TMPDIR``: the Ray's temp folder is gone afterwards too, and the watchdog logs to a file
outside it (``CRYSTALLIZE_RAY_FATE_LOG``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

pytest.importorskip("ray")
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fate sharing needs Linux")

SCRIPT = textwrap.dedent(
    """
    import sys
    import ray
    from crystallize_ray.connection import ensure_connected

    assert ensure_connected(None, init_kwargs={"num_cpus": 1}) == "local"

    @ray.remote
    def pid():
        import os
        return os.getpid()

    print("WORKER", ray.get(pid.remote()), flush=True)
    print("READY", flush=True)
    sys.stdin.readline()  # exits normally once the test closes stdin
    """
)
AGENTS = {"ray::DashboardAgent", "ray::RuntimeEnvAgent"}


def _alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    left = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                left.append(p)
        except psutil.NoSuchProcess:
            pass
    return left


def _names(procs: list[psutil.Process]) -> set[str]:
    names = set()
    for p in procs:
        try:
            names.add(" ".join(p.cmdline()).strip())
        except psutil.Error:
            pass
    return names


@pytest.fixture
def driver(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """A driver process that starts a private Ray (and exits when its stdin closes), and its TMPDIR."""
    temp_dir = Path(tempfile.mkdtemp(prefix="crf-", dir="/tmp"))  # short: Ray puts sockets in its folder there
    script = tmp_path / "driver.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["TMPDIR"] = str(temp_dir)
    env["CRYSTALLIZE_RAY_FATE_LOG"] = str(temp_dir / "fate.log")  # beside the Ray's folder, kept
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parent.parent), env.get("PYTHONPATH", "")])
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    recorded: list[psutil.Process] = []
    request.node.ray_processes = recorded  # filled by the test, killed below if anything is left
    try:
        yield proc, temp_dir
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        for p in _alive(recorded):
            try:
                p.kill()  # psutil checks the pid still names the process it recorded
            except psutil.Error:
                pass
        shutil.rmtree(temp_dir, ignore_errors=True)


def _wait_ready(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("READY"):
            return
    pytest.fail(f"the driver did not start its Ray: {''.join(lines)}")


def _ray_processes(proc: subprocess.Popen[str], recorded: list[psutil.Process]) -> list[psutil.Process]:
    """The driver's descendants once the raylet's agents are up (the watchdog among them)."""
    deadline = time.monotonic() + 20
    while True:
        found = psutil.Process(proc.pid).children(recursive=True)
        recorded[:] = found
        if AGENTS <= _names(found) or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def _fate_log(temp_dir: Path) -> str:
    log = temp_dir / "fate.log"
    return log.read_text() if log.exists() else ""


def _ray_folders(temp_dir: Path) -> list[Path]:
    """The private Ray's temp folders ``ensure_connected`` made in the driver's TMPDIR."""
    return sorted(temp_dir.glob("cray-*"))


@pytest.mark.timeout(120)
def test_every_process_of_the_private_ray_dies_within_seconds_of_a_sigkilled_driver(
    driver: tuple[subprocess.Popen[str], Path], request: pytest.FixtureRequest
) -> None:
    proc, temp_dir = driver
    _wait_ready(proc)
    assert len(_ray_folders(temp_dir)) == 1  # the folder ensure_connected made for its Ray
    ours = _ray_processes(proc, request.node.ray_processes)
    assert AGENTS <= _names(ours), _names(ours)
    assert any(p.ppid() != proc.pid for p in ours), "no grandchildren: nothing the kernel would orphan"

    killed = time.monotonic()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    while _alive(ours) and time.monotonic() - killed < 15:
        time.sleep(0.1)
    elapsed = time.monotonic() - killed
    left = _alive(ours)
    assert left == [], f"alive {elapsed:.1f} s after the driver's SIGKILL: {sorted(_names(left))}"
    while _ray_folders(temp_dir) and time.monotonic() - killed < 20:  # the watchdog removes it last
        time.sleep(0.1)
    log = _fate_log(temp_dir)
    assert "died; stopping" in log, log
    assert _ray_folders(temp_dir) == [], log


@pytest.mark.timeout(120)
def test_on_a_normal_exit_ray_stops_itself_and_the_watchdog_just_exits(
    driver: tuple[subprocess.Popen[str], Path], request: pytest.FixtureRequest
) -> None:
    proc, temp_dir = driver
    _wait_ready(proc)
    assert len(_ray_folders(temp_dir)) == 1  # the folder ensure_connected made for its Ray
    ours = _ray_processes(proc, request.node.ray_processes)
    assert any("crystallize_ray/fate.py" in name for name in _names(ours)), "no watchdog"
    assert proc.stdin is not None
    proc.stdin.close()
    assert proc.wait(timeout=60) == 0
    deadline = time.monotonic() + 15
    while _alive(ours) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _alive(ours) == []
    assert _ray_folders(temp_dir) == []  # removed by the driver itself, before it exited
    log = _fate_log(temp_dir)
    assert "its Ray with it" in log or "nothing to watch" in log, log
    assert "died; stopping" not in log, log
