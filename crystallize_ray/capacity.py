"""What a Ray cluster can run: now, and once its autoscaler has added nodes; and the demand shown to it.

The executor reads this at start (the feasibility check: a head with no CPUs passes when
the autoscaler can add nodes that fit a replicate) and about once a second while a run
goes (the in-flight limit and batch sizes follow the CPUs present, so nodes that join
mid-run get work). On a cluster with an autoscaler, the remaining work is shown to it
with ``ray.autoscaler.sdk.request_resources`` and withdrawn when the run ends, so it can
scale up to what the run needs and back down after. A plain local Ray has no autoscaler:
nothing is requested there, and finding that out costs one key-value read per run.

Where Ray 2.60 keeps what we need (read from its source):

* the v1 monitor (the default; ``ray start --head`` always runs one) writes its status
  as JSON under the internal-KV key ``__autoscaling_status``: its pid, and
  ``autoscaler_report.node_type_mapping``, node id -> node type. A cluster started without
  ``--autoscaling-config`` runs the monitor with a read-only provider whose node types are
  ``node_<node id>``: that is how a cluster without an autoscaler is told apart;
* the autoscaler's node types (resources, ``max_workers``) exist only in its config file,
  the ``--autoscaling-config`` of the monitor process; it is read when that process runs
  on this machine and serves this cluster (a driver on the head node, as ``ray submit``
  and ``ray attach`` give you); elsewhere the node types are unknown and the check
  trusts the autoscaler;
* autoscaler v2 (KubeRay) sets ``__autoscaler_v2_enabled`` in the ``__autoscaler`` KV
  namespace; its node types come from the RayCluster resource, which a driver cannot read.

``request_resources`` holds one request per cluster (the last call wins), so this
process's runs add their demand up in :data:`DEMAND` before it is sent.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

STATUS_KEY = b"__autoscaling_status"  # ray._private.ray_constants.DEBUG_AUTOSCALING_STATUS
V2_KEY = b"__autoscaler_v2_enabled"  # ray._raylet.GCS_AUTOSCALER_V2_ENABLED_KEY
V2_NAMESPACE = b"__autoscaler"  # ray._raylet.GCS_AUTOSCALER_STATE_NAMESPACE
READONLY_TYPE_PREFIX = "node_"  # the read-only provider's per-node types (format_readonly_node_type)
# request_resources takes one bundle per replicate slot: bound the list when the autoscaler's
# own maximum is unknown (a million short replicates must not become a million bundles).
MAX_DEMAND_BUNDLES = 1024


def slots_in(resources: Mapping[str, float], request: Mapping[str, float]) -> int:
    """How many replicates needing ``request`` fit at once on ``resources``."""
    counts = [math.floor(resources.get(k, 0.0) / v + 1e-9) for k, v in request.items() if v]
    return max(0, min(counts)) if counts else 1


def _fits(resources: Mapping[str, float], request: Mapping[str, float]) -> bool:
    return all(resources.get(k, 0.0) >= v for k, v in request.items())


@dataclass(frozen=True)
class NodeType:
    """A kind of node the autoscaler can add; empty ``resources``: filled in by the provider at launch."""

    name: str
    resources: Mapping[str, float]
    max_workers: int

    def fits(self, request: Mapping[str, float]) -> bool | None:
        """Whether a replicate fits on one such node; ``None`` when its resources are not known here."""
        if not self.resources:
            return None
        # Autoscaler configs rarely list memory; Ray gives every node some.
        return _fits(self.resources, {k: v for k, v in request.items() if k in self.resources or k != "memory"})


@dataclass(frozen=True)
class Autoscaler:
    """The cluster's autoscaler: the node types it can add (``None``: not readable from this machine)."""

    node_types: tuple[NodeType, ...] | None
    max_workers: int | None
    source: str

    def can_fit(self, request: Mapping[str, float]) -> bool | None:
        """Whether some node type it can add fits a replicate; ``None`` when that cannot be told."""
        if self.node_types is None:
            return None
        answers = [t.fits(request) for t in self.node_types if t.max_workers > 0]
        if True in answers:
            return True
        return None if None in answers else False

    def max_slots(self, request: Mapping[str, float]) -> int | None:
        """Replicate slots on all the worker nodes it may add, or ``None`` when not known here."""
        if self.node_types is None:
            return None
        per_node = []
        for node_type in self.node_types:
            fits = node_type.fits(request)
            if fits is None:
                return None
            if fits:
                resources = dict(node_type.resources)
                resources.setdefault("memory", math.inf)
                per_node += [slots_in(resources, request)] * node_type.max_workers
        per_node.sort(reverse=True)
        return sum(per_node[: self.max_workers] if self.max_workers is not None else per_node)

    def describe(self) -> str:
        if self.node_types is None:
            return f"an autoscaler (node types not readable here; {self.source})"
        shown = ", ".join(
            f"{t.name} x{t.max_workers} {dict(t.resources) or '(resources set at launch)'}" for t in self.node_types
        )
        return f"an autoscaler that can add {shown or 'no worker nodes'}"


