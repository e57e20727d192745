"""deploy/ against the published definitions it claims to follow, with their own validators:

- every Strimzi resource of deploy/k8s against the ``openAPIV3Schema`` of its CRD (the
  version it names) in ``../shared/standards/strimzi/`` (jsonschema), plus no field the
  API server would prune (Strimzi's schemas do not forbid unknown fields; the server
  drops them silently), and the Kafka version against Strimzi's ``kafka-versions.yaml``;
- every core Kubernetes object (Deployment, Service, PodDisruptionBudget, NetworkPolicy,
  CronJob, ...) with ``kubernetes-validate`` against the schemas of Kubernetes
  ``KUBERNETES_VERSION``, strict (unknown fields are errors);
- deploy/compose.yaml against ``../shared/standards/compose-spec.json`` (jsonschema).

The standards folder is the sibling of the repository (of the main checkout, for a git
worktree); tests that need it skip, saying so, where it is absent.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from standards import STANDARDS

ROOT = Path(__file__).resolve().parents[3]
STRIMZI = STANDARDS / "strimzi"
K8S = ROOT / "deploy" / "k8s"
COMPOSE = ROOT / "deploy" / "compose.yaml"
KUBERNETES_VERSION = "1.33.0"
STRIMZI_GROUP = "kafka.strimzi.io"
# Objects of other operators (Prometheus Operator): no schema here to hold them against.
OTHER_OPERATORS = {"monitoring.coreos.com"}
CRD_FILES = {
    "Kafka": "040-Crd-kafka.yaml",
    "KafkaTopic": "043-Crd-kafkatopic.yaml",
    "KafkaUser": "044-Crd-kafkauser.yaml",
    "KafkaNodePool": "045-Crd-kafkanodepool.yaml",
}

needs_strimzi = pytest.mark.skipif(
    not STRIMZI.is_dir(), reason=f"Strimzi CRDs not found at {STRIMZI} (../shared/standards)"
)
needs_compose_spec = pytest.mark.skipif(
    not (STANDARDS / "compose-spec.json").is_file(),
    reason=f"compose-spec.json not found in {STANDARDS} (../shared/standards)",
)


def manifests() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc is not None:
                found.append((f"{path.name}: {doc['kind']} {doc['metadata']['name']}", doc))
    return found


def api_group(doc: dict[str, Any]) -> str:
    api: str = doc["apiVersion"]
    return api.split("/")[0] if "/" in api else ""


def strimzi_docs() -> list[tuple[str, dict[str, Any]]]:
    return [(where, doc) for where, doc in manifests() if api_group(doc) == STRIMZI_GROUP]


def core_docs() -> list[tuple[str, dict[str, Any]]]:
    return [
        (where, doc)
        for where, doc in manifests()
        if api_group(doc) not in OTHER_OPERATORS | {STRIMZI_GROUP}
    ]


def crd_schema(kind: str, version: str) -> dict[str, Any]:
    crd = yaml.safe_load((STRIMZI / CRD_FILES[kind]).read_text(encoding="utf-8"))
    assert crd["spec"]["names"]["kind"] == kind
    assert crd["spec"]["group"] == STRIMZI_GROUP
    served = {v["name"]: v for v in crd["spec"]["versions"] if v.get("served")}
    assert version in served, f"{kind} {version}: the CRD serves only {sorted(served)}"
    schema: dict[str, Any] = served[version]["schema"]["openAPIV3Schema"]
    return schema


def pruned_fields(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Fields of ``value`` a structural schema does not declare: what the API server
    would drop without a word (Kubernetes' pruning of custom resources)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    found: list[str] = []
    if isinstance(value, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            if path == "" and key in ("apiVersion", "kind", "metadata"):
                continue
            if props is not None and key in props:
                found += pruned_fields(item, props[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                found += pruned_fields(item, extra, f"{path}.{key}")
            elif extra is not True:
                found.append(f"{path}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            found += pruned_fields(item, schema["items"], f"{path}[{index}]")
    return found


# --- Strimzi --------------------------------------------------------------------------


def test_every_strimzi_kind_has_a_crd_here() -> None:
    kinds = {doc["kind"] for _, doc in strimzi_docs()}
    assert kinds == set(CRD_FILES), kinds


@needs_strimzi
@pytest.mark.parametrize("where,doc", strimzi_docs(), ids=lambda x: x if isinstance(x, str) else "")
def test_strimzi_resource_is_valid_against_its_crd(where: str, doc: dict[str, Any]) -> None:
    version = doc["apiVersion"].split("/")[1]
    schema = crd_schema(doc["kind"], version)
    body = {k: v for k, v in doc.items() if k != "metadata"}
    validator_class = jsonschema.validators.validator_for(
        schema, default=jsonschema.Draft7Validator
    )
    errors = sorted(validator_class(schema).iter_errors(body), key=lambda e: list(e.path))
    assert not errors, f"{where}: " + "; ".join(
        f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors
    )
    assert pruned_fields(body, schema) == [], f"{where}: fields the CRD does not declare"
    # The annotations of the v1beta2 era (KRaft and node pools are the only mode now).
    annotations = doc["metadata"].get("annotations", {})
    assert "strimzi.io/kraft" not in annotations and "strimzi.io/node-pools" not in annotations


def test_pruning_check_catches_an_undeclared_field() -> None:
    schema = {
        "type": "object",
        "properties": {
            "spec": {"type": "object", "properties": {"a": {"type": "integer"}}},
            "config": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        },
    }
    doc = {"spec": {"a": 1, "replicas": 3}, "config": {"anything": 1}}
    assert pruned_fields(doc, schema) == [".spec.replicas"]


@needs_strimzi
def test_kafka_version_is_one_strimzi_supports() -> None:
    versions = yaml.safe_load((STRIMZI / "kafka-versions.yaml").read_text(encoding="utf-8"))
    supported = {str(v["version"]): v for v in versions if v.get("supported")}
    (kafka,) = [doc for _, doc in strimzi_docs() if doc["kind"] == "Kafka"]
    version = str(kafka["spec"]["kafka"]["version"])
    assert version in supported, f"Kafka {version}; Strimzi supports {sorted(supported)}"
    metadata = kafka["spec"]["kafka"].get("metadataVersion")
    if metadata is not None:
        # Not newer than the version's own metadata version (older is allowed mid-upgrade).
        assert str(metadata) <= str(supported[version]["metadata"]), metadata


# --- core Kubernetes objects ------------------------------------------------------------


def test_core_objects_include_every_kind_the_bus_needs() -> None:
    kinds = {doc["kind"] for _, doc in core_docs()}
    assert {
        "Namespace",
        "ConfigMap",
        "Deployment",
        "StatefulSet",
        "Service",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "CronJob",
        "Job",
        "PersistentVolumeClaim",
    } <= kinds


@pytest.mark.parametrize("where,doc", core_docs(), ids=lambda x: x if isinstance(x, str) else "")
def test_core_object_is_valid_for_kubernetes(where: str, doc: dict[str, Any]) -> None:
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{where}: {'.'.join(map(str, exc.path))}: {exc.message}")


def test_kubernetes_validate_refuses_a_broken_object() -> None:
    broken = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "x"},
        "spec": {"maxUnavailable": 1, "selectr": {}},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


# --- compose -----------------------------------------------------------------------------


@needs_compose_spec
def test_compose_file_is_valid_against_the_compose_spec() -> None:
    spec = json.loads((STANDARDS / "compose-spec.json").read_text(encoding="utf-8"))
    compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    # The spec names draft-07 by a URI jsonschema does not know ("https://…/schema"
    # without "#"); it is draft-07, so that validator is used directly.
    assert "draft-07" in spec["$schema"]
    errors = list(jsonschema.Draft7Validator(spec).iter_errors(compose))
    assert not errors, "; ".join(f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors)
