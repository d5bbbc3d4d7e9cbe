"""Seeding: a root seed per run, a seed per replicate, the same for every condition."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..engine.plan import SeedConfig
from ..seeding import fresh_root_seed, seed_standard_generators
from .base import BasePlugin

if TYPE_CHECKING:
    from ..experiment import Experiment

default_seed_function = seed_standard_generators


@dataclass
class SeedPlugin(BasePlugin):
    """``seed`` fixes the root seed (``None``: fresh per run, recorded in provenance).

    With ``auto_seed`` each replicate gets its own seed derived from (root seed,
    replicate index); without it every replicate uses the root seed. ``seed_fn(seed)``
    seeds your libraries; the default seeds ``random`` and ``numpy.random``.
    """

    seed: int | None = None
    auto_seed: bool = True
    seed_fn: Callable[[int], None] | None = None
    root_seed: int | None = field(default=None, init=False, repr=False)

    def before_run(self, experiment: Experiment) -> None:
        self.root_seed = self.seed if self.seed is not None else fresh_root_seed()

    def config(self) -> SeedConfig:
        root = self.root_seed if self.root_seed is not None else self.seed
        if root is None:
            root = self.root_seed = fresh_root_seed()
        return SeedConfig(root_seed=int(root), auto_seed=self.auto_seed, seed_fn=self.seed_fn)
