"""Run-level log lines through the ``crystallize`` logger (handlers are the application's business)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ValidationError
from .base import BasePlugin

if TYPE_CHECKING:
    from ..context import FrozenContext
    from ..engine.plan import RunSpec
    from ..experiment import Experiment
    from ..results import Result
    from ..steps import PipelineStep

logger = logging.getLogger("crystallize.run")


@dataclass
class LoggingPlugin(BasePlugin):
    """Logs the start and summary of every run; with ``verbose``, every step of every replicate."""

    verbose: bool = False
    log_level: str = "INFO"
    _started: float = field(default=0.0, init=False, repr=False)

    def __post_init__(self) -> None:
        _ = self.level  # a bad level fails here, where it was written, not at the first run

    @property
    def level(self) -> int:
        """``log_level`` as a number; a name (any case) or a number is accepted, anything else is refused."""
        value: Any = self.log_level
        if isinstance(value, str):
            value = logging.getLevelName(value.strip().upper())  # an int for a known name
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError(
                f"LoggingPlugin(log_level={self.log_level!r}) is not a logging level; use one of "
                "'DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL' (or a number such as logging.INFO)"
            )
        return value

    def before_run(self, experiment: Experiment) -> None:
        self._started = time.perf_counter()
        logger.log(self.level, "Experiment '%s' starting", getattr(experiment, "name", "?"))

    def after_step(self, experiment: RunSpec, step: PipelineStep, data: Any, ctx: FrozenContext) -> None:
        if self.verbose:
            logger.log(
                self.level,
                "replicate %s, condition %s: step %s done",
                ctx.get("replicate"),
                ctx.get("condition"),
                step.name,
            )

    def after_run(self, experiment: Experiment, result: Result) -> None:
        if result is None:
            return
        elapsed = time.perf_counter() - self._started
        best = [f"{h.name}: {h.ranking.get('best')}" for h in result.metrics.hypotheses]
        logger.log(
            self.level,
            "Experiment '%s' finished in %.2fs; %d replicate(s) failed%s",
            getattr(experiment, "name", "?"),
            elapsed,
            result.failed,
            f"; best per hypothesis: {', '.join(best)}" if best else "",
        )
