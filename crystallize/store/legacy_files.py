"""The files Crystallize 0.27 left in a version folder, so tools written for it keep working.

0.27 kept a run's results only in these files; tools read them straight from the folder:

``metadata.json``
    ``{"replicates": N, "id": ..., "name": ...}`` (0.27's ``artifact_datasource`` reads the count).
``<condition>/results.json``
    ``{"metrics": {metric: [value per replicate]}}`` for the baseline and every treatment.
``<condition>/.crystallize_complete``
    An empty file: the condition finished (0.27's resume and graph look for it).
``_manifest.json``
    ``{artifact name: step folder}``: where under ``replicate_<i>/<condition>/`` an artifact is.

Here they are a view, not a record: :class:`~crystallize.store.records.RunRecorder` derives
them from the same result it wrote ``metrics.parquet`` and ``run.json`` from, and writes them
after ``run.json``, so they exist only for finished runs. Nothing in Crystallize reads them back
(the loaders read the records), so an edited or stale copy can mislead a 0.27 tool, never us.
Completion markers go last: a marker means every other file of the version is in place.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from . import layout
from .filesystem import Store

logger = logging.getLogger(__name__)


def plain(value: Any) -> Any:
    """``value`` as the JSON types 0.27's files hold: what reading ``results.json`` gives back.

    NumPy scalars and arrays become numbers and lists, tuples lists, mapping keys strings (as
    ``json`` writes them); sets become sorted lists; anything JSON cannot hold becomes its
    ``repr`` rather than failing a finished run (0.27 raised there).
    """
    if value is None or type(value) in (str, bool, int, float):
        return value
    if isinstance(value, Mapping):
        return {_key(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, str):  # subclasses: str enums
        return str(value)
    if isinstance(value, int):  # subclasses: int enums (bool has none)
        return int(value)
    if isinstance(value, float):  # subclasses: NumPy's float64
        return float(value)
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):
        return plain(value.tolist())
    if isinstance(value, (set, frozenset)):
        items = [plain(v) for v in value]
        try:
            return sorted(items)
        except TypeError:
            return sorted(items, key=repr)
    return repr(value)


def _key(key: Any) -> str:
    """A mapping key as ``json`` writes it (``1`` -> ``"1"``, ``True`` -> ``"true"``), else its repr."""
    key = plain(key) if type(key).__module__ == "numpy" else key
    if isinstance(key, str):
        return str(key)
    if key is None or isinstance(key, (bool, int, float)):
        return json.dumps(key)
    return repr(key)


def results_document(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """What ``<condition>/results.json`` holds for one condition's metrics."""
    return {"metrics": plain(metrics)}


def _dumps(document: Any) -> bytes:
    return json.dumps(document).encode()  # 0.27's layout: one line, default separators


def write(
    store: Store,
    experiment: str,
    version: int,
    *,
    metadata: Mapping[str, Any],
    conditions: Mapping[str, Mapping[str, Any]],
    manifest: Mapping[str, str],
) -> None:
    """Write the 0.27 files of a finished version: metadata, each condition's results, the manifest, then
    the completion markers.

    Each file is published atomically but not fsynced: they are a view derived from the records
    (which are), never read back, and an optimize run has a condition folder per candidate, where
    two fsyncs a file cost more than the candidates' replicates.
    """

    def put(relative: str, data: bytes) -> None:
        store.write_bytes(relative, data, durable=False)

    put(layout.legacy_file(experiment, version, layout.LEGACY_METADATA), _dumps(plain(metadata)))
    for condition, metrics in conditions.items():
        relative = layout.legacy_condition_file(experiment, version, condition, layout.LEGACY_RESULTS)
        put(relative, _dumps(results_document(metrics)))
    put(layout.legacy_file(experiment, version, layout.LEGACY_MANIFEST), _dumps(dict(manifest)))
    for condition in conditions:
        put(layout.legacy_condition_file(experiment, version, condition, layout.LEGACY_COMPLETE), b"")


def remove(store: Store, experiment: str, version: int) -> None:
    """Delete a version's 0.27 files (markers first), before its records are reset for a rerun into it.

    Condition folders are the entries that are not the version folder's own; one left empty is removed.
    """
    folder = layout.version_dir(experiment, version)
    conditions = [name for name in store.list_dir(folder) if layout.condition_name_problem(name) is None]
    for condition in conditions:
        store.delete(layout.legacy_condition_file(experiment, version, condition, layout.LEGACY_COMPLETE))
    for condition in conditions:
        store.delete(layout.legacy_condition_file(experiment, version, condition, layout.LEGACY_RESULTS))
        if store.is_dir(f"{folder}/{condition}") and not store.list_dir(f"{folder}/{condition}"):
            store.delete(f"{folder}/{condition}")
    for name in (layout.LEGACY_MANIFEST, layout.LEGACY_METADATA):
        store.delete(layout.legacy_file(experiment, version, name))