def autoscaler_from_config(config: Mapping[str, Any], source: str) -> Autoscaler | None:
    """The node types of a cluster-launcher config (``available_node_types``), the head's excluded."""
    if (config.get("provider") or {}).get("type") == "readonly":
        return None
    overall = config.get("max_workers")
    head = config.get("head_node_type")
    types = []
    for name, spec in (config.get("available_node_types") or {}).items():
        if name == head or not isinstance(spec, Mapping):
            continue
        limit = spec.get("max_workers", overall if overall is not None else 0)
        resources = {str(k): float(v) for k, v in (spec.get("resources") or {}).items()}
        types.append(NodeType(str(name), resources, int(limit)))
    return Autoscaler(tuple(types), int(overall) if overall is not None else None, source)


def read_autoscaling_config(path: str | Path) -> Autoscaler | None:
    """Parse a cluster-launcher config file (YAML or JSON); ``None`` when it is not readable."""
    try:
        import yaml

        config = yaml.safe_load(Path(path).expanduser().read_text())
    except Exception as exc:  # noqa: BLE001 - unreadable: the node types stay unknown
        logger.debug("Cannot read the autoscaling config %s: %s", path, exc)
        return None
    return autoscaler_from_config(config, str(path)) if isinstance(config, Mapping) else None


def _process_args(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        return [part.decode(errors="replace") for part in raw.split(b"\0") if part]
    except OSError:
        pass
    try:
        import psutil

        return list(psutil.Process(pid).cmdline())
    except Exception:  # noqa: BLE001 - not here, gone, or not ours to read
        return []


def _flag(args: Sequence[str], name: str) -> str | None:
    for i, arg in enumerate(args):
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
        if arg == name and i + 1 < len(args):
            return args[i + 1]
    return None


def _monitor_config_path(status: Mapping[str, Any], gcs_address: str | None) -> str | None:
    """The ``--autoscaling-config`` of this cluster's monitor, when that process runs on this machine."""
    pid = status.get("monitor_pid")
    if not isinstance(pid, int) or not gcs_address:
        return None
    args = _process_args(pid)
    if not any(a.endswith("monitor.py") for a in args) or _flag(args, "--gcs-address") != gcs_address:
        return None  # another process with that pid: the monitor runs on another machine
    return _flag(args, "--autoscaling-config")


def _kv_get(key: bytes, namespace: bytes | None = None) -> bytes | None:
    from ray.experimental.internal_kv import _internal_kv_get

    value: bytes | None = _internal_kv_get(key, namespace=namespace)
    return value


def _gcs_address() -> str | None:
    import ray

    try:
        address: str | None = ray.get_runtime_context().gcs_address
        return address
    except Exception:  # noqa: BLE001 - Ray Client has none
        return None


def find_autoscaler() -> Autoscaler | None:
    """The connected cluster's autoscaler, or ``None`` when nodes are only added by hand (or Ray says nothing)."""
    try:
        raw = _kv_get(STATUS_KEY)
        status = json.loads(raw) if raw else {}
        path = _monitor_config_path(status, _gcs_address()) if isinstance(status, dict) else None
        if path:
            found = read_autoscaling_config(path)
            if found is not None or Path(path).expanduser().exists():
                return found
        report = status.get("autoscaler_report") if isinstance(status, dict) else None
        mapping = (report or {}).get("node_type_mapping") or {}
        if any(not str(t).startswith(READONLY_TYPE_PREFIX) for t in mapping.values()):
            return Autoscaler(None, None, "its monitor's status names node types")
        if _kv_get(V2_KEY, namespace=V2_NAMESPACE) == b"1":
            return Autoscaler(None, None, "autoscaler v2 is enabled")
    except Exception as exc:  # noqa: BLE001 - an old or unusual Ray: behave as without an autoscaler
        logger.debug("Cannot tell whether the Ray cluster has an autoscaler: %s", exc)
    return None


class DemandBoard:
    """What this process's runs ask the autoscaler for, summed: ``request_resources`` keeps one request per cluster.

    A run sets its demand (a resource bundle and how many of it) as it goes and clears it
    when it ends or is stopped; the sum is sent only when it changes, and an empty sum
    withdraws the request so the autoscaler may scale down.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wants: dict[str, tuple[dict[str, float], int]] = {}
        self._sent: list[dict[str, float]] | None = None
        self.requests_sent = 0

    def set(self, key: str, bundle: Mapping[str, float], count: int) -> None:
        with self._lock:
            self._wants[key] = (dict(bundle), max(0, int(count)))
            self._publish()

    def clear(self, key: str) -> None:
        with self._lock:
            if self._wants.pop(key, None) is not None:
                self._publish()

    def bundles(self) -> list[dict[str, float]]:
        out: list[dict[str, float]] = []
        for bundle, count in self._wants.values():
            out += [bundle] * min(count, MAX_DEMAND_BUNDLES - len(out))
        return out

    def _publish(self) -> None:
        bundles = self.bundles()
        if bundles == self._sent:
            return
        try:
            from ray.autoscaler.sdk import request_resources

            request_resources(bundles=bundles)
        except Exception as exc:  # noqa: BLE001 - a hint only: the run goes on with the nodes it has
            logger.warning("Could not show the autoscaler this run's demand (%s); it scales on queued tasks alone", exc)
            return
        self._sent = bundles
        self.requests_sent += 1
        logger.debug("Asked the autoscaler for %d bundle(s)", len(bundles))


DEMAND = DemandBoard()
