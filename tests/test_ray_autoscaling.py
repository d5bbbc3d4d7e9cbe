"""Clusters that grow while a run goes: nodes that join get work, an autoscaler is shown the demand.

The two cluster scenarios run in their own processes (tests/autoscale_scenarios.py): the
test session holds its own Ray. The rest runs on the session's plain local Ray.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")
from ray_steps import record, zero  # noqa: E402

from crystallize import Experiment, Pipeline, SeedPlugin  # noqa: E402
from crystallize.errors import ExecutionError  # noqa: E402
from crystallize_ray import RayExecution, capacity  # noqa: E402
from crystallize_ray.capacity import Autoscaler, NodeType  # noqa: E402
from crystallize_ray.executor import RayExecutor  # noqa: E402

SCRIPT = Path(__file__).with_name("autoscale_scenarios.py")
AWS_YAML = Path(__file__).resolve().parent.parent / "cluster" / "aws.yaml"
REQUEST_KEY = b"autoscaler_resource_request"  # where request_resources puts a v1 autoscaler's request


def _stop_tree(pid: int) -> None:
    """Stop a head the scenario started, should the scenario itself have died first."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for proc in procs:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=5)


def run_scenario(name: str, workdir: Path, timeout: float) -> dict:
    try:
        completed = subprocess.run(
            [sys.executable, str(SCRIPT), name, str(workdir)], capture_output=True, text=True, timeout=timeout
        )
        stdout, stderr = completed.stdout, completed.stderr
    except subprocess.TimeoutExpired as exc:
        stdout = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        stderr = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
    heads = [int(line.split()[1]) for line in stdout.splitlines() if line.startswith("HEAD ")]
    if not any(line.startswith("STOPPED ") for line in stdout.splitlines()):
        for pid in heads:
            _stop_tree(pid)
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"scenario {name} printed no result:\n{stdout[-3000:]}\n{stderr[-3000:]}"
    return json.loads(lines[-1][len("RESULT ") :])


@pytest.mark.timeout(150)
def test_worker_nodes_added_mid_run_get_work_and_in_flight_work_grows(tmp_path: Path) -> None:
    seen = run_scenario("joining", tmp_path, timeout=140)
    assert seen["failed"] == 0 and seen["metrics_equal_serial"], seen
    assert seen["replicates_traced"] == 80  # 40 replicates x 2 conditions, each ran once
    assert seen["added_while_running"], seen
    assert set(seen["added"]) & set(seen["nodes_used"]), seen  # replicates landed on nodes that joined
    assert len(seen["nodes_used"]) >= 2
    limits = [limit for _, limit in seen["executor"]["in_flight_limits"]]
    assert limits[0] == 4 and max(limits) >= 8, limits  # 1 CPU at start (4 in flight), 4 per CPU as nodes join


@pytest.mark.timeout(150)
def test_fake_autoscaler_adds_workers_for_a_run_that_starts_with_none(tmp_path: Path) -> None:
    seen = run_scenario("fake_autoscaler", tmp_path, timeout=140)
    assert seen["cpus_at_start"] == 0.0  # a head with no CPUs passed the resource check
    assert seen["failed"] == 0 and seen["metrics_equal_serial"], seen
    assert seen["replicates_traced"] == 60
    workers = [n for n in seen["nodes_used"] if n != seen["head"]]
    assert len(workers) >= 2 and seen["head"] not in seen["nodes_used"], seen  # nodes the autoscaler added
    assert "cpu_worker" in seen["executor"]["autoscaler"]
    # The demand shown to the autoscaler: capped by max_cpus=2, withdrawn when the run ended.
    assert seen["requests"][0] == [{"CPU": 1.0}, {"CPU": 1.0}], seen["requests"]
    assert seen["request_after"] == []


# -- on the session's plain local Ray --------------------------------------------------------
uses_ray = pytest.mark.usefixtures("ray_session")


def experiment(plugin: RayExecution, replicates: int = 20) -> Experiment:
    return Experiment(
        datasource=zero(), pipeline=Pipeline([record()]), plugins=[SeedPlugin(seed=2), plugin], replicates=replicates
    )


def connected_executor(**options) -> RayExecutor:
    executor = RayExecutor(**options)
    executor.connected_as = "existing"
    return executor


@uses_ray
def test_a_plain_local_ray_has_no_autoscaler_and_a_run_asks_it_for_nothing() -> None:
    assert capacity.find_autoscaler() is None  # its monitor runs a read-only provider
    sent = capacity.DEMAND.requests_sent
    result = experiment(RayExecution(progress=False, max_cpus=8)).run()
    assert result.failed == 0
    assert capacity.DEMAND.requests_sent == sent
    assert "autoscaler" not in result.provenance["executor"]


