"""What a run promised to compute (its plan), and what would make resuming it wrong."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._version import __version__
from ..hashing import stable_hash
from ..provenance import describe_treatment
from .identity import Identities, compute_identities
from .plan import RunSpec

if TYPE_CHECKING:
    from ..datasource import DataSource
    from ..pipeline import Pipeline
    from ..treatment import Treatment


def _safe_hash(value: Any) -> str:
    try:
        return stable_hash(value)
    except Exception:  # noqa: BLE001 - unhashable values (models, clients): compare their keys only
        return stable_hash(sorted(value)) if isinstance(value, Mapping) else "unhashable"


def describe_work(
    pipeline: Pipeline,
    datasource: DataSource,
    conditions: Mapping[str, Treatment | None],
    identities: Identities | None = None,
) -> dict[str, Any]:
    """The plan fields known before step setup runs: steps, datasource, conditions and treatments.

    Fingerprints come from the driver-made ``identities`` (computed here when not given), the
    same ones the cache uses, so an edited helper a step calls blocks resume as it misses the cache.
    """
    if identities is None:
        identities = compute_identities(pipeline, datasource)
    return {
        "conditions": list(conditions),
        "steps": [
            {"name": step.name, "fingerprint": fingerprint}
            for step, fingerprint in zip(pipeline.steps, identities.steps, strict=True)
        ],
        "datasource": {
            "name": getattr(datasource, "name", type(datasource).__name__),
            "fingerprint": identities.datasource,
        },
        "treatments": {
            name: (treatment.fingerprint if treatment is not None else None) for name, treatment in conditions.items()
        },
    }


def build_plan(spec: RunSpec, conditions: Mapping[str, Treatment | None]) -> dict[str, Any]:
    """The facts a resumed run must share with the original, in JSON-friendly form."""
    return {
        "experiment": spec.name,
        "mode": spec.mode,
        "replicates": spec.replicates,
        "root_seed": spec.seeding.root_seed,
        "auto_seed": spec.seeding.auto_seed,
        "seed_stream": spec.seeding.stream,  # not compared on resume: only run() resumes, always "main"
        **describe_work(spec.pipeline, spec.datasource, conditions, spec.identities),
        "initial_ctx": _safe_hash(dict(spec.initial_ctx)),
        "crystallize_version": __version__,
        # typed values, for showing an interrupted run (resume compares the fingerprints above, not these)
        "treatment_values": {name: describe_treatment(t) for name, t in conditions.items()},
    }


_CHECKED = {
    "steps": "the pipeline (step code or parameters)",
    "datasource": "the datasource (code or parameters)",
    "treatments": "the treatments (names or values)",
    "conditions": "the conditions",
    "initial_ctx": "initial_ctx (or what step setup() adds to it)",
    "replicates": "the number of replicates",
    "root_seed": "the seed",
    "auto_seed": "SeedPlugin.auto_seed",
}


def plan_differences(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Human-readable list of what changed between the stored plan and this one."""
    changes = []
    for key, label in _CHECKED.items():
        before, after = stored.get(key), current.get(key)
        if before == after:
            continue
        if key == "treatments" and isinstance(before, Mapping) and isinstance(after, Mapping):
            for name in sorted(set(before) | set(after)):
                if name not in after:
                    changes.append(f"treatment '{name}' was removed")
                elif name not in before:
                    changes.append(f"treatment '{name}' was added")
                elif before[name] != after[name]:
                    changes.append(f"treatment '{name}' changed its values")
        elif key == "steps" and isinstance(before, list) and isinstance(after, list):
            old = [s.get("name") for s in before]
            new = [s.get("name") for s in after]
            if old != new:
                changes.append(f"the pipeline's steps: {' -> '.join(old)} became {' -> '.join(new)}")
            else:
                changes.extend(
                    f"step '{a['name']}' changed (its code or parameters)"
                    for a, b in zip(after, before, strict=True)
                    if a != b
                )
        else:
            changes.append(f"{label}: {_short(before)} -> {_short(after)}")
    return changes


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 160 else text[:157] + "..."
