"""An ordered list of steps; the engine runs it once per replicate."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from .errors import ValidationError
from .hashing import stable_hash
from .steps import PipelineStep

if TYPE_CHECKING:
    from .context import FrozenContext


class Pipeline:
    """The steps every replicate runs, in order."""

    _provenance: tuple[dict[str, Any], ...] = ()

    def __init__(self, steps: Iterable[PipelineStep]) -> None:
        self.steps: list[PipelineStep] = list(steps)
        if not self.steps:
            raise ValidationError("Pipeline must contain at least one step.")
        for index, step in enumerate(self.steps):
            if not isinstance(step, PipelineStep):
                hint = " (did you forget the parentheses, as in add_delta()?)" if callable(step) else ""
                raise ValidationError(f"Pipeline step {index} is a {type(step).__name__}, not a PipelineStep{hint}")

    def __iter__(self) -> Iterator[PipelineStep]:
        return iter(self.steps)

    def __len__(self) -> int:
        return len(self.steps)

    def signature(self) -> str:
        """Human-readable description of the steps, recorded in provenance."""
        return " -> ".join(step.name for step in self.steps)

    @property
    def fingerprint(self) -> str:
        """Digest of the steps, for provenance and unnamed experiment ids (not a cache key)."""
        from .engine.identity import step_identity

        return stable_hash([step_identity(step)[0] for step in self.steps])

    def exit_index(self) -> int:
        """Index of the first ``exit_step``, or of the last step when there is none."""
        for index, step in enumerate(self.steps):
            if step.is_exit:
                return index
        return len(self.steps) - 1

    def __repr__(self) -> str:
        return f"Pipeline({self.signature()})"

    def run(
        self,
        data: Any,
        ctx: FrozenContext,
        *,
        verbose: bool = False,
        progress: bool = False,
        rep: int | None = None,
        condition: str | None = None,
        logger: logging.Logger | None = None,
        return_provenance: bool = False,
        experiment: Any = None,
    ) -> Any:
        """Run the steps once on ``data`` in this process, outside any experiment.

        Cacheable steps use the step cache as an experiment's do; a step's exception is raised as
        :class:`PipelineExecutionError`. Returns the output, or ``(output, provenance)`` with
        ``return_provenance`` (one record per step: see :meth:`get_provenance`). ``verbose`` logs
        every context value a step read at debug level; ``progress`` shows a bar over the steps;
        ``rep`` and ``condition`` name the replicate in errors; ``experiment``'s plugins get their
        ``before_step``/``after_step`` hooks. Works inside a running event loop too.
        """
        from .engine.replicate import drive

        records: list[dict[str, Any]] = []
        program = self._standalone(data, ctx, verbose, progress, rep, condition, logger, experiment, records)
        try:
            output = drive(program)
        finally:
            self._provenance = tuple(records)
        return (output, [dict(r) for r in records]) if return_provenance else output

    async def arun(
        self,
        data: Any,
        ctx: FrozenContext,
        *,
        verbose: bool = False,
        progress: bool = False,
        rep: int | None = None,
        condition: str | None = None,
        logger: logging.Logger | None = None,
        return_provenance: bool = False,
        experiment: Any = None,
    ) -> Any:
        """:meth:`run` for async code: async steps are awaited on the caller's event loop."""
        from .engine.replicate import drive_async

        records: list[dict[str, Any]] = []
        program = self._standalone(data, ctx, verbose, progress, rep, condition, logger, experiment, records)
        try:
            output = await drive_async(program)
        finally:
            self._provenance = tuple(records)
        return (output, [dict(r) for r in records]) if return_provenance else output

    def get_provenance(self) -> list[dict[str, Any]]:
        """One record per step of the last :meth:`run` (up to the failing step when it failed).

        Each has ``step``, ``params``, ``step_hash``, ``input_hash``, ``output_hash``, ``cache_hit``
        and ``ctx_changes``: ``reads`` (key -> value read), ``wrote`` (key -> ``{"before", "after"}``)
        and ``metrics`` (name -> ``{"before", "after"}`` tuples of values).
        """
        return [dict(record) for record in self._provenance]

    def _standalone(
        self,
        data: Any,
        ctx: FrozenContext,
        verbose: bool,
        progress: bool,
        rep: int | None,
        condition: str | None,
        logger: logging.Logger | None,
        experiment: Any,
        records: list[dict[str, Any]],
    ) -> Any:
        from .engine.standalone import standalone_program

        return standalone_program(
            self.steps,
            data,
            ctx,
            verbose=verbose,
            progress=progress,
            rep=rep,
            condition=condition,
            log=logger,
            experiment=experiment,
            records=records,
        )

    def __getstate__(self) -> dict[str, Any]:
        # The last standalone run's provenance holds context values; it is not part of the pipeline.
        state = dict(self.__dict__)
        state.pop("_provenance", None)
        return state
