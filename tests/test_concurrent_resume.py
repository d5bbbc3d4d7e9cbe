"""Several sessions on one version (issue #10, point 6): every missing replicate runs once, not once per session.

The run and resume processes are real (``KILL_SCRIPT`` of ``test_resume``), killed with
SIGKILL, on a local store and on S3 (moto on loopback). Each execution appends
``condition,replicate,pid`` to one log, so work is counted across all processes.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from s3_server import list_keys, moto_endpoint, s3_bucket  # noqa: F401 - fixtures
from test_resume import KILL_SCRIPT, _kill, executions

from crystallize.store.claims import BlockClaims, holder_file, holder_record, new_holder_id
from crystallize.store.filesystem import Store
from crystallize.store.records import load_outcomes

REPLICATES = 24  # 48 tasks: blocks of one task, so a kill lands inside the claimed set
SLEEP = "0.08"


def _env(work: Path, data_uri: str | None, endpoint: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRYSTALLIZE_")}
    env["EXEC_LOG"] = str(work / "executions.log")
    env["STEP_SLEEP"] = SLEEP
    if data_uri is not None:
        env["CRYSTALLIZE_DATA_URI"] = data_uri
    if endpoint is not None:
        env["CRYSTALLIZE_S3_ENDPOINT"] = endpoint
    return env


def _launch(script: Path, work: Path, env: dict[str, str], *args: str) -> subprocess.Popen:
    work.mkdir(parents=True, exist_ok=True)
    index = len(list(work.glob("stderr-*.txt")))
    return subprocess.Popen(
        [sys.executable, str(script), *args],
        cwd=work,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(work / f"stderr-{index}.txt", "w"),
        start_new_session=True,
    )


def _stderr(work: Path) -> str:
    return "\n".join(p.read_text() for p in sorted(work.glob("stderr-*.txt")))


def _wait_for(condition, what: str, proc: subprocess.Popen, work: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the run ended before {what}:\n{_stderr(work)}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _reference(tmp_path: Path, script: Path) -> dict:
    ref = tmp_path / "reference"
    env = {**_env(ref, None, None), "STEP_SLEEP": "0"}
    proc = _launch(script, ref, env, "--out", "reference.json")
    proc.wait(timeout=120)
    assert proc.returncode == 0, _stderr(ref)
    return json.loads((ref / "reference.json").read_text())


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "killable.py"
    path.write_text(KILL_SCRIPT.replace("REPLICATES", str(REPLICATES)))
    return path


def _root(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> tuple[str, str | None]:
    if kind == "local":
        return str(tmp_path / "work" / "data"), None
    endpoint = request.getfixturevalue("moto_endpoint")
    bucket = request.getfixturevalue("s3_bucket")
    return f"s3://{bucket}/data", endpoint


EVERY = collections.Counter((c, r) for c in ("baseline", "shifted") for r in range(REPLICATES))


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_four_resumes_of_a_killed_run_run_each_missing_replicate_once(
    kind: str, tmp_path: Path, script: Path, request: pytest.FixtureRequest
) -> None:
    data_uri, endpoint = _root(kind, tmp_path, request)
    work = tmp_path / "work"
    env = _env(work, data_uri, endpoint)
    first = _launch(script, work, env, "--out", "first.json")
    try:
        _wait_for(lambda: len(executions(work)) >= 6, "six replicates ran", first, work)
    finally:
        _kill(first)
    recorded = load_outcomes(Store(data_uri), "killed", 0)
    before = executions(work)
    assert 0 < len(recorded) < sum(EVERY.values()), "the kill must land mid-run"

    resumes = [_launch(script, work, env, "--strategy", "resume", "--out", f"out-{i}.json") for i in range(4)]
    for proc in resumes:
        proc.wait(timeout=240)
        assert proc.returncode == 0, _stderr(work)
    reference = _reference(tmp_path, script)

    rerun = collections.Counter(executions(work)[len(before) :])
    missing = EVERY - collections.Counter(list(recorded))
    assert rerun == missing, f"ran {sum(rerun.values())} replicate(s) for {sum(missing.values())} missing"
    for index in range(4):
        out = json.loads((work / f"out-{index}.json").read_text())
        assert out["metrics"] == reference["metrics"], f"resume {index} differs from the uninterrupted run"
        assert out["errors"] == {} and out["version"] == 0


def test_a_killed_resume_is_taken_over_by_the_next(tmp_path: Path, script: Path) -> None:
    """Its claims die with it (same machine: at once, not after the lease expiry)."""
    work = tmp_path / "work"
    data_uri = str(work / "data")
    env = _env(work, data_uri, None)
    first = _launch(script, work, env, "--out", "first.json")
    try:
        _wait_for(lambda: len(executions(work)) >= 4, "four replicates ran", first, work)
    finally:
        _kill(first)
    count = len(executions(work))
    second = _launch(script, work, env, "--strategy", "resume", "--out", "second.json")
    try:
        _wait_for(lambda: len(executions(work)) >= count + 6, "the resume ran six", second, work)
    finally:
        _kill(second)
    claims = list((work / "data/killed/v0/claims").rglob("*"))
    assert claims, "the killed resume held claims"
    recorded = load_outcomes(Store(data_uri), "killed", 0)
    before = executions(work)
    started = time.monotonic()
    third = _launch(script, work, env, "--strategy", "resume", "--out", "third.json")
    third.wait(timeout=120)
    assert third.returncode == 0, _stderr(work)
    assert time.monotonic() - started < 50, "the dead session's claims were waited out, not taken over"
    rerun = collections.Counter(executions(work)[len(before) :])
    assert rerun == EVERY - collections.Counter(list(recorded))
    reference = _reference(tmp_path, script)
    assert json.loads((work / "third.json").read_text())["metrics"] == reference["metrics"]


def test_a_resume_while_the_run_still_goes_waits_for_it_and_repeats_nothing(tmp_path: Path, script: Path) -> None:
    work = tmp_path / "work"
    env = _env(work, str(work / "data"), None)
    first = _launch(script, work, env, "--out", "first.json")
    _wait_for(lambda: len(executions(work)) >= 3, "three replicates ran", first, work)
    resume = _launch(script, work, env, "--strategy", "resume", "--out", "resume.json")
    for proc in (first, resume):
        proc.wait(timeout=120)
        assert proc.returncode == 0, _stderr(work)
    assert collections.Counter(executions(work)) == EVERY
    runs = [json.loads((work / name).read_text()) for name in ("first.json", "resume.json")]
    assert runs[0]["metrics"] == runs[1]["metrics"] == _reference(tmp_path, script)["metrics"]


# ---------------------------------------------------------------- the primitives


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "local":
        return Store(tmp_path / "root")
    endpoint = request.getfixturevalue("moto_endpoint")
    bucket = request.getfixturevalue("s3_bucket")
    del endpoint
    return Store(f"s3://{bucket}/root")


def test_exactly_one_of_eight_concurrent_creators_wins(store: Store) -> None:
    results: dict[int, bool] = {}
    barrier = threading.Barrier(8)

    def contend(index: int) -> None:
        barrier.wait()
        results[index] = store.create_exclusive("exp/v0/claims/3/0", f"holder-{index}".encode())

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [i for i, won in results.items() if won]
    assert len(winners) == 1
    assert store.read_exclusive("exp/v0/claims/3/0") == [f"holder-{winners[0]}".encode()]
    assert not store.create_exclusive("exp/v0/claims/3/0", b"late")


def _holder(store: Store, *, renewed_ago: float, machine: str = "another-machine") -> str:
    holder = new_holder_id()
    record = holder_record(holder, 60.0)
    record.update(machine=machine, renewed_at=time.time() - renewed_ago, pid=1)
    store.write_bytes(holder_file("exp", 0, holder), json.dumps(record).encode())
    return holder


def test_a_claim_on_another_machine_counts_until_its_lease_expires(store: Store) -> None:
    live, dead = _holder(store, renewed_ago=5.0), _holder(store, renewed_ago=61.0)
    for block, holder in ((0, live), (1, dead)):
        assert BlockClaims(store, "exp", 0, holder, 3).acquire([block])[0] == [block]
    mine = BlockClaims(store, "exp", 0, new_holder_id(), 3)
    mine.begin()  # `dead` was gone already: its block belongs to an earlier round
    claimed, finished, held = mine.acquire([0, 1, 2])
    assert (claimed, finished, held) == ([1, 2], [], [0])
    assert mine.mine == {1: 1, 2: 0}  # block 1 taken over at the next generation


def test_a_block_finished_in_this_round_is_adopted_and_an_earlier_rounds_is_claimed_again(store: Store) -> None:
    earlier, current = _holder(store, renewed_ago=120.0), _holder(store, renewed_ago=1.0)
    old = BlockClaims(store, "exp", 0, earlier, 2)
    old.acquire([0])
    old.finish(0)
    mine = BlockClaims(store, "exp", 0, new_holder_id(), 2)
    mine.begin()
    now = BlockClaims(store, "exp", 0, current, 2)
    assert now.acquire([1]) == ([1], [], [])
    now.finish(1)
    claimed, finished, held = mine.acquire([0, 1])
    assert (claimed, finished, held) == ([0], [1], [])  # block 0: failed replicates of the old round rerun


def test_a_session_that_ends_frees_its_claims_at_once(tmp_path: Path) -> None:
    from crystallize.store.lease import Lease

    store = Store(tmp_path / "root")
    lease = Lease(store, "exp", 0, expires_after=60.0, renew_every=10.0)
    lease.start()
    assert BlockClaims(store, "exp", 0, lease.holder, 1).acquire([0])[0] == [0]
    other = BlockClaims(store, "exp", 0, new_holder_id(), 1)
    assert other.acquire([0]) == ([], [], [0])
    lease.stop()
    assert other.acquire([0]) == ([0], [], [])
    assert list_keys is not None  # the S3 helpers import (fixtures) stay used
