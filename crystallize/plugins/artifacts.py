"""Artifacts and run records on disk: ``<root>/<experiment>/v<N>/...``.

Workers write each artifact as soon as its step finishes (atomically: temp file,
then rename); the driver writes ``run.json`` and ``metrics.parquet`` at the end.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..constants import METADATA_FILENAME
from ..paths import check_relative, check_segment
from .base import BasePlugin

logger = logging.getLogger(__name__)
_VERSION = re.compile(r"^v(\d+)$")


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see all of it or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def list_versions(experiment_dir: Path) -> list[int]:
    if not experiment_dir.is_dir():
        return []
    return sorted(int(m.group(1)) for p in experiment_dir.iterdir() if (m := _VERSION.match(p.name)))


def claim_version(experiment_dir: Path) -> int:
    """Create ``v<N>`` with N one past the highest; ``mkdir`` makes the claim atomic."""
    experiment_dir.mkdir(parents=True, exist_ok=True)
    candidate = max(list_versions(experiment_dir), default=-1) + 1
    while True:
        try:
            (experiment_dir / f"v{candidate}").mkdir()
            return candidate
        except FileExistsError:
            candidate += 1


@dataclass
class ArtifactPlugin(BasePlugin):
    """Stores ``ctx.artifacts`` under ``root_dir/<experiment>/v<N>/replicate_<i>/<condition>/<step>/<name>``.

    Every run claims a new ``v<N>`` (``versioned=False`` reuses ``v0``);
    ``artifact_retention`` keeps only the newest N versions.
    """

    root_dir: str = "data"
    versioned: bool = True
    artifact_retention: int | None = None
    version: int | None = field(default=None, init=False)
    experiment_id: str | None = field(default=None, init=False)
    _root: str | None = field(default=None, init=False, repr=False)

    def before_run(self, experiment: Any) -> None:
        self.experiment_id = check_segment(experiment.id, "experiment name")
        self._root = os.path.abspath(self.root_dir)
        base = Path(self._root) / self.experiment_id
        if self.versioned:
            self.version = claim_version(base)
        else:
            self.version = 0
            (base / "v0").mkdir(parents=True, exist_ok=True)
        self._prune(base)

    @property
    def run_dir(self) -> Path | None:
        if self._root is None or self.experiment_id is None or self.version is None:
            return None
        return Path(self._root) / self.experiment_id / f"v{self.version}"

    def after_step(self, experiment: Any, step: Any, data: Any, ctx: Any) -> None:
        if not len(ctx.artifacts):
            return
        run_dir = self.run_dir
        if run_dir is None or getattr(experiment, "mode", "run") == "apply":
            return
        for record in ctx.artifacts:
            if record.step_name != step.name or record.path is not None:
                continue
            check_relative(record.name, f"artifact name (step '{step.name}')")
            dest = (
                run_dir
                / f"replicate_{ctx['replicate']}"
                / check_segment(ctx["condition"], "condition name")
                / check_segment(step.name, "step name")
                / record.name
            )
            write_atomic(dest, record.data)
            record.path = str(dest)

    def after_run(self, experiment: Any, result: Any) -> None:
        run_dir = self.run_dir
        if run_dir is None or result is None:
            return
        record = {
            "experiment": self.experiment_id,
            "version": self.version,
            "provenance": result.provenance,
            "artifacts": {
                condition: [entry.__dict__ for entry in entries] for condition, entries in result.artifacts.items()
            },
            "errors": {
                condition: {str(rep): err.__dict__ for rep, err in errs.items()}
                for condition, errs in result.errors.items()
            },
            "hypotheses": [
                {"name": h.name, "results": h.results, "ranking": h.ranking, "dropped_pairs": h.dropped_pairs}
                for h in result.metrics.hypotheses
            ],
        }
        write_atomic(run_dir / METADATA_FILENAME, json.dumps(record, indent=2, default=_json_default).encode())
        import pyarrow.parquet as pq

        tmp = run_dir / ".metrics.parquet.tmp"
        pq.write_table(result.to_arrow(), tmp)
        os.replace(tmp, run_dir / "metrics.parquet")

    def _prune(self, base: Path) -> None:
        if not self.artifact_retention or self.artifact_retention < 1:
            return
        versions = list_versions(base)
        for old in versions[: max(0, len(versions) - self.artifact_retention)]:
            shutil.rmtree(base / f"v{old}", ignore_errors=True)
            logger.info(
                "Removed old artifact version %s/v%d (artifact_retention=%d)", base, old, self.artifact_retention
            )


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return repr(value)


def load_metrics(experiment_dir: str | os.PathLike[str], version: int | None = None) -> tuple[int, Any]:
    """``(version, table)``: the long-form metrics table of a stored run (latest by default)."""
    import pyarrow.parquet as pq

    base = Path(experiment_dir)
    if version is None:
        versions = list_versions(base)
        if not versions:
            raise FileNotFoundError(f"no runs stored under {base}")
        version = versions[-1]
    return version, pq.read_table(base / f"v{version}" / "metrics.parquet")
