"""Datasources: what enters the pipeline at the start of every replicate."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any

from .injection import CallSignature


class DataSource(ABC):
    """Produces the pipeline's input; called once per replicate with its context."""

    @abstractmethod
    def fetch(self, ctx: Any) -> Any:
        """Return the data for this replicate; should depend only on ``ctx``."""

    @property
    def params(self) -> dict[str, Any]:
        return {}

    @property
    def name(self) -> str:
        return type(self).__name__


class FunctionSource(DataSource):
    """A datasource made from a plain function by ``@data_source``."""

    def __init__(self, fn: Callable[..., Any], explicit: Mapping[str, Any]) -> None:
        self.fn = fn
        self.signature = CallSignature.of(fn, takes_data=False)
        self.signature.check_explicit(explicit, self.name)
        self.explicit = dict(explicit)

    def fetch(self, ctx: Any) -> Any:
        kwargs = self.signature.resolve(self.explicit, ctx, f"datasource '{self.name}'")
        return self.signature.call(self.fn, None, ctx, kwargs)

    @property
    def name(self) -> str:
        return getattr(self.fn, "__name__", "datasource")

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.explicit)


class ExperimentInput(DataSource):
    """Several named datasources fetched together; the pipeline gets a dict of their outputs."""

    def __init__(self, **inputs: DataSource) -> None:
        if not inputs:
            raise ValueError("ExperimentInput needs at least one named datasource")
        self.inputs = dict(inputs)

    def fetch(self, ctx: Any) -> dict[str, Any]:
        return {name: source.fetch(ctx) for name, source in self.inputs.items()}
