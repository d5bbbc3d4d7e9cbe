"""Pipeline steps: the unit of work inside one replicate, and its fingerprint for caching."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .awaitables import is_awaitable
from .hashing import code_fingerprint, stable_hash
from .injection import CallSignature, OwnerLabel

if TYPE_CHECKING:
    from .context import FrozenContext


class PipelineStep(ABC):
    """One transformation of the data. Subclass it, or use ``@pipeline_step``.

    ``cacheable`` steps have their output stored in the step cache, keyed by the
    step's code, its parameters, the context values it read, and its input.
    """

    cacheable: bool = False
    is_exit: bool = False

    @abstractmethod
    def __call__(self, data: Any, ctx: FrozenContext) -> Any:
        """Transform ``data``; may return ``(data, metrics_mapping)``."""

    async def __acall__(self, data: Any, ctx: FrozenContext) -> Any:
        """``await step.__acall__(data, ctx)``: the step's output, awaited when it is async (sync steps too)."""
        output = self(data, ctx)
        if is_awaitable(output):
            output = await output
        return output

    def setup(self, ctx: FrozenContext) -> None:
        """Called once per run on the driver, before any replicate; may add context keys."""

    def teardown(self, ctx: FrozenContext) -> None:
        """Called once per run on the driver, after every replicate."""

    @property
    def params(self) -> dict[str, Any]:
        """The explicit parameters; they are part of the cache key."""
        return {}

    @property
    def name(self) -> str:
        return type(self).__name__

    def context_values(self, ctx: FrozenContext) -> dict[str, Any]:
        """Context values this step reads implicitly (also part of the cache key)."""
        return {}

    @property
    def fingerprint(self) -> str:
        """Digest of the step's code (every method of its class, and the user code they reach) and parameters."""
        return stable_hash(self.name, code_fingerprint(type(self)), self.params)

    @property
    def step_hash(self) -> str:
        return self.fingerprint

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{self.name}({params})"


class FunctionStep(PipelineStep):
    """A step made from a plain function by ``@pipeline_step``."""

    def __init__(
        self,
        fn: Callable[..., Any],
        explicit: Mapping[str, Any],
        *,
        cacheable: bool = False,
        signature: CallSignature | None = None,
    ) -> None:
        self.fn = fn
        self.signature = signature or CallSignature.of(fn, takes_data=True)
        self.signature.check_explicit(explicit, self.name)
        self.explicit = dict(explicit)
        self.cacheable = cacheable
        self._fingerprint: str | None = None

    def __call__(self, data: Any, ctx: FrozenContext) -> Any:
        signature = self.signature
        kwargs = signature.resolve(self.explicit, ctx, OwnerLabel("step", self)) if signature.injectable else {}
        return signature.call(self.fn, data, ctx, kwargs)

    @property
    def name(self) -> str:
        return getattr(self.fn, "__name__", "step")

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.explicit)

    def context_values(self, ctx: FrozenContext) -> dict[str, Any]:
        return self.signature.context_sourced(self.explicit, ctx)

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = stable_hash(self.name, code_fingerprint(self.fn), self.explicit)
        return self._fingerprint

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_fingerprint"] = None
        return state


def exit_step(step: PipelineStep) -> PipelineStep:
    """Mark where ``apply()`` stops; ``run()`` still runs every step."""
    step.is_exit = True
    return step
