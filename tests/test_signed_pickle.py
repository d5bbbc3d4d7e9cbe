"""The ``pickle`` artifact codec signs what it writes and unpickles only what it can verify.

Artifacts live in shared stores; an unsigned pickle there could run any code when a consumer
loads it. Producer and consumer run in worker processes, so the key travels with the run spec.
"""

from __future__ import annotations

import hashlib
import hmac
import pickle
from pathlib import Path

import pytest
from forgery import Booby

from crystallize import Artifact, Experiment, ParallelExecution, Pipeline, SeedPlugin, data_source, pipeline_step
from crystallize.config.codecs import load_pickle, write_pickle
from crystallize.errors import UntrustedEntry
from crystallize.store import signed_pickle


@data_source
def seed_value(ctx):
    return ctx["replicate"]


@pipeline_step()
def make_object(data, ctx, *, dest: Artifact):
    dest.write({"replicate": data, "pairs": [(data, "x")], "set": {data}})
    return data


@pipeline_step()
def read_object(data, ctx):
    return data, {
        "replicate_seen": float(data["replicate"]),
        "pair_is_tuple": float(isinstance(data["pairs"][0], tuple)),
    }


def _process() -> ParallelExecution:
    return ParallelExecution(max_workers=2, executor_type="process", progress=False)


def _producer(out: Artifact) -> Experiment:
    return Experiment(
        seed_value(),
        Pipeline([make_object(dest=out)]),
        [SeedPlugin(seed=1), _process()],
        name="maker",
        outputs=[out],
        replicates=2,
    )


def _consumer(source: Artifact) -> Experiment:
    return Experiment(source, Pipeline([read_object()]), [SeedPlugin(seed=1), _process()], name="reader", replicates=2)


def test_a_pickled_artifact_round_trips_between_worker_processes() -> None:
    out = Artifact("obj.pkl", load_pickle, write_pickle)
    _producer(out).run()
    stored = next(Path("data/maker").rglob("obj.pkl")).read_bytes()
    assert stored.startswith(signed_pickle.MAGIC)
    result = _consumer(Artifact("obj.pkl", load_pickle, producer="maker")).run()
    assert result.errors == {}
    assert result.metrics.baseline.metrics["replicate_seen"] == [0.0, 1.0]
    assert result.metrics.baseline.metrics["pair_is_tuple"] == [1.0, 1.0]


def _replace_artifacts(blob: bytes) -> None:
    for path in Path("data/maker").rglob("obj.pkl"):
        path.write_bytes(blob)


@pytest.mark.parametrize("how", ["unsigned", "other-key", "altered"])
def test_a_pickle_it_cannot_verify_is_never_unpickled(tmp_path: Path, how: str) -> None:
    out = Artifact("obj.pkl", load_pickle, write_pickle)
    _producer(out).run()
    marker = tmp_path / "sprung"
    payload = pickle.dumps(Booby(str(marker)))
    if how == "unsigned":
        blob = payload
    elif how == "other-key":
        mac = hmac.new(b"someone else's key", signed_pickle.MAGIC + payload, hashlib.sha256).digest()
        blob = signed_pickle.MAGIC + mac + payload
    else:
        genuine = next(Path("data/maker").rglob("obj.pkl")).read_bytes()
        blob = genuine[: -len(payload)] + payload if len(genuine) > len(payload) else genuine + payload
    _replace_artifacts(blob)

    result = _consumer(Artifact("obj.pkl", load_pickle, producer="maker")).run()
    assert not marker.exists(), "the forged pickle ran its code"
    assert set(result.errors) == {"baseline_rep_0", "baseline_rep_1"}
    for error in result.errors.values():
        assert "UntrustedEntry" in error.exception_type or "not unpickled" in str(error)
    with pytest.raises(UntrustedEntry, match="not unpickled"):
        load_pickle(blob)
    assert not marker.exists()
