"""Progress reporting on the driver: a tqdm bar by default; the CLI installs its own display.

A reporter is a context manager created per batch of tasks; it is told about every
outcome as it is folded. Install another with :func:`set_progress_factory`.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from .plan import ReplicateOutcome, ReplicateTask


class ProgressReporter(Protocol):
    def __enter__(self) -> ProgressReporter: ...

    def __exit__(self, *exc: object) -> Any: ...

    def update(self, outcome: ReplicateOutcome) -> None: ...


ProgressFactory = Callable[[str, str, Sequence[ReplicateTask], "bool | None"], ProgressReporter]


class TqdmReporter:
    """One bar for the batch; off when ``enabled`` is False, or None and stderr is not a terminal."""

    def __init__(self, experiment: str, label: str, tasks: Sequence[ReplicateTask], enabled: bool | None) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=len(tasks),
            desc=label or experiment,
            unit="rep",
            disable=None if enabled is None else not enabled,
            leave=False,
            mininterval=0.2,
            file=sys.stderr,
        )
        self.failed = 0
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> TqdmReporter:
        from tqdm.contrib.logging import logging_redirect_tqdm

        self._stack.enter_context(self.bar)
        if not self.bar.disable:
            self._stack.enter_context(logging_redirect_tqdm())
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def update(self, outcome: ReplicateOutcome) -> None:
        if self.bar.disable:
            return
        self.bar.update(1)
        if outcome.error is not None:
            self.failed += 1
            self.bar.set_postfix(failed=self.failed, refresh=False)


_FACTORY: ProgressFactory = TqdmReporter


def set_progress_factory(factory: ProgressFactory | None) -> ProgressFactory:
    """Install ``factory`` (None restores the tqdm bar); returns the previous one."""
    global _FACTORY
    previous = _FACTORY
    _FACTORY = factory or TqdmReporter
    return previous


def make_reporter(experiment: str, label: str, tasks: Sequence[ReplicateTask], enabled: bool | None) -> Any:
    return _FACTORY(experiment, label, tasks, enabled)