@uses_ray
def test_feasibility_counts_the_node_types_an_autoscaler_can_add(caplog: pytest.LogCaptureFixture) -> None:
    executor = connected_executor(num_gpus=1)  # no node of the session's Ray has a GPU
    executor.autoscaler = None
    with pytest.raises(ExecutionError, match="No node in the Ray cluster") as raised:
        executor._check_feasible()
    assert "if an autoscaler will add them" not in str(raised.value)

    executor.autoscaler = Autoscaler((NodeType("gpu_worker", {"CPU": 4.0, "GPU": 1.0}, 2),), 4, "test")
    executor._check_feasible()  # the autoscaler can add a node that fits

    executor.autoscaler = Autoscaler((NodeType("cpu_worker", {"CPU": 8.0}, 8),), 8, "test")
    with pytest.raises(ExecutionError, match="cpu_worker") as raised:
        executor._check_feasible()
    assert "none of which fits" in str(raised.value)

    executor.autoscaler = Autoscaler(None, None, "autoscaler v2 is enabled")  # types not readable here
    with caplog.at_level("WARNING", logger="crystallize_ray.executor"):
        executor._check_feasible()
    assert "wait for an autoscaler" in caplog.text


def test_node_types_are_read_from_a_cluster_launcher_config(tmp_path: Path) -> None:
    config = tmp_path / "cluster.yaml"
    config.write_text(
        "max_workers: 3\nhead_node_type: head\navailable_node_types:\n"
        "  head: {resources: {CPU: 0}, max_workers: 0}\n"
        "  small: {resources: {CPU: 2}, min_workers: 0, max_workers: 3}\n"
        "  big: {resources: {CPU: 8, GPU: 1}, max_workers: 1}\n"
    )
    found = capacity.read_autoscaling_config(config)
    assert found is not None and [t.name for t in found.node_types or ()] == ["small", "big"]
    assert found.can_fit({"CPU": 1.0}) and found.can_fit({"CPU": 1.0, "GPU": 1.0, "memory": 1e9})
    assert found.can_fit({"CPU": 16.0}) is False
    assert found.max_slots({"CPU": 1.0}) == 8 + 2 + 2  # at most 3 workers: the big one and two small ones
    assert found.max_slots({"GPU": 1.0}) == 1
    aws = capacity.read_autoscaling_config(AWS_YAML)  # cpu_worker's resources come from its instance type
    assert aws is not None and aws.can_fit({"CPU": 1.0}) is None and aws.max_slots({"CPU": 1.0}) is None


@uses_ray
def test_demands_of_runs_add_up_and_clearing_withdraws_the_request() -> None:
    from ray.experimental.internal_kv import _internal_kv_get

    board = capacity.DemandBoard()
    board.set("a", {"CPU": 1.0}, 3)
    board.set("b", {"CPU": 2.0}, 1)
    assert json.loads(_internal_kv_get(REQUEST_KEY)) == [{"CPU": 1.0}] * 3 + [{"CPU": 2.0}]
    board.clear("a")
    assert json.loads(_internal_kv_get(REQUEST_KEY)) == [{"CPU": 2.0}]
    sent = board.requests_sent
    board.set("b", {"CPU": 2.0}, 1)  # unchanged: nothing sent
    assert board.requests_sent == sent
    board.clear("b")
    assert json.loads(_internal_kv_get(REQUEST_KEY)) == []


class RecordingBoard(capacity.DemandBoard):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[list[dict[str, float]]] = []

    def _publish(self) -> None:
        before = self.requests_sent
        super()._publish()
        if self.requests_sent != before:
            self.sent.append(self.bundles())


@uses_ray
def test_max_cpus_caps_the_demand_and_the_run_withdraws_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from ray.experimental.internal_kv import _internal_kv_get

    board = RecordingBoard()
    monkeypatch.setattr(capacity, "DEMAND", board)
    # The session's Ray has no autoscaler; pretend it has one that can add up to 4 two-CPU nodes.
    known = Autoscaler((NodeType("cpu_worker", {"CPU": 2.0}, 4),), 4, "test")
    monkeypatch.setattr(capacity, "find_autoscaler", lambda: known)
    result = experiment(RayExecution(progress=False, max_cpus=3), replicates=20).run()
    assert result.failed == 0
    assert board.sent[0] == [{"CPU": 1.0}] * 3  # 20 replicates left, max_cpus=3 at 1 CPU each
    assert board.sent[-1] == []
    assert json.loads(_internal_kv_get(REQUEST_KEY)) == []
    assert "cpu_worker" in result.provenance["executor"]["autoscaler"]
