"""The cluster configs in cluster/ are what their tools accept: aws.yaml against the cluster-launcher
schema the installed ``ray`` ships (and Ray's own checks), kuberay.yaml as a KubeRay ``RayCluster``
with autoscaling, token auth on every pod and one Ray version throughout (no Kubernetes here)."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = ROOT / "cluster"


def load(name: str) -> dict[str, Any]:
    documents = [d for d in yaml.safe_load_all((CLUSTER / name).read_text()) if d is not None]
    assert len(documents) == 1, f"{name}: one YAML document expected"
    return documents[0]


def ray_floor() -> tuple[int, ...]:
    """The lowest Ray the ``ray`` extra allows (``ray[client]>=X.Y``)."""
    text = (ROOT / "pyproject.toml").read_text()
    match = re.search(r'^ray = \["ray(\[[a-z,]+\])?>=([\d.]+)"\]', text, re.MULTILINE)
    assert match, 'pyproject.toml: no `ray = ["ray[client]>=X.Y"]` extra'
    return tuple(int(x) for x in match.group(2).split("."))


def version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split("."))


# --- aws.yaml: Ray's cluster launcher -----------------------------------------------------------------


@pytest.fixture(scope="module")
def launcher_schema() -> dict[str, Any]:
    ray_autoscaler = pytest.importorskip("ray.autoscaler")
    return json.loads((Path(ray_autoscaler.__file__).parent / "ray-schema.json").read_text())


def test_aws_yaml_is_valid_against_the_launcher_schema_the_installed_ray_ships(launcher_schema) -> None:
    jsonschema = pytest.importorskip("jsonschema")  # a dependency of ray itself
    config = load("aws.yaml")
    jsonschema.validate(config, launcher_schema)
    # What `ray up` checks after filling Ray's defaults (node types, worker counts).
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(config)))
    assert config["available_node_types"][config["head_node_type"]]["resources"] == {"CPU": 0}


def test_the_launcher_schema_check_rejects_a_misspelt_key(launcher_schema) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    config = load("aws.yaml")
    config["idle_timeout_minute"] = config.pop("idle_timeout_minutes")
    with pytest.raises(jsonschema.ValidationError, match="idle_timeout_minute"):
        jsonschema.validate(config, launcher_schema)


# --- kuberay.yaml: a KubeRay RayCluster -----------------------------------------------------------------


def containers(group: dict[str, Any]) -> list[dict[str, Any]]:
    return group["template"]["spec"]["containers"]


def env_of(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in entries}


def assert_token_auth(entries: list[dict[str, Any]], where: str) -> None:
    env = env_of(entries)
    assert env.get("RAY_AUTH_MODE") == "token", where
    token = env.get("RAY_AUTH_TOKEN")
    assert isinstance(token, dict) and "secretKeyRef" in token, f"{where}: the token comes from a Secret"


def test_kuberay_manifest_is_an_autoscaling_ray_cluster_with_token_auth_on_every_pod() -> None:
    manifest = load("kuberay.yaml")
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayCluster"
    assert manifest["metadata"]["name"]
    spec = manifest["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert_token_auth(spec["autoscalerOptions"]["env"], "autoscaler")  # it talks to the GCS too

    head = spec["headGroupSpec"]
    assert float(head["rayStartParams"]["num-cpus"]) <= 1  # replicates run on workers
    head_container = containers(head)[0]
    assert_token_auth(head_container["env"], "head")
    assert {"CRYSTALLIZE_DATA_URI", "CRYSTALLIZE_CACHE_URI"} <= set(env_of(head_container["env"]))
    assert all(v.startswith("s3://") for k, v in env_of(head_container["env"]).items() if k.startswith("CRYSTALLIZE"))
    assert 10001 in {p["containerPort"] for p in head_container["ports"]}  # Ray Client, for ray://

    groups = spec["workerGroupSpecs"]
    assert groups
    for group in groups:
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        assert group["maxReplicas"] > group["minReplicas"]  # room for the autoscaler to grow
        for container in containers(group):
            assert_token_auth(container["env"], group["groupName"])
    for group in [head, *groups]:  # KubeRay's CRD takes string values only
        assert all(isinstance(v, str) for v in group["rayStartParams"].values()), group["rayStartParams"]


def test_kuberay_manifest_pins_one_supported_ray_version_in_every_image() -> None:
    spec = load("kuberay.yaml")["spec"]
    ray_version = spec["rayVersion"]
    assert isinstance(ray_version, str) and version(ray_version) >= ray_floor()
    for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
        for container in containers(group):
            match = re.fullmatch(r"rayproject/ray:([\d.]+)(-py\d+)?(-[a-z0-9]+)?", container["image"])
            assert match, container["image"]
            assert match.group(1) == ray_version, f"{container['name']} runs Ray {match.group(1)}, not {ray_version}"


def test_the_ray_and_test_extras_install_ray_client_which_ray_urls_need() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^ray = \["ray\[client\]>=', text, re.MULTILINE), "the `ray` extra"
    test_extra = re.search(r"^test = \[(.*?)^\]", text, re.MULTILINE | re.DOTALL)
    assert test_extra and '"ray[client]>=' in test_extra.group(1), "the `test` extra"
