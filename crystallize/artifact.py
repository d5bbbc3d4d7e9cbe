"""``Artifact``: a file one experiment writes and another reads as its datasource.

The producer declares it (``Experiment(..., outputs=[out])``) and its steps write it,
per replicate, with ``ctx.artifacts.add(out.name, data)`` or ``out.write(ctx, value)``.
A consumer uses the same object (or ``Artifact(name, producer="producer_name")``) as
its datasource: replicate ``i`` of the consumer gets the bytes replicate ``i`` of the
producer wrote, from condition ``condition``, passed through ``loader``.

Which producer run is read is decided once, on the driver, before the consumer's
spec is frozen (:meth:`Artifact.resolve_inputs`): the newest version that finished.
From then on the artifact carries only plain values (store location, experiment id,
version), so it pickles without the producer experiment and workers in other
processes or on other Ray nodes read the files from the shared store directly.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .constants import BASELINE_CONDITION
from .datasource import DataSource
from .errors import ArtifactNotFoundError, ValidationError
from .hashing import stable_hash
from .paths import check_relative, check_segment
from .store import layout
from .store.filesystem import Store
from .store.locations import data_location
from .store.repository import RunRepository

if TYPE_CHECKING:
    from .context import FrozenContext
    from .experiment import Experiment

logger = logging.getLogger(__name__)


def _default_writer(value: Any) -> bytes:
    """Bytes as they are, ``str`` as UTF-8, anything else pickled (read it back with ``loader=pickle.loads``)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    return pickle.dumps(value, protocol=5)


