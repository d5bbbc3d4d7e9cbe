"""An ordered list of steps; the engine runs it once per replicate."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from .errors import ValidationError
from .hashing import stable_hash
from .steps import PipelineStep

if TYPE_CHECKING:
    from .context import FrozenContext


class Pipeline:
    """The steps every replicate runs, in order."""

    def __init__(self, steps: Iterable[PipelineStep]) -> None:
        self.steps: list[PipelineStep] = list(steps)
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

    def run(self, data: Any, ctx: FrozenContext) -> Any:
        """Run the steps once in this process, without plugins or cache (handy in tests)."""
        import inspect

        from .engine.replicate import run_awaitable, unpack_step_output

        for step in self.steps:
            output = step(data, ctx)
            if inspect.isawaitable(output):
                output = run_awaitable(output)
            data, metrics = unpack_step_output(output)
            for name, value in (metrics or {}).items():
                ctx.metrics.add(name, value)
        return data
