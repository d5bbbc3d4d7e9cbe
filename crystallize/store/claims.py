"""Block claims: which live session computes which replicates of a version, so none runs twice.

Several sessions may work on one version at once: four ``strategy="resume"`` runs started
together, or a resume started while the first run still goes. Each session is a *holder*
with a file ``holders/<id>.json`` that its lease thread renews (:mod:`.lease`). The
version's tasks are cut into at most :data:`MAX_BLOCKS` fixed blocks (the cut depends on
the plan alone, so every session cuts the same way); a session runs a block's tasks only
after it created ``claims/<block>/<generation>`` naming itself, with
:meth:`~crystallize.store.filesystem.Store.create_exclusive`, which exactly one contender
wins. When a block is finished its holder adds ``claims/<block>/<generation>-done``.

A claim counts while its holder lives: its holder file was renewed within its expiry
or, on the same machine, its process is still there (so a resume right after a crash
need not wait for the expiry). A session takes over a dead holder's block by claiming
the next generation. Claims whose holder was already gone when a session began belong to
an earlier round: that session claims their blocks again and reruns what has no
successful outcome, as a resume always did; a block finished by a holder of the same
round is taken as it is, failed replicates included.

Costs per session: one listing of ``claims/``, one create per block it runs and one per
block it finishes, whatever the number of replicates.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, TypeVar

from . import layout
from .filesystem import Store

logger = logging.getLogger(__name__)

CLAIMS = "claims"
HOLDERS = "holders"
MAX_BLOCKS = 64
_DONE_SUFFIX = "-done"

T = TypeVar("T")


def block_size(total: int) -> int:
    """Tasks per block: at most :data:`MAX_BLOCKS` blocks, whatever the run's size."""
    return max(1, math.ceil(total / MAX_BLOCKS))


def cut_blocks(tasks: Sequence[T]) -> list[list[T]]:
    """The plan's tasks (in plan order) cut into blocks; the same cut in every session."""
    size = block_size(len(tasks))
    return [list(tasks[start : start + size]) for start in range(0, len(tasks), size)]


def holder_file(experiment: str, version: int, holder: str) -> str:
    return f"{layout.version_dir(experiment, version)}/{HOLDERS}/{holder}.json"


# ------------------------------------------------------------------ who is alive


@lru_cache(maxsize=1)
def this_machine() -> str:
    """An identity of this kernel and PID namespace: a PID means the same process only within it."""
    parts = [socket.gethostname()]
    for path in ("/proc/sys/kernel/random/boot_id",):
        try:
            with open(path) as handle:
                parts.append(handle.read().strip())
        except OSError:
            parts.append("")
    try:
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    except OSError:
        parts.append("")
    return "|".join(parts)


def process_start(pid: int) -> str | None:
    """When ``pid`` started (clock ticks since boot, from ``/proc``), to tell it from a reused PID."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            text = handle.read()
    except OSError:
        return None
    return text.rsplit(")", 1)[-1].split()[19]  # field 22, counted after the command name


def _process_alive(pid: int, started: str | None) -> bool:
    if started is not None and os.path.exists("/proc/self/stat"):
        return process_start(pid) == started
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder_record(holder: str, expires_after: float) -> dict[str, Any]:
    return {
        "holder": holder,
        "renewed_at": time.time(),
        "expires_after": expires_after,
        "pid": os.getpid(),
        "started": process_start(os.getpid()),
        "host": socket.gethostname(),
        "machine": this_machine(),
    }


def record_alive(record: dict[str, Any], now: float | None = None) -> bool:
    """Whether the session a holder record describes still runs."""
    try:
        if record.get("machine") == this_machine():
            started = record.get("started")
            return _process_alive(int(record["pid"]), started if isinstance(started, str) else None)
        renewed, expires = float(record["renewed_at"]), float(record["expires_after"])
    except (KeyError, TypeError, ValueError):
        return False  # a damaged record protects nothing
    return (time.time() if now is None else now) < renewed + expires


def new_holder_id() -> str:
    return f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}"


# ------------------------------------------------------------------ claims


@dataclass
class BlockState:
    """What the store says of one block's newest claim."""

    generation: int | None = None  # None: never claimed
    done: bool = False
    owners: list[str] = field(default_factory=list)