class Artifact(DataSource):
    """An output of one experiment, read per replicate as the datasource of another.

    ``loader(bytes)`` turns the stored bytes into the consumer's data (default: the
    bytes); ``writer(value)`` turns a value into bytes for :meth:`write` (default:
    bytes as is, ``str`` encoded, anything else pickled). ``producer`` is the
    experiment that writes it (set for you by ``Experiment(outputs=[...])``) or its
    name; ``condition`` is the producer condition to read; ``step`` the producer
    step that wrote it (found by looking when ``None``).
    """

    def __init__(
        self,
        name: str,
        *,
        loader: Callable[[bytes], Any] | None = None,
        writer: Callable[[Any], bytes] | None = None,
        producer: Experiment | str | None = None,
        condition: str = BASELINE_CONDITION,
        step: str | None = None,
    ) -> None:
        self._name = check_relative(name, "artifact name")
        self.loader = loader
        self.writer = writer
        self.condition = check_segment(condition, "condition name")
        self.step = check_segment(step, "step name") if step is not None else None
        self.producer: Experiment | str | None = None
        if producer is not None:
            if isinstance(producer, str):
                self.producer = check_segment(producer, "producer name")
            else:
                self._attach_producer(producer)
        # What resolve_inputs() pinned: plain values only, so the artifact pickles anywhere.
        self._location: str | None = None
        self._producer_id: str | None = None
        self._version: int | None = None
        self._steps: dict[tuple[str, int, str], str] = {}

    # ------------------------------------------------------------------ identity

    @property
    def name(self) -> str:
        return self._name

    @property
    def params(self) -> dict[str, Any]:
        return {
            "artifact": self._name,
            "producer": self._producer_label(),
            "condition": self.condition,
            "step": self.step,
            "version": self._version,
        }

    @property
    def fingerprint(self) -> str:
        """Name, producer, pinned producer version and condition: a consumer run read exactly this."""
        producer = self._producer_id if self._producer_id is not None else self._producer_label()
        return stable_hash("crystallize.Artifact", self._name, producer, self._version, self.condition)

    def __crystallize_hash__(self) -> str:
        # As a step parameter (the producer's steps may hold the artifact they write): its declaration only,
        # never the producer's id (that hashes the producer's steps, which would lead back here).
        return stable_hash("crystallize.Artifact", self._name, self._producer_name(), self.condition, self.step)

    @property
    def producer_name(self) -> str | None:
        """The producer's experiment id (``None`` when no producer is known yet)."""
        return self._producer_label()

    @property
    def pinned_version(self) -> int | None:
        """The producer version :meth:`resolve_inputs` chose (``None`` before)."""
        return self._version

    def _producer_name(self) -> str | None:
        if self.producer is None or isinstance(self.producer, str):
            return self.producer
        return getattr(self.producer, "name", None)

    def _producer_label(self) -> str | None:
        if self.producer is None or isinstance(self.producer, str):
            return self.producer
        return self.producer.id

    def __repr__(self) -> str:
        pinned = f", version={self._version}" if self._version is not None else ""
        return f"Artifact({self._name!r}, producer={self._producer_label()!r}, condition={self.condition!r}{pinned})"

    # ------------------------------------------------------------------ producer side

    def _attach_producer(self, experiment: Experiment) -> None:
        """Called by ``Experiment(outputs=[...])`` (and by a graph linking a producer given by name)."""
        current = self.producer
        if current is None or current is experiment:
            self.producer = experiment
            return
        if isinstance(current, str):
            if current in (getattr(experiment, "name", None), experiment.id):
                self.producer = experiment
                return
            raise ValidationError(
                f"artifact '{self._name}' names '{current}' as its producer, "
                f"but experiment '{experiment.id}' declares it as an output"
            )
        raise ValidationError(
            f"artifact '{self._name}' is already an output of experiment '{current.id}'; "
            f"experiment '{experiment.id}' cannot declare the same Artifact object (make a new Artifact)"
        )

    def write(self, ctx: FrozenContext, value: Any) -> None:
        """Store ``value`` (through ``writer``) as this artifact of the running replicate."""
        data = self.writer(value) if self.writer is not None else _default_writer(value)
        ctx.artifacts.add(self._name, data)

    # ------------------------------------------------------------------ consumer side

    def resolve_inputs(self) -> None:
        """Pin the producer's store, id and newest finished version; runs on the driver.

        Raises :class:`ValidationError` when the producer has no finished run.
        """
        if self.producer is None:
            raise ValidationError(
                f"artifact '{self._name}' has no producer: declare it in outputs=[...] of the experiment "
                "that writes it, or pass producer='<experiment name>'"
            )
        if isinstance(self.producer, str):
            store = Store(data_location())
            producer_id = self.producer
        else:
            from .plugins.artifacts import ArtifactPlugin

            plugin = self.producer.get_plugin(ArtifactPlugin)
            store = plugin.store() if plugin is not None else Store(data_location())
            producer_id = self.producer.id
        version = RunRepository(store).latest(producer_id, require="record")
        if version is None:
            raise ValidationError(
                f"artifact '{self._name}' comes from experiment '{producer_id}', which has no finished run "
                f"in {store.location}; run '{producer_id}' first"
            )
        if (store.location, producer_id, version) != (self._location, self._producer_id, self._version):
            self._steps = {}
        self._location, self._producer_id, self._version = store.location, producer_id, version
        logger.debug("artifact '%s' reads '%s' v%d in %s", self._name, producer_id, version, store.location)

    def fetch(self, ctx: FrozenContext) -> Any:
        """``loader(bytes)`` of the producer's artifact for this replicate (``ctx["replicate"]``)."""
        if self._version is None:
            self.resolve_inputs()  # apply() and direct calls: runs pin through Experiment before the spec freezes
        data = self._read(ctx["replicate"])
        return self.loader(data) if self.loader is not None else data

    def _store(self) -> Store:
        assert self._location is not None
        store = self.__dict__.get("_store_cache")
        if store is None or store.location != self._location:
            store = Store(self._location)
            self._store_cache = store  # one filesystem client per process, not one per replicate
        return store

    def _read(self, replicate: int) -> bytes:
        store = self._store()
        producer_id, version = self._producer_id, self._version
        assert producer_id is not None and version is not None
        step = self._step_for(store, producer_id, version, replicate)
        relative = layout.artifact(producer_id, version, replicate, self.condition, step, self._name)
        try:
            return store.read_bytes(relative)
        except FileNotFoundError:
            if self.step is None:
                self._steps.pop((producer_id, version, self.condition), None)
            raise ArtifactNotFoundError(self._missing(store, replicate, store.uri(relative))) from None

    def _step_for(self, store: Store, producer_id: str, version: int, replicate: int) -> str:
        """The producer step whose folder holds this artifact (looked up once, then cached)."""
        if self.step is not None:
            return self.step
        key = (producer_id, version, self.condition)
        cached = self._steps.get(key)
        if cached is not None:
            return cached
        step = find_step(store, producer_id, version, replicate, self.condition, self._name)
        if step is None:
            folder = f"{layout.version_dir(producer_id, version)}/replicate_{int(replicate)}/{self.condition}"
            raise ArtifactNotFoundError(self._missing(store, replicate, store.uri(folder)))
        self._steps[key] = step
        return step

    def _missing(self, store: Store, replicate: int, where: str) -> str:
        return (
            f"experiment '{self._producer_id}' v{self._version} has no artifact '{self._name}' for "
            f"replicate {replicate}, condition '{self.condition}' (looked in {where}); check that the "
            f"producer ran at least {replicate + 1} replicate(s), that this replicate did not fail, and that "
            f"a step writes it with ctx.artifacts.add('{self._name}', ...)"
        )

    def exists_for(self, store: Store, producer_id: str, version: int, replicate: int) -> bool:
        """Whether replicate ``replicate`` of ``producer_id`` v``version`` stored this artifact."""
        if self.step is not None:
            relative = layout.artifact(producer_id, version, replicate, self.condition, self.step, self._name)
            return store.exists(relative)
        return find_step(store, producer_id, version, replicate, self.condition, self._name) is not None

    # ------------------------------------------------------------------ pickling

    def __getstate__(self) -> dict[str, Any]:
        """Workers get plain values: the producer experiment travels as its id, never as an object."""
        state = dict(self.__dict__)
        state.pop("_store_cache", None)
        producer = state.get("producer")
        if producer is not None and not isinstance(producer, str):
            state["producer"] = self._producer_id if self._producer_id is not None else producer.id
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


def find_step(store: Store, experiment_id: str, version: int, replicate: int, condition: str, name: str) -> str | None:
    """The step folder of ``replicate``/``condition`` holding ``name``; the last step in pipeline order
    when several wrote it; None when none did."""
    folder = f"{layout.version_dir(experiment_id, version)}/replicate_{int(replicate)}/{condition}"
    holding = [step for step in store.list_dir(folder) if store.exists(f"{folder}/{step}/{name}")]
    if len(holding) <= 1:
        return holding[0] if holding else None
    plan = RunRepository(store).plan(experiment_id, version) or {}
    order = [s.get("name") for s in plan.get("steps", [])]
    holding.sort(key=lambda s: order.index(s) if s in order else -1)
    return holding[-1]
