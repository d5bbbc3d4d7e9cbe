"""Replicate seeds derived from (root seed, replicate index), never from worker or order."""

from __future__ import annotations

import random
from functools import lru_cache
from typing import cast

import numpy as np


def fresh_root_seed() -> int:
    """Draw a root seed from OS entropy; it is recorded so the run can be repeated."""
    entropy = np.random.SeedSequence().entropy  # an int: drawn from the OS when none is given
    return int(cast(int, entropy) % (2**63))


MAIN_STREAM = "main"
SEARCH_STREAM = "search"

# Each stream is its own branch of the root seed's SeedSequence tree. The main stream is the
# root's own children (what every release so far has used, so ``run()``'s seeds never change);
# the search stream hangs under a fixed extra key, so ``optimize()`` never tests a winner on
# the seeds ``run()`` will confirm it with.
_STREAM_PREFIXES: dict[str, tuple[int, ...]] = {MAIN_STREAM: (), SEARCH_STREAM: (0x5EA4C4,)}
SEED_STREAMS = tuple(_STREAM_PREFIXES)


def seed_stream(mode: str) -> str:
    """The stream a run of ``mode`` draws its replicate seeds from: ``optimize`` searches on its
    own seeds, so the ``run()`` that confirms a winner sees replicates the search never saw."""
    return SEARCH_STREAM if mode == "optimize" else MAIN_STREAM


@lru_cache(maxsize=1024)
def replicate_seed(root_seed: int, replicate: int, stream: str = MAIN_STREAM) -> int:
    """The seed every condition of ``replicate`` uses (common random numbers).

    A pure function of (root seed, stream, replicate index): what ran before in the process,
    the executor and the machine never enter. Memoised: the conditions of a replicate run one
    after another, and deriving a seed costs more than the rest of a no-op replicate's bookkeeping.
    """
    spawn_key = _STREAM_PREFIXES[stream] + (replicate,)
    sequence = np.random.SeedSequence(entropy=root_seed, spawn_key=spawn_key)
    return int(sequence.generate_state(1, dtype=np.uint32)[0])


@lru_cache(maxsize=64)
def stream_root_seed(root_seed: int, stream: str) -> int:
    """The one seed of every replicate when ``auto_seed`` is off: the root itself on the main
    stream, a seed derived from it on the others (so a search still never shares its seeds)."""
    if stream == MAIN_STREAM:
        return root_seed
    sequence = np.random.SeedSequence(entropy=root_seed, spawn_key=_STREAM_PREFIXES[stream])
    return int(sequence.generate_state(1, dtype=np.uint32)[0])


def seed_standard_generators(seed: int) -> None:
    """Seed ``random`` and ``numpy.random``, the generators most user code reaches for."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