class BlockClaims:
    """One session's view of, and claims on, the blocks of a version."""

    def __init__(self, store: Store, experiment: str, version: int, holder: str, blocks: int) -> None:
        self.store = store
        self.experiment = experiment
        self.version = version
        self.holder = holder
        self.blocks = blocks
        self.folder = f"{layout.version_dir(experiment, version)}/{CLAIMS}"
        self.mine: dict[int, int] = {}  # block -> generation this session holds
        self._earlier_round: dict[int, int] = {}  # block -> generation whose holder was gone at start
        self._alive: dict[str, bool] = {}

    def _generation_path(self, block: int, generation: int) -> str:
        return f"{self.folder}/{block}/{generation}"

    def survey(self) -> dict[int, BlockState]:
        """Every claimed block's newest generation, from one listing."""
        states: dict[int, BlockState] = {}
        prefix = self.folder + "/"
        for path in self.store.walk_files(self.folder):
            parts = path[len(prefix) :].split("/") if path.startswith(prefix) else []
            if len(parts) < 2 or not parts[0].isdigit():
                continue
            block, name = int(parts[0]), parts[1]
            done = name.endswith(_DONE_SUFFIX)
            digits = name[: -len(_DONE_SUFFIX)] if done else name
            if not digits.isdigit() or name.startswith("."):
                continue
            generation = int(digits)
            state = states.setdefault(block, BlockState())
            if state.generation is None or generation > state.generation:
                state.generation, state.done = generation, done
            elif generation == state.generation:
                state.done = state.done or done
        return states

    def owners(self, block: int, generation: int) -> list[str]:
        holders = []
        for payload in self.store.read_exclusive(self._generation_path(block, generation)):
            try:
                holders.append(str(json.loads(payload)["holder"]))
            except (ValueError, KeyError, TypeError):
                continue
        return holders

    def holder_alive(self, holder: str, *, fresh: bool = False) -> bool:
        if holder == self.holder:
            return True
        if fresh or holder not in self._alive:
            try:
                record = json.loads(self.store.read_bytes(holder_file(self.experiment, self.version, holder)))
            except (FileNotFoundError, ValueError):
                alive = False
            else:
                alive = isinstance(record, dict) and record_alive(record)
            self._alive[holder] = alive
        return self._alive[holder]

    def begin(self) -> None:
        """Note the claims whose holders are gone now: they are an earlier round's, and their
        blocks are claimed again (a holder of this round that dies later is taken over too)."""
        for block, state in self.survey().items():
            assert state.generation is not None
            if not any(self.holder_alive(o, fresh=True) for o in self.owners(block, state.generation)):
                self._earlier_round[block] = state.generation

    def acquire(self, wanted: Iterable[int]) -> tuple[list[int], list[int], list[int]]:
        """Claim what is free among ``wanted``: (claimed now, finished by this round's holders, held by live ones)."""
        states = self.survey()
        claimed, finished, held = [], [], []
        for block in wanted:
            state = states.get(block, BlockState())
            earlier = self._earlier_round.get(block)
            if state.generation is not None and state.generation != earlier:
                if state.done:
                    finished.append(block)
                    continue
                if any(self.holder_alive(o, fresh=True) for o in self.owners(block, state.generation)):
                    held.append(block)
                    continue
            generation = 0 if state.generation is None else state.generation + 1
            payload = json.dumps({"holder": self.holder}).encode()
            if self.store.create_exclusive(self._generation_path(block, generation), payload):
                self.mine[block] = generation
                claimed.append(block)
            else:
                held.append(block)  # another session was quicker; its claim is looked at next pass
        return claimed, finished, held

    def finish(self, block: int) -> None:
        """Mark a block this session holds as finished (its outcomes are flushed already)."""
        generation = self.mine.pop(block)
        self.store.create_exclusive(f"{self._generation_path(block, generation)}{_DONE_SUFFIX}", b"")

    def describe_holders(self, blocks: Iterable[int]) -> str:
        """Who holds ``blocks``, for the message a waiting session logs."""
        names = set()
        states = self.survey()
        for block in blocks:
            state = states.get(block)
            if state is None or state.generation is None:
                continue
            for owner in self.owners(block, state.generation):
                try:
                    record = json.loads(self.store.read_bytes(holder_file(self.experiment, self.version, owner)))
                    names.add(f"pid {record.get('pid')} on {record.get('host')}")
                except (FileNotFoundError, ValueError, AttributeError):
                    names.add(owner)
        return ", ".join(sorted(names)) or "another session"
