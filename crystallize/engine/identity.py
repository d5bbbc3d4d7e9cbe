"""Identities of a run's parts, made once on the driver and shipped in the spec.

Workers never re-derive a fingerprint: what a worker can see of a function (its
source file, the name cloudpickle gives it) depends on the executor, the machine
and the cloudpickle version, so a fingerprint made there could split the cache or
let a changed experiment resume. The driver computes every identity here, once,
and the cache, the plan and resume all read them from the spec.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import CacheError
from ..hashing import stable_hash

if TYPE_CHECKING:
    from ..datasource import DataSource
    from ..pipeline import Pipeline
    from ..steps import PipelineStep
    from ..treatment import Treatment


@dataclass(frozen=True)
class Identities:
    """Fingerprints of the steps, the datasource and the pipeline, plus where user code lives."""

    steps: tuple[str, ...]
    cacheable: tuple[bool, ...]
    datasource: str
    pipeline: str
    origins: Mapping[tuple[str, int], str] = field(default_factory=dict)

    def cache_fingerprint(self, index: int) -> str | None:
        """The step's fingerprint for the cache; None when its parameters have no stable hash."""
        return self.steps[index] if self.cacheable[index] else None


def step_identity(step: PipelineStep) -> tuple[str, bool]:
    """``(fingerprint, exact)``: the step's fingerprint; for parameters with no stable hash (a model,
    a client) a digest of its name, type and parameter names, which can key a plan but not the cache."""
    try:
        return step.fingerprint, True
    except CacheError:
        return stable_hash(step.name, type(step).__qualname__, sorted(step.params)), False


def datasource_identity(datasource: DataSource) -> str:
    fingerprint = getattr(datasource, "fingerprint", None)
    return fingerprint or stable_hash(type(datasource).__qualname__)


def compute_identities(pipeline: Pipeline, datasource: DataSource, treatments: Iterable[Treatment] = ()) -> Identities:
    """Every identity of a run, on the driver."""
    from ..tracebacks import code_origins

    pairs = [step_identity(step) for step in pipeline.steps]
    steps = tuple(fp for fp, _ in pairs)
    return Identities(
        steps=steps,
        cacheable=tuple(exact for _, exact in pairs),
        datasource=datasource_identity(datasource),
        pipeline=stable_hash(list(steps)),
        origins=code_origins([fn for fn in _user_functions(pipeline, datasource, treatments) if _has_code(fn)]),
    )


def _has_code(fn: Any) -> bool:
    return hasattr(getattr(fn, "__func__", fn), "__code__")


def _user_functions(pipeline: Pipeline, datasource: DataSource, treatments: Iterable[Treatment]) -> Iterator[Any]:
    """The user functions behind steps, datasources and callable treatments (for tracebacks)."""
    for step in pipeline.steps:
        fn = getattr(step, "fn", None)
        yield fn if fn is not None else type(step).__call__
    yield from _source_functions(datasource)
    for treatment in treatments:
        apply = getattr(treatment, "_apply", None)
        if apply is not None and not isinstance(apply, Mapping):
            yield apply


def _source_functions(datasource: Any) -> Iterator[Any]:
    fn = getattr(datasource, "fn", None)
    yield fn if fn is not None else type(datasource).fetch
    inputs = getattr(datasource, "inputs", None)
    if isinstance(inputs, Mapping):
        for inner in inputs.values():
            yield from _source_functions(inner)
