"""What crosses the driver/worker boundary: the run spec, tasks and outcomes.

Everything here is picklable and small except ``RunSpec``, which executors ship
once per run (or once per ``optimize()``), never once per task.

Outcomes are also what run records store (``crystallize.store.records``); the metric value
codec at the bottom of this module is how their metric values are stored without pickle.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from ..constants import BASELINE_CONDITION
from ..errors import CorruptRecordError, ValidationError
from ..seeding import MAIN_STREAM, replicate_seed, stream_root_seed
from .identity import Identities

if TYPE_CHECKING:
    from ..datasource import DataSource
    from ..pipeline import Pipeline
    from ..plugins.base import BasePlugin
    from ..steps import PipelineStep
    from ..treatment import Treatment


class ReplicateTask(NamedTuple):
    """One unit of work: run ``condition`` for ``replicate``."""

    condition: str
    replicate: int


@dataclass(frozen=True)
class SeedConfig:
    """How replicate seeds are made and applied (from the experiment's ``SeedPlugin``)."""

    root_seed: int
    auto_seed: bool = True
    seed_fn: Callable[[int], None] | None = None
    stream: str = MAIN_STREAM  # ``optimize()`` draws from the search stream, ``run()``/``apply()`` from the main

    def seed_for(self, replicate: int) -> int:
        if self.auto_seed:
            return replicate_seed(self.root_seed, replicate, self.stream)
        return stream_root_seed(self.root_seed, self.stream)


@dataclass(frozen=True)
class RunSpec:
    """Everything a worker needs to run any replicate of one run, frozen when the run starts.

    Worker-side plugin hooks receive this object as their ``experiment``
    argument: it has ``name``, ``id``, ``pipeline``, ``datasource`` and ``replicates``.
    ``data_uri`` is the data store's location (a folder or URI; None when the run stores
    nothing), so executors can tell whether their workers can reach it. ``cache_key`` signs
    the step cache's entries (None: the cache loads and writes nothing).
    """

    name: str
    datasource: DataSource
    pipeline: Pipeline
    initial_ctx: Mapping[str, Any]
    plugins: tuple[BasePlugin, ...]
    seeding: SeedConfig
    replicates: int
    cache_root: str | None = None
    mode: str = "run"
    version: int | None = None
    description: str | None = None
    artifacts_via_driver: bool = False
    identities: Identities | None = None
    data_uri: str | None = None
    # The step cache's signing key, read on the driver (never by workers) and shipped with the spec
    # (process pool: over the pool's pipe; Ray: through its object store). Never written to a store.
    cache_key: bytes | None = field(default=None, repr=False, compare=False)
    # The same user's (or team's) key for what else is signed in a worker: pickled artifacts.
    signing_key: bytes | None = field(default=None, repr=False, compare=False)

    @property
    def id(self) -> str:
        return self.name

    @property
    def steps(self) -> list[PipelineStep]:
        return list(self.pipeline.steps)


Conditions = Mapping[str, "Treatment | None"]
"""Condition name -> ``Treatment`` (``None`` for the baseline)."""


@dataclass(frozen=True)
class ErrorRecord:
    """Why a replicate failed, in a form that survives pickling and JSON."""

    stage: str
    exception_type: str
    message: str
    traceback: str
    condition: str = BASELINE_CONDITION
    replicate: int = 0
    exception_types: tuple[str, ...] = ()
    attempts: int = 1
    # The exception itself while the record stays in the process that caught it (serial, thread,
    # asyncio executors), so ``Result.errors`` can hand back the original; never pickled or stored.
    exception: BaseException | None = field(default=None, repr=False, compare=False)

    @property
    def step(self) -> str:
        return self.stage

    def __getstate__(self) -> dict[str, Any]:
        return {name: value for name, value in self.__dict__.items() if name != "exception"}

    def as_dict(self) -> dict[str, Any]:
        """The record's fields as a run record stores them (without the live exception)."""
        return self.__getstate__()

    def __str__(self) -> str:
        return (
            f"condition '{self.condition}', replicate {self.replicate}, step '{self.stage}': "
            f"{self.exception_type}: {self.message}"
        )


@dataclass(frozen=True)
class ArtifactEntry:
    """Where an artifact went and what it was (not its bytes)."""

    step: str
    name: str
    size: int
    checksum: str
    path: str | None = None
    data: bytes | None = field(default=None, repr=False, compare=False)


class StepRecord(NamedTuple):
    step: str
    seconds: float
    cache_hit: bool = False


@dataclass
class ReplicateOutcome:
    """The small result of one task; the driver folds these as they arrive."""

    condition: str
    replicate: int
    seed: int | None
    metrics: dict[str, list[Any]]
    steps: list[StepRecord] = field(default_factory=list)
    artifacts: list[ArtifactEntry] = field(default_factory=list)
    error: ErrorRecord | None = None
    seconds: float = 0.0
    reads: tuple[str, ...] = ()  # the condition's treatment keys this replicate read

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def task(self) -> ReplicateTask:
        return ReplicateTask(self.condition, self.replicate)

    def __reduce__(self) -> Any:
        # Plain tuples pickle and unpickle several times faster than dataclass state; outcomes
        # cross process boundaries by the million.
        return (
            _outcome_from_state,
            (
                self.condition,
                self.replicate,
                self.seed,
                self.metrics,
                [tuple(s) for s in self.steps],
                self.artifacts,
                self.error,
                self.seconds,
                self.reads,
            ),
        )


def _outcome_from_state(
    condition: str,
    replicate: int,
    seed: int | None,
    metrics: dict[str, list[Any]],
    steps: list[tuple[str, float, bool]],
    artifacts: list[ArtifactEntry],
    error: ErrorRecord | None,
    seconds: float,
    reads: tuple[str, ...] = (),
) -> ReplicateOutcome:
    return ReplicateOutcome(
        condition, replicate, seed, metrics, [StepRecord(*s) for s in steps], artifacts, error, seconds, tuple(reads)
    )


# ------------------------------------------------------------------ metric values in run records
#
# A metric's values are stored as one JSON text, so reading a record never runs code. Plain JSON
# holds None, bool, int, float (NaN and infinities as Python's json writes them) and str exactly;
# what JSON would silently turn into something else is tagged: ``{"__crystallize__": kind, ...}``
# for tuples, dicts whose keys are not all strings (or that hold the tag key), NumPy scalars and
# NumPy arrays of booleans, numbers or strings. Everything else is refused rather than stored changed.

_TAG = "__crystallize__"
_MAX_DEPTH = 100
STORABLE_VALUES = (
    "None, bool, int, float, str, lists, tuples and dicts of those, NumPy scalars and NumPy arrays "
    "of booleans, numbers or strings"
)


def _numpy_dtype_ok(dtype: Any) -> bool:
    return bool(dtype.kind in "biu" or (dtype.kind == "f" and dtype.itemsize <= 8) or dtype.kind == "U")


def _to_json(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON-able data that :func:`_from_json` turns back into an equal value of the same types."""
    if depth > _MAX_DEPTH:
        raise ValidationError(f"values nest more than {_MAX_DEPTH} levels deep (or contain themselves)")
    kind = type(value)
    if value is None or kind is bool or kind is int or kind is float or kind is str:
        return value
    if kind is list:
        return [_to_json(item, depth + 1) for item in value]
    if kind is dict:
        if _TAG not in value and all(type(key) is str for key in value):
            return {key: _to_json(item, depth + 1) for key, item in value.items()}
        return {_TAG: "dict", "items": [[_to_json(k, depth + 1), _to_json(v, depth + 1)] for k, v in value.items()]}
    if kind is tuple:
        return {_TAG: "tuple", "items": [_to_json(item, depth + 1) for item in value]}
    if kind.__module__ == "numpy":
        import numpy as np

        if isinstance(value, np.generic) and _numpy_dtype_ok(value.dtype):
            return {_TAG: "numpy", "dtype": value.dtype.str, "value": value.item()}
        if kind is np.ndarray and _numpy_dtype_ok(value.dtype):
            shape = list(value.shape)
            return {_TAG: "ndarray", "dtype": value.dtype.str, "shape": shape, "items": value.ravel().tolist()}
    raise ValidationError(f"a value of type {kind.__module__}.{kind.__qualname__} cannot be stored exactly")


def _from_json(value: Any) -> Any:
    if isinstance(value, list):
        return [_from_json(item) for item in value]
    if not isinstance(value, dict):
        return value
    tag = value.get(_TAG)
    if tag is None:
        return {key: _from_json(item) for key, item in value.items()}
    if tag == "tuple":
        return tuple(_from_json(item) for item in value["items"])
    if tag == "dict":
        return {_from_json(k): _from_json(v) for k, v in value["items"]}
    if tag in ("numpy", "ndarray"):
        import numpy as np

        dtype = np.dtype(str(value["dtype"]))
        if not _numpy_dtype_ok(dtype):
            raise CorruptRecordError(f"stored NumPy dtype {dtype} is not one a record holds")
        if tag == "numpy":
            return dtype.type(value["value"])
        return np.array(value["items"], dtype=dtype).reshape([int(n) for n in value["shape"]])
    raise CorruptRecordError(f"unknown stored value kind {tag!r}")


# Built once: json.dumps with options builds a new encoder on every call.
_COMPACT_JSON = json.JSONEncoder(allow_nan=True, separators=(",", ":")).encode
_JSON_SCALARS = frozenset({bool, int, float, str, type(None)})


def encode_metric_values(values: list[Any]) -> str:
    """One metric's values as JSON text; ``ValidationError`` when a value cannot be stored exactly."""
    if len(values) == 1 and (type(values[0]) is float or type(values[0]) is int):  # one number: most metrics
        text = repr(values[0])
        if "n" not in text:
            return f"[{text}]"
    if all(type(item) is float or type(item) is int for item in values):  # the usual case: plain numbers
        text = ",".join(map(repr, values))
        if "n" not in text:  # finite: repr is JSON's spelling (nan and inf are spelled NaN and Infinity)
            return f"[{text}]"
    if all(type(item) in _JSON_SCALARS for item in values):
        return _COMPACT_JSON(values)
    return _COMPACT_JSON([_to_json(item) for item in values])


def decode_metric_values(text: str) -> list[Any]:
    try:
        values = _from_json(json.loads(text))
    except CorruptRecordError:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        raise CorruptRecordError(f"unreadable metric values: {type(exc).__name__}: {exc}") from exc
    if not isinstance(values, list):
        raise CorruptRecordError("stored metric values are not a list")
    return values


def encode_metrics(metrics: Mapping[str, list[Any]]) -> list[tuple[str, str]]:
    """``(name, JSON text)`` per metric; ``ValidationError`` naming the metric when one cannot be stored."""
    encoded = []
    for name, values in metrics.items():
        try:
            encoded.append((name, encode_metric_values(values if type(values) is list else list(values))))
        except (ValidationError, ValueError, TypeError, RecursionError) as exc:
            raise ValidationError(f"metric '{name}': {exc}") from exc
    return encoded


def unstorable_metric_error(outcome: ReplicateOutcome, problem: Exception) -> ErrorRecord:
    """The error record of a replicate whose metrics cannot be stored (``problem`` names the metric)."""
    exception_types = tuple(f"{c.__module__}.{c.__qualname__}" for c in ValidationError.__mro__)
    return ErrorRecord(
        stage="metrics",
        exception_type="ValidationError",
        message=(
            f"condition '{outcome.condition}', replicate {outcome.replicate}: {problem}, so the run record "
            f"cannot hold it; record only {STORABLE_VALUES} as metric values (store other things as artifacts)"
        ),
        traceback="",
        condition=outcome.condition,
        replicate=outcome.replicate,
        exception_types=exception_types,
    )


def ensure_storable(outcome: ReplicateOutcome) -> ReplicateOutcome:
    """``outcome`` itself, turned (in place) into a failed one when a metric value cannot be stored exactly.

    The driver folds and records the same object, so the run's ``Result`` and its stored
    record agree: both show the replicate as failed, with a message naming metric,
    condition and replicate. A failed outcome keeps only the metrics that can be stored.
    """
    if outcome.error is not None:
        storable = {}
        for name, values in outcome.metrics.items():
            try:
                encode_metrics({name: values})
            except ValidationError:
                continue
            storable[name] = values
        if len(storable) != len(outcome.metrics):
            outcome.metrics = storable
        return outcome
    for values in outcome.metrics.values():  # plain numbers and text are storable as they are
        for value in values:
            if type(value) not in _JSON_SCALARS:
                break
        else:
            continue
        break
    else:
        return outcome
    try:
        encode_metrics(outcome.metrics)
    except ValidationError as exc:
        outcome.error = unstorable_metric_error(outcome, exc)
        outcome.metrics = {}
    return outcome
