"""Running a version's tasks block by block under claims, so concurrent sessions share, not repeat, work.

A ``run()`` session (fresh or resumed) claims the blocks it will compute before it runs
them (:mod:`crystallize.store.claims`), runs what in them has no successful outcome, and
marks each block finished once its outcomes are flushed. Blocks another live session
holds are waited for and their outcomes read from the store; blocks of a session that
died are taken over. Every session ends with every task's outcome folded, so each one
returns (and records) the whole run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from .fold import RunFold
from .plan import Conditions, ReplicateOutcome, ReplicateTask

if TYPE_CHECKING:
    from ..store.claims import BlockClaims
    from .driver import RunSession

logger = logging.getLogger(__name__)

Key = tuple[str, int]
POLL_SECONDS = (0.2, 2.0)  # first and longest pause while other sessions hold the rest
REPORT_EVERY_SECONDS = 30.0


def _succeeded(outcome: ReplicateOutcome | None) -> bool:
    return outcome is not None and outcome.error is None


class ClaimedRun:
    """One session's share of a version: claim, run, mark finished; fold in what others ran."""

    def __init__(
        self,
        session: RunSession,
        claims: BlockClaims,
        blocks: Sequence[Sequence[ReplicateTask]],
        recorded: Mapping[Key, ReplicateOutcome],
        fetch_new: Callable[[], Mapping[Key, ReplicateOutcome]],
    ) -> None:
        self.session = session
        self.claims = claims
        self.blocks = [list(block) for block in blocks]
        self.known: dict[Key, ReplicateOutcome] = dict(recorded)
        self.fetch_new = fetch_new
        self.ran = 0  # tasks this session computed

    def execute(self, conditions: Conditions, fold: RunFold) -> None:
        """Fold every task's outcome, computing (under claims) those that have no successful one."""
        pending = set()
        for index, block in enumerate(self.blocks):
            if all(_succeeded(self.known.get(task)) for task in block):
                self._fold(block, fold)  # an earlier round finished it: nothing to claim
            else:
                pending.add(index)
        if not pending:
            return
        self.claims.begin()
        pause, waited_since, last_report = POLL_SECONDS[0], None, 0.0
        while pending:
            claimed, finished, _held = self.claims.acquire(sorted(pending))  # plan order: serial runs stay in order
            if claimed or finished:
                self.known.update(self.fetch_new())
            for index in finished:
                self._adopt(index, conditions, fold)
            if claimed:
                self._run_claimed(claimed, conditions, fold)
            pending -= set(claimed) | set(finished)
            if pending and not claimed and not finished:
                now = time.monotonic()
                waited_since = waited_since or now
                if now - last_report >= REPORT_EVERY_SECONDS:
                    last_report = now
                    count = sum(len(self.blocks[i]) for i in pending)
                    logger.info(
                        "'%s' v%d: waiting for %d replicate task(s) that %s is running (%.0f s so far)",
                        self.session.spec.name,
                        self.session.spec.version,
                        count,
                        self.claims.describe_holders(pending),
                        now - waited_since,
                    )
                time.sleep(pause)
                pause = min(pause * 1.5, POLL_SECONDS[1])
            else:
                pause, waited_since = POLL_SECONDS[0], None

    def _fold(self, tasks: Sequence[ReplicateTask], fold: RunFold) -> None:
        for task in tasks:
            fold.add(self.known[task])

    def _adopt(self, index: int, conditions: Conditions, fold: RunFold) -> None:
        """A block another session of this round finished: take its outcomes as they are."""
        block = self.blocks[index]
        unreadable = [task for task in block if task not in self.known]
        if unreadable:  # e.g. signed with a key this session does not have: computed again, not lost
            logger.warning(
                "'%s' v%d: %d outcome(s) another session recorded cannot be read here; running them again",
                self.session.spec.name,
                self.session.spec.version,
                len(unreadable),
            )
            self._run(unreadable, conditions, fold, lambda _task: None)
        self._fold([task for task in block if task in self.known], fold)

    def _run_claimed(self, claimed: Sequence[int], conditions: Conditions, fold: RunFold) -> None:
        remaining: dict[int, int] = {}
        block_of: dict[Key, int] = {}
        tasks: list[ReplicateTask] = []
        for index in claimed:
            block = self.blocks[index]
            todo = [task for task in block if not _succeeded(self.known.get(task))]
            pending = set(todo)
            self._fold([task for task in block if task not in pending], fold)
            if not todo:
                self.claims.finish(index)
                continue
            remaining[index] = len(todo)
            for task in todo:
                block_of[task] = index
            tasks.extend(todo)

        # A finished block is marked done once a part holding its last outcome is published: at the
        # recorder's own flush cadence, not a flush (and fsyncs) per block.
        awaiting: list[tuple[int, int]] = []  # (block, parts published when its last outcome came)

        def finished_one(task: Key) -> None:
            index = block_of[task]
            remaining[index] -= 1
            if remaining[index] == 0:
                awaiting.append((index, self.session.published_parts()))
            if awaiting:
                published = self.session.published_parts()
                while awaiting and awaiting[0][1] < published:
                    self.claims.finish(awaiting.pop(0)[0])

        self._run(tasks, conditions, fold, finished_one)
        if awaiting:
            self.session.flush_records()
            for index, _ in awaiting:
                self.claims.finish(index)

    def _run(
        self, tasks: list[ReplicateTask], conditions: Conditions, fold: RunFold, after_each: Callable[[Key], None]
    ) -> None:
        if not tasks:
            return
        self.session.execute(tasks, conditions, fold, after_each=after_each)
        self.ran += len(tasks)
