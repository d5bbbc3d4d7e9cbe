"""Producer: noisy measurements, kept as an artifact per replicate."""

from __future__ import annotations

import json
import random

from crystallize import FrozenContext, data_source, pipeline_step


@data_source
def measure(ctx: FrozenContext, *, count: int = 10, true_value: float = 5.0) -> list[float]:
    """``count`` readings of ``true_value`` with unit noise (seeded per replicate)."""
    return [random.gauss(true_value, 1.0) for _ in range(count)]


@pipeline_step()
def store_measurements(data: list[float], ctx: FrozenContext, *, artifact: str):
    """Write the readings as JSON under ``artifact`` and record their mean."""
    ctx.artifacts.add(artifact, json.dumps(data).encode("utf-8"))
    return data, {"mean": sum(data) / len(data)}
