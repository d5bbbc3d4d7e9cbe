"""Every process of the private Ray a driver started dies with the driver, even on SIGKILL.

Ray's kernel fate sharing covers only the driver's own children (GCS, raylet, ...); the agents
and workers the raylet starts used to outlive a killed driver (issue #10, point 8). The driver
runs in its own process here and starts its private Ray through ``ensure_connected``.
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

    assert ensure_connected(None, init_kwargs={{"num_cpus": 1, "_temp_dir": {temp_dir!r}}}) == "local"

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
    """A driver process that starts a private Ray (and exits when its stdin closes), and Ray's temp dir."""
    temp_dir = Path(tempfile.mkdtemp(prefix="cray-f-", dir="/tmp"))  # short: Ray puts sockets there
    script = tmp_path / "driver.py"
    script.write_text(SCRIPT.format(temp_dir=str(temp_dir)))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
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
    return "".join(p.read_text() for p in temp_dir.glob("session_2*/logs/crystallize_fate.log"))


@pytest.mark.timeout(120)
def test_every_process_of_the_private_ray_dies_within_seconds_of_a_sigkilled_driver(
    driver: tuple[subprocess.Popen[str], Path], request: pytest.FixtureRequest
) -> None:
    proc, temp_dir = driver
    _wait_ready(proc)
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
    assert "died; stopping" in _fate_log(temp_dir)


@pytest.mark.timeout(120)
def test_on_a_normal_exit_ray_stops_itself_and_the_watchdog_just_exits(
    driver: tuple[subprocess.Popen[str], Path], request: pytest.FixtureRequest
) -> None:
    proc, temp_dir = driver
    _wait_ready(proc)
    ours = _ray_processes(proc, request.node.ray_processes)
    assert any("crystallize_ray/fate.py" in name for name in _names(ours)), "no watchdog"
    assert proc.stdin is not None
    proc.stdin.close()
    assert proc.wait(timeout=60) == 0
    deadline = time.monotonic() + 15
    while _alive(ours) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _alive(ours) == []
    log = _fate_log(temp_dir)
    assert "its Ray with it" in log or "nothing to watch" in log, log
    assert "died; stopping" not in log, log
