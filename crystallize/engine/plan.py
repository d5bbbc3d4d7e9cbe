"""What crosses the driver/worker boundary: the run spec, tasks and outcomes.

Everything here is picklable and small except ``RunSpec``, which executors ship
once per run (or once per ``optimize()``), never once per task.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from ..constants import BASELINE_CONDITION
from ..seeding import replicate_seed
from .identity import Identities

if TYPE_CHECKING:
    from ..datasource import DataSource
    from ..pipeline import Pipeline
    from ..plugins.base import BasePlugin
    from ..steps import PipelineStep
    from ..treatment import Treatment


class ReplicateTask(NamedTuple):
    """One unit of work: run ``condition`` for ``replicate``."""

    condition: str
    replicate: int


@dataclass(frozen=True)
class SeedConfig:
    """How replicate seeds are made and applied (from the experiment's ``SeedPlugin``)."""

    root_seed: int
    auto_seed: bool = True
    seed_fn: Callable[[int], None] | None = None

    def seed_for(self, replicate: int) -> int:
        return replicate_seed(self.root_seed, replicate) if self.auto_seed else self.root_seed


@dataclass(frozen=True)
class RunSpec:
    """Everything a worker needs to run any replicate of one run, frozen when the run starts.

    Worker-side plugin hooks receive this object as their ``experiment``
    argument: it has ``name``, ``id``, ``pipeline``, ``datasource`` and ``replicates``.
    ``data_uri`` is the data store's location (a folder or URI; None when the run stores
    nothing), so executors can tell whether their workers can reach it.
    """

    name: str
    datasource: DataSource
    pipeline: Pipeline
    initial_ctx: Mapping[str, Any]
    plugins: tuple[BasePlugin, ...]
    seeding: SeedConfig
    replicates: int
    cache_root: str | None = None
    mode: str = "run"
    version: int | None = None
    description: str | None = None
    artifacts_via_driver: bool = False
    identities: Identities | None = None
    data_uri: str | None = None

    @property
    def id(self) -> str:
        return self.name

    @property
    def steps(self) -> list[PipelineStep]:
        return list(self.pipeline.steps)


Conditions = Mapping[str, "Treatment | None"]
"""Condition name -> ``Treatment`` (``None`` for the baseline)."""


@dataclass(frozen=True)
class ErrorRecord:
    """Why a replicate failed, in a form that survives pickling and JSON."""

    stage: str
    exception_type: str
    message: str
    traceback: str
    condition: str = BASELINE_CONDITION
    replicate: int = 0
    exception_types: tuple[str, ...] = ()
    attempts: int = 1

    @property
    def step(self) -> str:
        return self.stage

    def __str__(self) -> str:
        return (
            f"condition '{self.condition}', replicate {self.replicate}, step '{self.stage}': "
            f"{self.exception_type}: {self.message}"
        )


@dataclass(frozen=True)
class ArtifactEntry:
    """Where an artifact went and what it was (not its bytes)."""

    step: str
    name: str
    size: int
    checksum: str
    path: str | None = None
    data: bytes | None = field(default=None, repr=False, compare=False)


class StepRecord(NamedTuple):
    step: str
    seconds: float
    cache_hit: bool = False


@dataclass
class ReplicateOutcome:
    """The small result of one task; the driver folds these as they arrive."""

    condition: str
    replicate: int
    seed: int | None
    metrics: dict[str, list[Any]]
    steps: list[StepRecord] = field(default_factory=list)
    artifacts: list[ArtifactEntry] = field(default_factory=list)
    error: ErrorRecord | None = None
    seconds: float = 0.0
    reads: tuple[str, ...] = ()  # the condition's treatment keys this replicate read

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def task(self) -> ReplicateTask:
        return ReplicateTask(self.condition, self.replicate)

    def __reduce__(self) -> Any:
        # Plain tuples pickle and unpickle several times faster than dataclass state; outcomes
        # cross process boundaries by the million.
        return (
            _outcome_from_state,
            (
                self.condition,
                self.replicate,
                self.seed,
                self.metrics,
                [tuple(s) for s in self.steps],
                self.artifacts,
                self.error,
                self.seconds,
                self.reads,
            ),
        )


def _outcome_from_state(
    condition: str,
    replicate: int,
    seed: int | None,
    metrics: dict[str, list[Any]],
    steps: list[tuple[str, float, bool]],
    artifacts: list[ArtifactEntry],
    error: ErrorRecord | None,
    seconds: float,
    reads: tuple[str, ...] = (),
) -> ReplicateOutcome:
    return ReplicateOutcome(
        condition, replicate, seed, metrics, [StepRecord(*s) for s in steps], artifacts, error, seconds, tuple(reads)
    )
