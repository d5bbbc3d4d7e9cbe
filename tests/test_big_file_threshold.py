"""``ArtifactPlugin(big_file_threshold_mb=)`` as in 0.27: after a versioned run, large artifact files of
the experiment's other finished versions go; their records (and so their results) stay."""

from __future__ import annotations

import pytest
from s3_server import moto_endpoint  # noqa: F401 - fixture used by store_root's S3 side

from crystallize import (
    ArtifactPlugin,
    Experiment,
    Pipeline,
    SeedPlugin,
    SerialExecution,
    data_source,
    load_run,
    pipeline_step,
)
from crystallize.store import layout
from crystallize.store.filesystem import Store

BIG = 1024 * 1024 + 1  # one byte over 1 MiB


@data_source
def zero(ctx):
    return 0


@pipeline_step()
def write_both(data, ctx):
    ctx.artifacts.add("big.bin", b"x" * BIG)
    ctx.artifacts.add("small.txt", b"kept")
    ctx.metrics.add("value", float(ctx["replicate"]))
    return data


def _run(root: str) -> Experiment:
    experiment = Experiment(
        zero(),
        Pipeline([write_both()]),
        [ArtifactPlugin(root_dir=root, big_file_threshold_mb=1), SeedPlugin(seed=3), SerialExecution(progress=False)],
        name="trim",
        replicates=2,
    )
    experiment.run()
    return experiment


def _files(store: Store, version: int) -> set[str]:
    folder = layout.version_dir("trim", version)
    inside = (path[len(folder) + 1 :] for path in store.walk_files(folder))
    return {path for path in inside if path.startswith("replicate_")}


@pytest.mark.parametrize("store_root", ["local", "s3"], indirect=True)
def test_older_versions_lose_their_big_artifacts_and_keep_their_results(store_root: str) -> None:
    store = Store(store_root)
    _run(store_root)
    assert _files(store, 0) == {
        f"replicate_{r}/baseline/write_both/{n}" for r in (0, 1) for n in ("big.bin", "small.txt")
    }
    _run(store_root)
    assert _files(store, 0) == {f"replicate_{r}/baseline/write_both/small.txt" for r in (0, 1)}
    assert len(_files(store, 1)) == 4  # the newest run keeps everything
    for name in (layout.PLAN, layout.RUN_RECORD, layout.METRICS):
        assert store.exists(layout.run_file("trim", 0, name))
    reopened = load_run(f"{store_root}/trim/v0")
    assert reopened.provenance["finished"] is True
    assert reopened.metrics.baseline.metrics["value"] == [0.0, 1.0]


def test_an_unfinished_version_is_not_touched(tmp_path) -> None:
    root = str(tmp_path / "data")
    store = Store(root)
    _run(root)
    store.delete(layout.run_file("trim", 0, layout.RUN_RECORD))  # as if it were still being written
    _run(root)
    assert len(_files(store, 0)) == 4


def test_without_a_threshold_nothing_is_removed(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CRYSTALLIZE_BIG_FILE_THRESHOLD_MB", raising=False)
    root = str(tmp_path / "data")
    for _ in range(2):
        Experiment(
            zero(),
            Pipeline([write_both()]),
            [ArtifactPlugin(root_dir=root), SerialExecution(progress=False)],
            name="trim",
            replicates=2,
        ).run()
    assert len(_files(Store(root), 0)) == 4
