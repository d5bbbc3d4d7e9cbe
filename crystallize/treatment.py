"""Treatments: named changes to the context that define a condition."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeAlias

from .errors import ParameterError, ValidationError
from .hashing import code_fingerprint, stable_hash

if TYPE_CHECKING:
    from .context import FrozenContext

TreatmentApply: TypeAlias = "Mapping[str, Any] | Callable[[FrozenContext], Any]"


class Treatment:
    """A condition: a mapping merged into the context, or a callable that adds keys to it.

    Either way the treatment wins over ``initial_ctx``: a key both set has the treatment's
    value (a callable may ``ctx.add`` such a key once). The framework keys (``replicate``,
    ``condition``, ``seed_used``) cannot be set; a key the callable sets twice raises.
    """

    def __init__(self, name: str, apply: TreatmentApply | None = None) -> None:
        if not isinstance(name, str) or not name:
            raise ValidationError(f"a treatment needs a non-empty name, got {name!r}")
        self.name = name
        if apply is None:
            apply = {}
        if not isinstance(apply, Mapping) and not callable(apply):
            raise ParameterError(
                f"treatment '{name}': apply must be a mapping or a callable(ctx), got {type(apply).__name__}"
            )
        self._apply = dict(apply) if isinstance(apply, Mapping) else apply

    @property
    def apply_map(self) -> Mapping[str, Any]:
        """The key/values this treatment sets, or an empty mapping for a callable treatment."""
        return MappingProxyType(self._apply) if isinstance(self._apply, dict) else MappingProxyType({})

    @property
    def is_mapping(self) -> bool:
        return isinstance(self._apply, dict)

    def apply(self, ctx: FrozenContext) -> None:
        """Add this treatment's values to ``ctx`` (or run its callable on it)."""
        if isinstance(self._apply, dict):
            for key, value in self._apply.items():
                ctx.add(key, value)
        else:
            self._apply(ctx)

    @property
    def fingerprint(self) -> str:
        if isinstance(self._apply, dict):
            return stable_hash(self.name, self._apply)
        return stable_hash(self.name, code_fingerprint(self._apply))

    def __call__(self) -> Treatment:
        """Return itself, so ``boost_total()`` and ``boost_total`` mean the same treatment."""
        return self

    def __repr__(self) -> str:
        body = dict(self._apply) if isinstance(self._apply, dict) else getattr(self._apply, "__name__", "callable")
        return f"Treatment({self.name!r}, {body!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Treatment):
            return NotImplemented
        return self.name == other.name and self.fingerprint == other.fingerprint

    def __hash__(self) -> int:
        return hash(self.name)
