"""Where everything lives inside a store; the only module that knows these paths.

Data store (default ``data/``)::

    <experiment>/v<N>/plan.json                     what the run set out to do (written first)
    <experiment>/v<N>/outcomes/part-*.arrow         finished replicates (Arrow, signed), appended as they finish
    <experiment>/v<N>/replicate_<i>/<condition>/<step>/<artifact>
    <experiment>/v<N>/metrics.parquet               long form: condition, replicate, metric, value
    <experiment>/v<N>/run.json                      provenance; written last, so it marks a finished run
    <experiment>/v<N>/lease.json, holders/<id>.json  renewed while sessions write the version
    <experiment>/v<N>/claims/<block>/<generation>   which session computes a block (``-done`` once it did)
    <experiment>/v<N>/metadata.json, _manifest.json,
        <condition>/results.json, <condition>/.crystallize_complete
                                                    the files Crystallize 0.27 wrote, for tools made for it:
                                                    derived from the records above, written after run.json,
                                                    never read back (see ``crystallize.store.legacy_files``)

Condition folders sit beside the records, so a condition may not take a name the version folder
uses itself (:func:`condition_name_problem`).

Cache store (default ``.cache/``)::

    <step fingerprint>/<key>
"""

from __future__ import annotations

import re

from ..errors import ValidationError
from ..paths import check_relative, check_segment

PLAN = "plan.json"
RUN_RECORD = "run.json"
METRICS = "metrics.parquet"
OUTCOMES = "outcomes"
_VERSION = re.compile(r"^v(\d+)$")

# The 0.27 files (see ``legacy_files``): two beside the records, two in each condition's folder.
LEGACY_METADATA = "metadata.json"
LEGACY_MANIFEST = "_manifest.json"
LEGACY_RESULTS = "results.json"
LEGACY_COMPLETE = ".crystallize_complete"

# Every name a version folder holds besides condition folders (``lease.json`` is written by
# ``lease``, ``claims/`` and ``holders/`` by ``claims``; a test keeps these in step with them).
VERSION_ENTRIES = frozenset(
    {PLAN, RUN_RECORD, METRICS, OUTCOMES, "lease.json", "claims", "holders", LEGACY_METADATA, LEGACY_MANIFEST}
)
_REPLICATE = re.compile(r"^replicate_\d+$", re.IGNORECASE)
_RESERVED = {name.casefold(): name for name in VERSION_ENTRIES}


def experiment_dir(experiment: str) -> str:
    return check_segment(experiment, "experiment name")


def version_dir(experiment: str, version: int) -> str:
    return f"{experiment_dir(experiment)}/v{int(version)}"


def parse_version(name: str) -> int | None:
    match = _VERSION.match(name)
    return int(match.group(1)) if match else None


def run_file(experiment: str, version: int, name: str) -> str:
    return f"{version_dir(experiment, version)}/{name}"


def condition_name_problem(name: str) -> str | None:
    """Why a condition's folder cannot be named ``name`` beside the records of a version, or None.

    Compared without case: on macOS and Windows folders, ``Outcomes`` is ``outcomes``.
    Names starting with a dot are the store's own (claim markers, temporary files).
    """
    taken = _RESERVED.get(name.casefold())
    if taken is not None:
        same = "" if taken == name else " (folder names do not tell case apart on every system)"
        return f"the version folder keeps its own '{taken}' there{same}"
    if _REPLICATE.match(name):
        return "the version folder keeps each replicate's artifacts under replicate_<i>/"
    if name.startswith("."):
        return "names starting with a dot are the store's own (claim markers, temporary files)"
    return None


def check_condition_name(name: str, what: str) -> str:
    """``name`` if a condition folder may take it (see :func:`condition_name_problem`), else a ``ValidationError``."""
    check_segment(name, what)
    problem = condition_name_problem(name)
    if problem is not None:
        raise ValidationError(
            f"{what} '{name}' cannot name a condition: each condition gets a folder <experiment>/v<N>/{name}/ "
            f"in the data store, and {problem}; rename it."
        )
    return name


def legacy_file(experiment: str, version: int, name: str) -> str:
    """A 0.27 file beside the records (``metadata.json``, ``_manifest.json``)."""
    return f"{version_dir(experiment, version)}/{name}"


def legacy_condition_file(experiment: str, version: int, condition: str, name: str) -> str:
    """A 0.27 file in a condition's folder (``results.json``, ``.crystallize_complete``)."""
    return f"{version_dir(experiment, version)}/{check_segment(condition, 'condition name')}/{name}"


def outcome_part(experiment: str, version: int, part: str) -> str:
    return f"{version_dir(experiment, version)}/{OUTCOMES}/{check_segment(part, 'outcome part')}"


def artifact(experiment: str, version: int, replicate: int, condition: str, step: str, name: str) -> str:
    return "/".join(
        (
            version_dir(experiment, version),
            f"replicate_{int(replicate)}",
            check_segment(condition, "condition name"),
            check_segment(step, "step name"),
            check_relative(name, f"artifact name (step '{step}')"),
        )
    )


def legacy_step_folder(step: str) -> str:
    """The folder Crystallize 0.27 gave the artifacts of function step ``step`` (``write_values`` ->
    ``Write_ValuesStep``); ours is the step's name, and lookups accept either."""
    return f"{step.title()}Step"


_REPLICATE_FOLDER = re.compile(r"^replicate_\d+/")


def is_artifact_path(inside_version: str) -> bool:
    """Whether a path relative to a version folder is an artifact (``replicate_<i>/<condition>/...``)."""
    return bool(_REPLICATE_FOLDER.match(inside_version))


def cache_dir(fingerprint: str) -> str:
    return check_segment(fingerprint, "step fingerprint")


def cache_entry(fingerprint: str, key: str) -> str:
    return f"{check_segment(fingerprint, 'step fingerprint')}/{check_segment(key, 'cache key')}"


CACHE_READ_SETS = "reads.json"


def cache_read_sets(fingerprint: str) -> str:
    """The read-sets a step has shown, beside its entries (entry names are hex digests, so no clash)."""
    return f"{check_segment(fingerprint, 'step fingerprint')}/{CACHE_READ_SETS}"
