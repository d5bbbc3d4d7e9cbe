"""The datasource and steps named in config.yaml."""

from __future__ import annotations

import random

from crystallize import FrozenContext, data_source, pipeline_step


@data_source
def fetch_numbers(ctx: FrozenContext) -> list[float]:
    """Three noisy numbers around zero; ``random`` is seeded per replicate, so reruns with one seed agree."""
    return [random.gauss(0.0, 1.0) for _ in range(3)]


@pipeline_step()
def add_delta(data: list[float], ctx: FrozenContext, *, delta: float = 0.0) -> list[float]:
    """Add ``delta`` (given in the config, by a treatment, or 0.0) to every number."""
    return [x + delta for x in data]


@pipeline_step()
def summarize(data: list[float], ctx: FrozenContext):
    """Record the total while passing the data on."""
    return data, {"total": sum(data)}
