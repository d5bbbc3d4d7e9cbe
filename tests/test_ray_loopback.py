"""A Ray we start listens on loopback only, with token authentication on (read from the socket table)."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

pytest.importorskip("ray")

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    sys.path.insert(0, {tests!r})
    import psutil
    from ray_steps import record, zero
    from crystallize import Experiment, Pipeline, SeedPlugin
    from crystallize_ray import RayExecution

    exp = Experiment(zero(), Pipeline([record()]), name="loopback", replicates=4,
                     plugins=[SeedPlugin(seed=1), RayExecution(progress=False)])
    result = exp.run()
    me = psutil.Process()
    listening = []
    for proc in [me, *me.children(recursive=True)]:
        try:
            connections = proc.net_connections(kind="inet")
            name = proc.name()
        except psutil.Error:
            continue
        listening += [[name, c.laddr.ip, c.laddr.port] for c in connections if c.status == psutil.CONN_LISTEN]
    import ray
    print("RESULT", json.dumps({{
        "failed": result.failed,
        "listening": listening,
        "node": ray.nodes()[0]["NodeManagerAddress"],
        "auth": os.environ.get("RAY_AUTH_MODE"),
    }}), flush=True)
    """
)


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def listening_sockets(root: psutil.Process) -> list[tuple[str, str, int]]:
    found = []
    for proc in [root, *root.children(recursive=True)]:
        try:
            found += [
                (proc.name(), c.laddr.ip, c.laddr.port)
                for c in proc.net_connections(kind="inet")
                if c.status == psutil.CONN_LISTEN
            ]
        except psutil.Error:
            continue
    return found


def test_the_private_ray_of_ray_execution_listens_on_loopback_only(tmp_path: Path) -> None:
    import json

    script = tmp_path / "loopback.py"
    script.write_text(SCRIPT.format(tests=str(Path(__file__).parent)))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180
    )
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert line is not None, done.stdout + done.stderr
    facts = json.loads(line.removeprefix("RESULT "))
    assert facts["failed"] == 0
    names = {name for name, _, _ in facts["listening"]}
    assert {"gcs_server", "raylet"} <= names, facts["listening"]  # the table really shows Ray's processes
    exposed = [entry for entry in facts["listening"] if not is_loopback(entry[1])]
    assert exposed == [], f"Ray ports open beyond loopback: {exposed}"
    assert is_loopback(facts["node"])
    assert facts["auth"] == "token"


def test_the_test_sessions_ray_listens_on_loopback_only(ray_session) -> None:
    sockets = listening_sockets(psutil.Process())
    assert any(name == "gcs_server" for name, _, _ in sockets), sockets
    exposed = [entry for entry in sockets if not is_loopback(entry[1])]
    assert exposed == [], f"Ray ports open beyond loopback: {exposed}"
