"""The executor contract, the only thing a new backend implements."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any

from ..engine.plan import Conditions, ReplicateOutcome, ReplicateTask, RunSpec


class Executor(ABC):
    """Runs replicate tasks somewhere and hands back their outcomes.

    Contract:

    * ``start(spec)`` is called once per run (once per ``optimize()``) before any
      ``map``; ship the spec to workers here, not per task, and return the spec they
      run: ``spec`` itself, or a changed copy (Ray on several nodes with a local data
      store returns one whose artifacts travel back to the driver).
    * ``map(tasks, conditions)`` runs every task exactly once in the result (retries
      are the executor's business) and yields one :class:`ReplicateOutcome` per
      task, in completion order, as soon as each is known. A task that fails
      yields an outcome with ``error`` set; ``map`` raises only when the executor
      itself breaks. ``conditions`` maps condition names to treatments (``None``
      for the baseline) and is small; ship it once per call.
    * Workers call :func:`crystallize.engine.replicate.run_tasks` (or the
      generator under it): results must not depend on which worker ran a task.
    * ``stop()`` releases workers; it is called even when ``map`` raised or the
      consumer stopped early (KeyboardInterrupt), and must cancel pending work.
    """

    name: str = "executor"
    concurrent_runs: bool = False
    """Several runs may use executors of this kind at once (an experiment graph then runs
    independent experiments side by side, as Ray's shared cluster allows)."""

    @property
    def shares_driver_filesystem(self) -> bool:
        """Whether workers see the driver's local files, so a local data store or cache folder works as is.

        True for in-machine executors; a remote backend overrides it (Ray: only on one node).
        Known once ``start`` has run.
        """
        return True

    def parallelism(self) -> int:
        """How many replicates can run at once (recorded in provenance; it never changes results)."""
        return 1

    def shares_global_rng(self) -> bool:
        """Whether replicates run at once in one interpreter, sharing ``random``/``numpy.random``.

        Then draws from those global generators depend on timing, and the run warns.
        """
        return False

    def start(self, spec: RunSpec) -> RunSpec:
        """Ship ``spec`` to the workers; return the spec they run (the driver reads that one)."""
        return spec

    @abstractmethod
    def map(self, tasks: Sequence[ReplicateTask], conditions: Conditions) -> Iterator[ReplicateOutcome]:
        """Yield one outcome per task, in completion order."""

    def stop(self) -> None:
        """Release workers and cancel pending work."""

    def describe(self) -> dict[str, Any]:
        """Recorded in provenance: the executor, how many replicates at once, and the cluster it ran on
        (``nodes``, ``cpus``; an executor on this machine alone: one node and the machine's CPUs)."""
        return {"executor": self.name, "parallelism": self.parallelism(), "nodes": 1, "cpus": os.cpu_count()}

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
