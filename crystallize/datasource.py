"""Datasources: what enters the pipeline at the start of every replicate."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .errors import ValidationError
from .hashing import code_fingerprint, stable_hash
from .injection import CallSignature, OwnerLabel

if TYPE_CHECKING:
    from .context import FrozenContext


class DataSource(ABC):
    """Produces the pipeline's input; called once per replicate with its context."""

    @abstractmethod
    def fetch(self, ctx: FrozenContext) -> Any:
        """Return the data for this replicate; should depend only on ``ctx``."""

    @property
    def params(self) -> dict[str, Any]:
        return {}

    @property
    def name(self) -> str:
        return type(self).__name__

    @property
    def fingerprint(self) -> str:
        """Digest of the datasource's code and parameters (a changed datasource blocks resume)."""
        return _digest(self.name, type(self), self.params)


def _digest(name: str, code: Callable[..., Any], params: dict[str, Any]) -> str:
    try:
        return stable_hash(name, code_fingerprint(code), params)
    except Exception:  # noqa: BLE001 - parameters without a stable hash: fall back to their names
        return stable_hash(name, code_fingerprint(code), sorted(params))


class FunctionSource(DataSource):
    """A datasource made from a plain function by ``@data_source``."""

    def __init__(self, fn: Callable[..., Any], explicit: Mapping[str, Any]) -> None:
        self.fn = fn
        self.signature = CallSignature.of(fn, takes_data=False)
        self.signature.check_explicit(explicit, self.name)
        self.explicit = dict(explicit)

    def fetch(self, ctx: FrozenContext) -> Any:
        signature = self.signature
        kwargs = signature.resolve(self.explicit, ctx, OwnerLabel("datasource", self)) if signature.injectable else {}
        return signature.call(self.fn, None, ctx, kwargs)

    @property
    def name(self) -> str:
        return getattr(self.fn, "__name__", "datasource")

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.explicit)

    @property
    def fingerprint(self) -> str:
        return _digest(self.name, self.fn, self.explicit)


def resolve_inputs(datasource: DataSource) -> None:
    """Let datasources that read other experiments' runs (``Artifact``) pin which run, on the driver."""
    resolve = getattr(datasource, "resolve_inputs", None)
    if callable(resolve):
        resolve()
    inputs = getattr(datasource, "inputs", None)
    if isinstance(inputs, Mapping):
        for inner in inputs.values():
            resolve_inputs(inner)


def _shared_replicates(inputs: Mapping[str, DataSource]) -> int | None:
    """The replicate count the inputs declare (``Artifact.replicates``); they must agree."""
    declared = {
        name: count
        for name, source in inputs.items()
        if isinstance(count := getattr(source, "declared_replicates", getattr(source, "replicates", None)), int)
        and not isinstance(count, bool)
    }
    if len(set(declared.values())) > 1:
        listed = ", ".join(f"{name}={count}" for name, count in sorted(declared.items()))
        raise ValidationError(
            f"Conflicting replicates across artifacts: {listed}; a consumer's replicate i reads replicate i of "
            "every input, so give them the same replicate count"
        )
    return next(iter(declared.values()), None)


class ExperimentInput(DataSource):
    """Several named datasources fetched together; the pipeline gets a dict of their outputs."""

    def __init__(self, **inputs: DataSource) -> None:
        if not inputs:
            raise ValidationError("At least one input must be provided: ExperimentInput needs a named datasource")
        self.inputs = dict(inputs)
        self.replicates = _shared_replicates(self.inputs)

    @property
    def required_outputs(self) -> list[DataSource]:
        """The inputs that read another experiment's artifacts (``Artifact``s), as 0.27 named them."""
        return [source for source in self.inputs.values() if hasattr(source, "exists_for")]

    def fetch(self, ctx: FrozenContext) -> dict[str, Any]:
        return {name: source.fetch(ctx) for name, source in self.inputs.items()}

    @property
    def fingerprint(self) -> str:
        """Covers every inner datasource (a changed input, or an ``Artifact`` pinned to a new run, blocks resume)."""
        inner = {
            name: getattr(source, "fingerprint", type(source).__qualname__) for name, source in self.inputs.items()
        }
        return _digest(self.name, type(self).fetch, inner)
