"""``quick_experiment``: replicates of one plain function over a few configs, no pipeline needed.

It is the first step before a full :class:`~crystallize.Experiment`: the function runs
here, in this process, once per (config, replicate); its return values come back as
they are, grouped by config name. Replicate seeds are the ones an ``Experiment`` with the
same seed gives (``SeedSequence`` of (seed, replicate)), shared by every config of a
replicate, so configs are compared on the same random numbers.
"""

from __future__ import annotations

import inspect
import logging
import sys
from collections.abc import Callable, Mapping
from typing import Any

from .constants import BASELINE_CONDITION, CONDITION_KEY, REPLICATE_KEY
from .context import FrozenContext
from .errors import ParameterError, ValidationError
from .seeding import fresh_root_seed, replicate_seed, seed_standard_generators

__all__ = ["quick_experiment"]

logger = logging.getLogger(__name__)

SEED_KEY = "seed"
_NO_CONFIG: Any = None  # a config of None means "call fn without one"


def quick_experiment(
    fn: Callable[..., Any],
    configs: Mapping[str, Any] | None = None,
    replicates: int = 1,
    *,
    seed: int | None = None,
    verbose: bool = False,
) -> dict[str, list[Any]]:
    """Call ``fn`` ``replicates`` times per config; returns ``{config name: [result of each replicate]}``.

    ``fn`` takes ``(config)``, ``(config, ctx)``, ``(ctx)`` (no configs) or nothing; it takes the
    context when it has a parameter named ``ctx`` or at least two. Without ``configs`` it runs one
    config, ``"baseline"``, with no config argument. The context holds ``replicate``,
    ``condition`` (the config name) and ``seed`` (the ``seed`` given), and ``ctx.rng`` draws from
    the replicate's seed. With a ``seed``, ``random`` and ``numpy.random`` are seeded per
    replicate; without one they are left as they are. ``verbose`` shows a progress bar.
    Exceptions of ``fn`` propagate unchanged.
    """
    if not callable(fn):
        raise ParameterError(f"quick_experiment() needs a function to run, got {type(fn).__name__}")
    if isinstance(replicates, bool) or not isinstance(replicates, int) or replicates < 1:
        raise ValidationError(f"replicates must be a positive integer, got {replicates!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ParameterError(f"seed must be an integer or None, got {seed!r}")
    if configs is None:
        configs = {BASELINE_CONDITION: _NO_CONFIG}
    elif not isinstance(configs, Mapping):
        raise ParameterError(
            "configs maps a name to each config, as in {'easy': {...}, 'hard': {...}}; "
            f"got {type(configs).__name__}"
        )
    names = list(configs)
    for name in names:
        if not isinstance(name, str) or not name:
            raise ParameterError(f"config names are non-empty strings, got {name!r}")
    takes_ctx = _takes_context(fn)
    root = seed if seed is not None else fresh_root_seed()
    results: dict[str, list[Any]] = {name: [] for name in names}
    with _progress(len(names) * replicates, verbose) as bar:
        for name in names:
            config = configs[name]
            for replicate in range(replicates):
                replicate_seed_value = replicate_seed(root, replicate)
                if seed is not None:
                    seed_standard_generators(replicate_seed_value)
                logger.info("quick_experiment: config '%s', replicate %d/%d", name, replicate + 1, replicates)
                ctx = FrozenContext._trusted(
                    {REPLICATE_KEY: replicate, CONDITION_KEY: name, SEED_KEY: seed}, seed=replicate_seed_value
                )
                results[name].append(_call(fn, config, ctx, takes_ctx))
                bar.update(1)
    return results


def _takes_context(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` gets the context: a parameter named ``ctx``, or room for two arguments."""
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins without a signature: call them with the config only
        return False
    return "ctx" in parameters or len(parameters) >= 2


def _call(fn: Callable[..., Any], config: Any, ctx: FrozenContext, takes_ctx: bool) -> Any:
    arguments: list[Any] = [] if config is _NO_CONFIG else [config]
    if takes_ctx:
        arguments.append(ctx)
    return fn(*arguments)


def _progress(total: int, verbose: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="quick_experiment", unit="rep", disable=not verbose, leave=False, file=sys.stderr)
