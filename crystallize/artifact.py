"""``Artifact``: a file one experiment writes and another reads as its datasource.

The producer declares it (``Experiment(..., outputs=[out])``) and its steps write it,
per replicate: ``ctx.artifacts.add(out.name, data)``, ``out.write(ctx, value)``, or, as in
Crystallize 0.27, ``out.write(value)`` inside a step that received ``out`` as a parameter
(the step is handed a copy of the artifact bound to the replicate's context).
A consumer uses the same object (or ``Artifact(name, producer="producer_name")``) as
its datasource: replicate ``i`` of the consumer gets the file replicate ``i`` of the
producer wrote, as a :class:`pathlib.Path` passed to ``loader`` (the bytes without one).
Without ``condition=``, each consumer condition reads the producer's condition of the
same name, and the producer's baseline (with a warning) when the producer has no such
condition.

Which producer run is read is decided once, on the driver, before the consumer's
spec is frozen (:meth:`Artifact.resolve_inputs`): the newest version that finished.
From then on the artifact carries only plain values (store location, experiment id,
version, the producer's conditions, steps and replicate count), so it pickles without
the producer experiment and workers in other processes or on other Ray nodes read the
files from the shared store directly.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .constants import BASELINE_CONDITION
from .datasource import DataSource
from .errors import ArtifactNotBoundError, ArtifactNotFoundError, ParameterError, ValidationError
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


def _default_writer(name: str, value: Any) -> bytes:
    """Bytes as they are, ``str`` as UTF-8; anything else needs a writer (as in 0.27).

    Not pickled: reading a pickle back from a store would run whatever the file holds.
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    raise ParameterError(
        f"Artifact '{name}': default_writer expects bytes or str, got {type(value).__name__}; give the "
        "artifact a writer, e.g. Artifact(name, loader, writer=lambda v: json.dumps(v).encode())"
    )


