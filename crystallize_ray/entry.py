"""The ``ray`` executor's registry entry (entry point ``crystallize.executors: ray``).

It loads without Ray installed, so ``--executor ray`` is listed everywhere and says how to
install Ray when it is missing.
"""

from __future__ import annotations

from typing import Any

from crystallize.execution.registry import ExecutorEntry
from crystallize.plugins.execution import ExecutionPlugin

from .plugin import RayExecution


def _ray(workers: int | None, address: str | None, **options: Any) -> ExecutionPlugin:
    return RayExecution(address=address, **options)


def _ray_quiet() -> ExecutionPlugin:
    return RayExecution(progress=False)


RAY = ExecutorEntry(
    "ray",
    _ray,
    "Ray tasks on a private local Ray or a cluster (--address)",
    accepts=frozenset({"address"}),
    conformance={"ray": _ray_quiet},
    needs=("ray",),
    install='pip install "crystallize-ray[ray]"',
)
