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


@lru_cache(maxsize=1024)
def replicate_seed(root_seed: int, replicate: int) -> int:
    """The seed every condition of ``replicate`` uses (common random numbers).

    Memoised: the conditions of a replicate run one after another, and deriving a seed
    costs more than the rest of a no-op replicate's bookkeeping.
    """
    sequence = np.random.SeedSequence(entropy=root_seed, spawn_key=(replicate,))
    return int(sequence.generate_state(1, dtype=np.uint32)[0])


def seed_standard_generators(seed: int) -> None:
    """Seed ``random`` and ``numpy.random``, the generators most user code reaches for."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