def _check_replicates(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValidationError(f"Artifact.replicates must be None or a positive int, got {value!r}")
    return value


class Artifact(DataSource):
    """An output of one experiment, read per replicate as the datasource of another.

    ``loader(path)`` turns the stored file (a :class:`pathlib.Path`) into the consumer's
    data (default: its bytes); ``writer(value)`` turns a value into bytes for :meth:`write`
    (default: bytes as is, ``str`` encoded, anything else refused). ``producer`` is the
    experiment that writes it (set for you by ``Experiment(outputs=[...])``) or its name;
    ``condition`` is the producer condition to read (default: the consumer's own condition,
    else the baseline); ``step`` the producer step that wrote it (found by looking when
    ``None``; 0.27's ``<Function_Name>Step`` names work too). ``replicates`` is the
    producer's replicate count: set it to declare it (a consumer then runs that many), or
    read it once the producer run is pinned.
    """

    def __init__(
        self,
        name: str,
        loader: Callable[[Path], Any] | None = None,
        writer: Callable[[Any], bytes] | None = None,
        *,
        producer: Experiment | str | None = None,
        condition: str | None = None,
        step: str | None = None,
    ) -> None:
        self._name = check_relative(name, "artifact name")
        self.loader = loader
        self.writer = writer
        self.condition = check_segment(condition, "condition name") if condition is not None else None
        self.step = check_segment(step, "step name") if step is not None else None
        self.producer: Experiment | str | None = None
        if producer is not None:
            if isinstance(producer, str):
                self.producer = check_segment(producer, "producer name")
            else:
                self._attach_producer(producer)
        self._declared_replicates: int | None = None
        # What resolve_inputs() pinned: plain values only, so the artifact pickles anywhere.
        self._location: str | None = None
        self._producer_id: str | None = None
        self._version: int | None = None
        self._producer_replicates: int | None = None
        self._producer_conditions: tuple[str, ...] = ()
        self._producer_steps: tuple[str, ...] = ()
        self._steps: dict[tuple[str, int, str], str] = {}
        self._ctx: FrozenContext | None = None  # set only on the copy a step receives (write(value))

    # ------------------------------------------------------------------ identity

    @property
    def name(self) -> str:
        return self._name

    @property
    def replicates(self) -> int | None:
        """The declared replicate count, else the pinned producer run's (None before either)."""
        if self._declared_replicates is not None:
            return self._declared_replicates
        return self._producer_replicates

    @replicates.setter
    def replicates(self, value: int | None) -> None:
        self._declared_replicates = _check_replicates(value)

    @property
    def declared_replicates(self) -> int | None:
        """The replicate count set on this artifact by its user (never the one read from a run)."""
        return self._declared_replicates

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

    def __crystallize_bind__(self, ctx: FrozenContext) -> Artifact:
        """The copy a step receives as a parameter: ``write(value)`` then adds to this replicate's context."""
        bound = object.__new__(type(self))
        bound.__dict__.update(self.__dict__)
        bound._ctx = ctx
        return bound

    def write(self, *args: Any) -> None:
        """Store a value (through ``writer``) as this artifact of the running replicate.

        ``write(ctx, value)`` anywhere; ``write(value)`` on the artifact a step received as a parameter.
        """
        if len(args) == 2:
            ctx, value = args
        elif len(args) == 1:
            ctx, value = self._ctx, args[0]
            if ctx is None:
                raise ArtifactNotBoundError(
                    f"Artifact not bound to context: '{self._name}' is not bound to a context; "
                    "call write(value) on the artifact a step "
                    "receives as a parameter (step(dest=artifact)), or write(ctx, value) with the step's context"
                )
        else:
            raise ParameterError(f"Artifact.write takes (value) or (ctx, value), got {len(args)} arguments")
        data = self.writer(value) if self.writer is not None else _default_writer(self._name, value)
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
        repository = RunRepository(store)
        version = repository.latest(producer_id, require="record")
        if version is None:
            raise ValidationError(
                f"artifact '{self._name}' comes from experiment '{producer_id}', which has no finished run "
                f"in {store.location}; run '{producer_id}' first"
            )
        if (store.location, producer_id, version) != (self._location, self._producer_id, self._version):
            self._steps = {}
        plan = repository.plan(producer_id, version) or {}
        count = plan.get("replicates")
        self._producer_replicates = count if isinstance(count, int) and not isinstance(count, bool) else None
        self._producer_conditions = tuple(str(c) for c in plan.get("conditions", ()) or ())
        self._producer_steps = tuple(str(s.get("name")) for s in plan.get("steps", ()) or () if isinstance(s, dict))
        self._location, self._producer_id, self._version = store.location, producer_id, version
        logger.debug("artifact '%s' reads '%s' v%d in %s", self._name, producer_id, version, store.location)

    def fetch(self, ctx: FrozenContext) -> Any:
        """``loader(path)`` of the producer's file for this replicate (``ctx["replicate"]``); its bytes without one."""
        if self._version is None:
            self.resolve_inputs()  # apply() and direct calls: runs pin through Experiment before the spec freezes
        path = self.path_for(ctx)
        return self.loader(path) if self.loader is not None else path.read_bytes()

    def path_for(self, ctx: FrozenContext) -> Path:
        """The local file of this replicate's artifact (a download, for object stores)."""
        if self._version is None:
            self.resolve_inputs()
        replicate = int(ctx.get("replicate", 0))
        condition = self._condition_for(ctx)
        store = self._store()
        relative = self._relative(store, replicate, condition)
        if store.is_local:
            path = Path(store.full_path(relative))
            if not path.is_file():
                self._forget_step(condition)
                raise ArtifactNotFoundError(self._missing(store, replicate, condition, store.uri(relative)))
            return path
        try:
            data = store.read_bytes(relative)
        except FileNotFoundError:
            self._forget_step(condition)
            raise ArtifactNotFoundError(self._missing(store, replicate, condition, store.uri(relative))) from None
        return _local_copy(store.uri(relative), data)

    def _condition_for(self, ctx: FrozenContext) -> str:
        """The producer condition to read: the one asked for, else the consumer's own when the producer ran it."""
        if self.condition is not None:
            return self.condition
        wanted = str(ctx.get("condition", BASELINE_CONDITION))
        if wanted == BASELINE_CONDITION or wanted in self._producer_conditions:
            return wanted
        if not self._producer_conditions and self._exists(int(ctx.get("replicate", 0)), wanted):
            return wanted  # a run recorded without its conditions: look for the folder
        warned = self.__dict__.setdefault("_warned", set())
        if wanted not in warned:
            warned.add(wanted)
            (getattr(ctx, "logger", None) or logger).warning(
                "Artifact %s: experiment '%s' v%s has no condition '%s'; falling back to '%s'.",
                self._name,
                self._producer_id,
                self._version,
                wanted,
                BASELINE_CONDITION,
            )
        return BASELINE_CONDITION

    def _exists(self, replicate: int, condition: str) -> bool:
        assert self._producer_id is not None and self._version is not None
        try:
            return self.exists_for(self._store(), self._producer_id, self._version, replicate, condition)
        except ValidationError:
            return False

    def _store(self) -> Store:
        assert self._location is not None
        store = self.__dict__.get("_store_cache")
        if store is None or store.location != self._location:
            store = Store(self._location)
            self._store_cache = store  # one filesystem client per process, not one per replicate
        return store

    def _relative(self, store: Store, replicate: int, condition: str) -> str:
        producer_id, version = self._producer_id, self._version
        assert producer_id is not None and version is not None
        step = self._step_for(store, producer_id, version, replicate, condition)
        return layout.artifact(producer_id, version, replicate, condition, step, self._name)

    def _forget_step(self, condition: str) -> None:
        if self.step is None and self._producer_id is not None and self._version is not None:
            self._steps.pop((self._producer_id, self._version, condition), None)

    def _step_for(self, store: Store, producer_id: str, version: int, replicate: int, condition: str) -> str:
        """The producer step whose folder holds this artifact (looked up once, then cached)."""
        if self.step is not None:
            return step_folder(self.step, self._producer_steps)
        key = (producer_id, version, condition)
        cached = self._steps.get(key)
        if cached is not None:
            return cached
        step = find_step(store, producer_id, version, replicate, condition, self._name)
        if step is None:
            folder = f"{layout.version_dir(producer_id, version)}/replicate_{int(replicate)}/{condition}"
            raise ArtifactNotFoundError(self._missing(store, replicate, condition, store.uri(folder)))
        self._steps[key] = step
        return step

    def _missing(self, store: Store, replicate: int, condition: str, where: str) -> str:
        return (
            f"experiment '{self._producer_id}' v{self._version} has no artifact '{self._name}' for "
            f"replicate {replicate}, condition '{condition}' (looked in {where}); check that the "
            f"producer ran at least {replicate + 1} replicate(s), that this replicate did not fail, and that "
            f"a step writes it with ctx.artifacts.add('{self._name}', ...)"
        )

    def exists_for(
        self, store: Store, producer_id: str, version: int, replicate: int, condition: str | None = None
    ) -> bool:
        """Whether replicate ``replicate`` of ``producer_id`` v``version`` stored this artifact (baseline unless
        ``condition`` or the artifact's own condition says otherwise)."""
        condition = condition or self.condition or BASELINE_CONDITION
        if self.step is not None:
            steps = self._producer_steps
            if not steps or (producer_id, version) != (self._producer_id, self._version):
                plan = RunRepository(store).plan(producer_id, version) or {}
                steps = tuple(str(s.get("name")) for s in plan.get("steps", ()) or () if isinstance(s, dict))
            relative = layout.artifact(
                producer_id, version, replicate, condition, step_folder(self.step, steps), self._name
            )
            return store.exists(relative)
        return find_step(store, producer_id, version, replicate, condition, self._name) is not None

    # ------------------------------------------------------------------ pickling

    def __getstate__(self) -> dict[str, Any]:
        """Workers get plain values: the producer experiment travels as its id, never as an object."""
        state = dict(self.__dict__)
        state.pop("_store_cache", None)
        state.pop("_warned", None)
        state["_ctx"] = None
        producer = state.get("producer")
        if producer is not None and not isinstance(producer, str):
            state["producer"] = self._producer_id if self._producer_id is not None else producer.id
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


def _as_path(path: Path) -> Path:
    return path


class ArtifactDataSource(DataSource):
    """``Experiment.artifact_datasource(...)``: the :class:`~pathlib.Path` of one artifact, replicate by replicate.

    Reads the newest finished run of the experiment it was made from (pinned on the driver
    before the consumer's replicates start); ``replicates`` is that run's replicate count.
    It reads another experiment's results without declaring a dependency, so a graph does not
    order the two: run the producer first.
    """

    def __init__(
        self,
        experiment: Experiment,
        step: str,
        name: str,
        condition: str = BASELINE_CONDITION,
        *,
        require_metadata: bool = False,
    ) -> None:
        self._artifact = Artifact(name, loader=_as_path, producer=experiment, condition=condition, step=step)
        self.replicates: int = experiment.replicates
        try:
            self._artifact.resolve_inputs()
        except ValidationError:
            if require_metadata:
                raise ArtifactNotFoundError(
                    f"Metadata missing: experiment '{experiment.id}' has no finished run to read artifact "
                    f"'{name}' from (require_metadata=True); run '{experiment.id}' first"
                ) from None
        else:
            self.replicates = self._artifact.replicates or self.replicates

    @property
    def name(self) -> str:
        return "artifact_datasource"

    @property
    def params(self) -> dict[str, Any]:
        return self._artifact.params

    @property
    def fingerprint(self) -> str:
        return stable_hash("crystallize.ArtifactDataSource", self._artifact.fingerprint, self._artifact.step)

    def resolve_inputs(self) -> None:
        self._artifact.resolve_inputs()
        self.replicates = self._artifact.replicates or self.replicates

    def fetch(self, ctx: FrozenContext) -> Path:
        path = self._artifact.fetch(ctx)
        assert isinstance(path, Path)
        return path


def step_folder(step: str, steps: tuple[str, ...] | list[str]) -> str:
    """The folder of the producer step asked for by our name or by the name 0.27 gave it."""
    if step in steps:
        return step
    for candidate in steps:
        if layout.legacy_step_folder(candidate) == step:
            return candidate
    return step


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


# ---------------------------------------------------------------------- object stores: loaders get a local file

_downloads_lock = threading.Lock()
_downloads: str | None = None


def _local_copy(uri: str, data: bytes) -> Path:
    """A private local file holding ``data`` (loaders take a path); removed when the process exits."""
    global _downloads
    with _downloads_lock:
        if _downloads is None:
            _downloads = tempfile.mkdtemp(prefix="crystallize-artifacts-")
            atexit.register(shutil.rmtree, _downloads, True)
        folder = Path(_downloads) / hashlib.sha256(uri.encode("utf-8")).hexdigest()[:32]
    folder.mkdir(exist_ok=True)
    target = folder / uri.rstrip("/").rsplit("/", 1)[-1]
    fd, temporary = tempfile.mkstemp(dir=folder)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(temporary, target)
    return target
