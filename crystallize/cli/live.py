"""The live display of ``crystallize run``: one rich progress bar per condition, log lines above the bars.

The engine asks the installed progress factory for a reporter per batch of tasks
(one per ``run()``, one per optimizer trial); every reporter adds its bars to the one
``Progress`` the command owns, so the experiments of a graph share the display.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from ..engine.plan import ReplicateOutcome, ReplicateTask


class _StatusColumn(ProgressColumn):
    """Failed replicates in red, cached step hits highlighted; nothing when there are none."""

    def render(self, task: Task) -> Text:
        text = Text()
        failed = task.fields.get("failed", 0)
        cached = task.fields.get("cached", 0)
        if failed:
            text.append(f"{failed} failed", style="bold red")
        if cached:
            if failed:
                text.append("  ")
            text.append(f"\u26a1{cached} cached", style="bold cyan")
        return text


class LiveDisplay:
    """The command's progress display; ``reporter`` is what :func:`set_progress_factory` installs."""

    def __init__(self, console: Console, enabled: bool) -> None:
        self.console = console
        self.enabled = enabled
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=32),
            MofNCompleteColumn(),
            _StatusColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
            refresh_per_second=8,
            disable=not enabled,
        )

    def __enter__(self) -> LiveDisplay:
        if self.enabled:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.progress.refresh()
            self.progress.stop()

    def reporter(
        self, experiment: str, label: str, tasks: Sequence[ReplicateTask], enabled: bool | None
    ) -> ConditionBars:
        return ConditionBars(self, experiment, label, tasks, self.enabled and enabled is not False)


class ConditionBars:
    """The bars of one batch of tasks: one per condition (done/total, failed, cached step hits, ETA)."""

    def __init__(
        self, display: LiveDisplay, experiment: str, label: str, tasks: Sequence[ReplicateTask], enabled: bool
    ) -> None:
        self.display = display
        self.enabled = enabled
        self.totals: dict[str, int] = {}
        for task in tasks:
            self.totals[task.condition] = self.totals.get(task.condition, 0) + 1
        prefix = f"{experiment} {label}".strip()
        self.descriptions = {c: f"{prefix} \u00b7 {c}" for c in self.totals}
        self.bars: dict[str, TaskID] = {}
        self.failed: dict[str, int] = dict.fromkeys(self.totals, 0)
        self.cached: dict[str, int] = dict.fromkeys(self.totals, 0)

    def __enter__(self) -> ConditionBars:
        if self.enabled:
            for condition, total in self.totals.items():
                self.bars[condition] = self._add(condition, total)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.display.progress.refresh()

    def _add(self, condition: str, total: int) -> TaskID:
        return self.display.progress.add_task(self.descriptions[condition], total=total, failed=0, cached=0)

    def update(self, outcome: ReplicateOutcome) -> None:
        condition = outcome.condition
        if outcome.error is not None:
            self.failed[condition] = self.failed.get(condition, 0) + 1
        hits = sum(1 for step in outcome.steps if step.cache_hit)
        self.cached[condition] = self.cached.get(condition, 0) + hits
        if not self.enabled:
            return
        if condition not in self.bars:  # a condition the batch did not announce: give it a bar anyway
            self.totals[condition] = 1
            self.descriptions[condition] = condition
            self.bars[condition] = self._add(condition, 1)
        self.display.progress.update(
            self.bars[condition],
            advance=1,
            failed=self.failed[condition],
            cached=self.cached[condition],
        )


@contextmanager
def command_logging(console: Console, level: int, *, debug: bool = False) -> Iterator[logging.Handler]:
    """Route the ``crystallize`` logger (and warnings from the rest) to stderr for the command's life.

    On a terminal the lines go through rich (above the live bars, never through them);
    into a file or a pipe they are plain ``LEVEL logger: message`` lines.
    """
    handler: logging.Handler
    if console.is_terminal:
        handler = RichHandler(
            console=console,
            show_time=debug,
            show_path=debug,
            markup=False,
            rich_tracebacks=debug,
            log_time_format="[%X]",
        )
    else:
        handler = logging.StreamHandler(console.file)
        handler.setFormatter(
            logging.Formatter(("%(asctime)s " if debug else "") + "%(levelname)s %(name)s: %(message)s")
        )
    package = logging.getLogger("crystallize")
    root = logging.getLogger()
    saved: dict[str, Any] = {"level": package.level, "propagate": package.propagate}
    package.addHandler(handler)
    package.setLevel(level)
    package.propagate = False
    root.addHandler(handler)  # user code and libraries: at the root's own level (warnings by default)
    logging.captureWarnings(True)  # warnings.warn(...) as log lines too, so they do not tear the bars
    try:
        yield handler
    finally:
        logging.captureWarnings(False)
        package.removeHandler(handler)
        root.removeHandler(handler)
        package.setLevel(saved["level"])
        package.propagate = saved["propagate"]
