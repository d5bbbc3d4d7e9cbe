"""Where everything lives inside a store; the only module that knows these paths.

Data store (default ``data/``)::

    <experiment>/v<N>/plan.json                     what the run set out to do (written first)
    <experiment>/v<N>/outcomes/part-*.arrow         finished replicates (Arrow, signed), appended as they finish
    <experiment>/v<N>/replicate_<i>/<condition>/<step>/<artifact>
    <experiment>/v<N>/metrics.parquet               long form: condition, replicate, metric, value
    <experiment>/v<N>/run.json                      provenance; written last, so it marks a finished run
    <experiment>/v<N>/lease.json, holders/<id>.json  renewed while sessions write the version
    <experiment>/v<N>/claims/<block>/<generation>   which session computes a block (``-done`` once it did)

Cache store (default ``.cache/``)::

    <step fingerprint>/<key>
"""

from __future__ import annotations

import re

from ..paths import check_relative, check_segment

PLAN = "plan.json"
RUN_RECORD = "run.json"
METRICS = "metrics.parquet"
OUTCOMES = "outcomes"
_VERSION = re.compile(r"^v(\d+)$")


def experiment_dir(experiment: str) -> str:
    return check_segment(experiment, "experiment name")


def version_dir(experiment: str, version: int) -> str:
    return f"{experiment_dir(experiment)}/v{int(version)}"


def parse_version(name: str) -> int | None:
    match = _VERSION.match(name)
    return int(match.group(1)) if match else None


def run_file(experiment: str, version: int, name: str) -> str:
    return f"{version_dir(experiment, version)}/{name}"


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


def cache_dir(fingerprint: str) -> str:
    return check_segment(fingerprint, "step fingerprint")


def cache_entry(fingerprint: str, key: str) -> str:
    return f"{check_segment(fingerprint, 'step fingerprint')}/{check_segment(key, 'cache key')}"


CACHE_READ_SETS = "reads.json"


def cache_read_sets(fingerprint: str) -> str:
    """The read-sets a step has shown, beside its entries (entry names are hex digests, so no clash)."""
    return f"{check_segment(fingerprint, 'step fingerprint')}/{CACHE_READ_SETS}"
