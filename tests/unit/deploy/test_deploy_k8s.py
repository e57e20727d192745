"""deploy/k8s: every manifest parses, is listed in the kustomization, and its references
resolve — Service selectors, ConfigMaps and Secrets, Strimzi cluster labels, the topics
the code creates, DATABUS_* settings. Pure parsing; `kubectl kustomize` when present."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from deploy_names import directly_read_env_names, resolves_to_cli_command, setting_env_names

from bus.settings import Settings
from schemas.topics import bus_topics

ROOT = Path(__file__).resolve().parents[3]
K8S = ROOT / "deploy" / "k8s"
README = ROOT / "deploy" / "README.md"
NAMESPACE = "databus"
CLUSTER_SCOPED = {"Namespace"}
WORKLOADS = {"Deployment", "StatefulSet", "Job", "CronJob"}
# The long-running bus processes (Deployments) and what each runs: `databus ARGS`.
BUS_DEPLOYMENTS = {
    "databus-processor": ["process"],
    "databus-sink-ioc": ["sink", "ioc"],
    "databus-sink-sql": ["sink", "sql"],
    "databus-sink-health": ["sink", "health"],
    "databus-share": ["share"],
    "databus-api": ["api"],
}
# Processes that serve no /metrics, /livez, /readyz (deploy/README.md, "Probes").
NO_HEALTH_SERVER: set[str] = set()
SECRET_WORDS = ("PASSWORD", "SECRET", "PSEUDONYM_KEY", "TOKEN")


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deploy_k8s_generate", K8S / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    assert yaml is not None
    found = []
    for path in manifest_files():
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc is not None:
                doc["__file__"] = path.name
                found.append(doc)
    return found


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def pod_template(doc: dict[str, Any]) -> dict[str, Any]:
    """The pod template of a workload (a CronJob's is inside its job template)."""
    spec = doc["spec"]["jobTemplate"]["spec"] if doc["kind"] == "CronJob" else doc["spec"]
    template: dict[str, Any] = spec["template"]
    return template


def pod_specs(docs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(d, pod_template(d)["spec"]) for d in docs if d["kind"] in WORKLOADS]


def containers(docs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(d, c) for d, spec in pod_specs(docs) for c in spec["containers"]]


def is_bus(container: dict[str, Any]) -> bool:
    return str(container["image"]).split(":")[0] == "databus"


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(NAME) expansion from the variables defined before."""
    return re.sub(r"\$\(([A-Za-z0-9_]+)\)", lambda m: env[m.group(1)], value)


def documented_secrets() -> dict[str, set[str]]:
    """`kubectl create secret generic NAME --from-literal=KEY=...` lines of the README."""
    text = README.read_text(encoding="utf-8").replace("\\\n", " ")
    secrets: dict[str, set[str]] = {}
    for line in text.splitlines():
        match = re.search(r"kubectl (?:-n \S+ )?create secret generic ([a-z0-9-]+)(.*)", line)
        if match:
            keys = set(re.findall(r"--from-(?:literal|file)=([A-Za-z0-9_.-]+)=", match.group(2)))
            secrets.setdefault(match.group(1), set()).update(keys)
    return secrets


# --- text checks (no YAML parser needed) -------------------------------------------------


def test_kustomization_lists_every_manifest_and_nothing_else() -> None:
    text = (K8S / "kustomization.yaml").read_text(encoding="utf-8")
    block = text.split("resources:", 1)[1]
    listed = []
    for line in block.splitlines()[1:]:
        match = re.match(r"^\s+- (\S+\.yaml)\s*$", line)
        if not match:
            break
        listed.append(match.group(1))
    assert sorted(listed) == [p.name for p in manifest_files()]
    assert len(listed) == len(set(listed))


def test_every_databus_variable_is_a_real_setting() -> None:
    known = setting_env_names() | directly_read_env_names()
    for path in manifest_files():
        used = set(re.findall(r"\bDATABUS_[A-Z0-9_]*[A-Z0-9]", path.read_text(encoding="utf-8")))
        assert used <= known, f"{path.name}: not settings: {sorted(used - known)}"


def test_generated_manifests_are_current(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in list(os.environ):
        if var.startswith("DATABUS_"):
            monkeypatch.delenv(var)
    gen = generator()
    for name, render in gen.GENERATED.items():
        assert (K8S / name).read_text(encoding="utf-8") == render(), (
            f"{name} is stale: run `python deploy/k8s/generate.py`"
        )


def test_generated_constants_match_the_configmap() -> None:
    text = (K8S / "configmap.yaml").read_text(encoding="utf-8")
    data = dict(re.findall(r"^  (DATABUS_[A-Z0-9_]+): \"?([^\"\n]*)\"?$", text, re.MULTILINE))
    gen = generator()
    assert int(data["DATABUS_KAFKA__PARTITIONS"]) == gen.PARTITIONS
    assert int(data["DATABUS_KAFKA__REPLICATION_FACTOR"]) == gen.REPLICAS
    assert data["DATABUS_PROCESSOR_GROUP"] == gen.PROCESSOR_GROUP
    assert data["DATABUS_KAFKA__BOOTSTRAP_SERVERS"] == f"{gen.CLUSTER}-kafka-bootstrap:9092"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_builds() -> None:
    result = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


# --- structure -------------------------------------------------------------------------


def test_every_document_is_a_named_resource_in_the_namespace(docs: list[dict[str, Any]]) -> None:
    seen = set()
    for doc in docs:
        assert doc.get("apiVersion") and doc.get("kind"), doc["__file__"]
        meta = doc["metadata"]
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", meta["name"]), meta["name"]
        key = (doc["kind"], meta["name"])
        assert key not in seen, f"duplicate {key}"
        seen.add(key)
        if doc["kind"] not in CLUSTER_SCOPED:
            assert meta.get("namespace") == NAMESPACE, key


def test_workload_selectors_match_their_pod_labels(docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        if doc["kind"] in {"Deployment", "StatefulSet"}:
            selector = doc["spec"]["selector"]["matchLabels"]
            labels = doc["spec"]["template"]["metadata"]["labels"]
            assert selector.items() <= labels.items(), doc["metadata"]["name"]
        if doc["kind"] == "StatefulSet":
            assert doc["spec"]["serviceName"] in {
                s["metadata"]["name"] for s in of_kind(docs, "Service")
            }


def test_every_service_selects_a_workload_and_its_ports(docs: list[dict[str, Any]]) -> None:
    for service in of_kind(docs, "Service"):
        selector = service["spec"]["selector"]
        matched = [
            (d, spec)
            for d, spec in pod_specs(docs)
            if selector.items() <= pod_template(d)["metadata"]["labels"].items()
        ]
        assert matched, f"Service {service['metadata']['name']} selects no pod"
        port_names = {
            p.get("name")
            for _, spec in matched
            for c in spec["containers"]
            for p in c.get("ports", [])
        }
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            if isinstance(target, str):
                assert target in port_names, (service["metadata"]["name"], target)


def test_configmaps_and_secrets_referenced_exist(docs: list[dict[str, Any]]) -> None:
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in of_kind(docs, "ConfigMap")}
    # Strimzi's User Operator creates a Secret named after each KafkaUser (key: password).
    secrets: dict[str, set[str]] = {
        u["metadata"]["name"]: {"password"} for u in of_kind(docs, "KafkaUser")
    }
    for s in of_kind(docs, "Secret"):
        secrets[s["metadata"]["name"]] = set(s.get("data", {})) | set(s.get("stringData", {}))
    for name, keys in documented_secrets().items():
        secrets.setdefault(name, set()).update(keys)
    referenced = 0
    for doc, container in containers(docs):
        where = f"{doc['metadata']['name']}/{container['name']}"
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                assert source["configMapRef"]["name"] in configmaps, where
            if "secretRef" in source:
                assert source["secretRef"]["name"] in secrets, where
            referenced += 1
        for env in container.get("env", []):
            ref = env.get("valueFrom", {})
            if "configMapKeyRef" in ref:
                cm = ref["configMapKeyRef"]
                assert cm["key"] in configmaps.get(cm["name"], {}), (where, cm)
            if "secretKeyRef" in ref:
                sk = ref["secretKeyRef"]
                assert sk["name"] in secrets, (
                    f"{where}: Secret {sk['name']} is neither created here nor documented"
                )
                assert sk["key"] in secrets[sk["name"]], f"{where}: key {sk['key']} of {sk['name']}"
                referenced += 1
    for doc, spec in pod_specs(docs):
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                name = volume["secret"]["secretName"]
                assert name in secrets, f"{doc['metadata']['name']}: Secret {name} is unknown"
                mounts = {
                    m["name"]: m["mountPath"] for c in spec["containers"] for m in c["volumeMounts"]
                }
                assert volume["name"] in mounts
                # A file a setting names in the mounted Secret is one of its keys.
                for c in spec["containers"]:
                    for env in c.get("env", []):
                        path = Path(str(env.get("value", "")))
                        if str(path.parent) == mounts[volume["name"]]:
                            assert path.name in secrets[name], (env["name"], name)
                referenced += 1
    assert referenced > 0


def test_secrets_come_from_secret_objects_never_inline(docs: list[dict[str, Any]]) -> None:
    """No Secret with a value in the manifests; secret-looking variables come from a
    secretKeyRef (or are built from one, like a URL holding $(POSTGRES_PASSWORD))."""
    for secret in of_kind(docs, "Secret"):
        assert not secret.get("data") and not secret.get("stringData"), secret["metadata"]
    for configmap in of_kind(docs, "ConfigMap"):
        for key in configmap.get("data", {}):
            assert not any(word in key for word in SECRET_WORDS), key
    for doc, container in containers(docs):
        from_secret = set()
        for env in container.get("env", []):
            if "secretKeyRef" in env.get("valueFrom", {}):
                from_secret.add(env["name"])
            elif any(word in env["name"] for word in SECRET_WORDS):
                raise AssertionError(f"{doc['metadata']['name']}: {env['name']} is inline")
            elif "value" in env and re.search(r"://[^/@]*:[^/@]*@", env["value"]):
                # credentials in a URL: only by reference to a variable from a Secret
                refs = set(re.findall(r"\$\(([A-Za-z0-9_]+)\)", env["value"]))
                assert refs and refs <= from_secret, (doc["metadata"]["name"], env["name"])


def test_bus_containers_run_real_commands(docs: list[dict[str, Any]]) -> None:
    missing = []
    for doc, container in containers(docs):
        if is_bus(container) and not resolves_to_cli_command(container["args"]):
            missing.append((doc["metadata"]["name"], tuple(container["args"][:2])))
    assert not missing, f"not databus commands: {missing}"


def test_bus_container_environment_is_accepted_by_the_settings(
    docs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in of_kind(docs, "ConfigMap")}
    sample = "0123456789abcdef0123456789abcdef"
    secret_samples = {"url": "https://health-axis.example.invalid/fhir", "client-id": "databus"}
    checked = 0
    for doc, container in containers(docs):
        if not is_bus(container):
            continue
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            env.update(configmaps[source["configMapRef"]["name"]])
        for item in container.get("env", []):
            if "value" in item:
                env[item["name"]] = expand(item["value"], env)
            elif "configMapKeyRef" in item["valueFrom"]:
                ref = item["valueFrom"]["configMapKeyRef"]
                value = configmaps[ref["name"]][ref["key"]]
                # What the operator fills in: the ministry's identifier systems.
                env[item["name"]] = value or f"https://identifiers.example.invalid/{ref['key']}"
            else:
                key = item["valueFrom"]["secretKeyRef"]["key"]
                env[item["name"]] = secret_samples.get(key, sample)
        with monkeypatch.context() as patch:
            for var in list(os.environ):
                if var.startswith("DATABUS_"):
                    patch.delenv(var)
            for var, value in env.items():
                if var.startswith("DATABUS_"):
                    patch.setenv(var, str(value))
            settings = Settings()
        assert settings.kafka.bootstrap_servers == "databus-kafka-bootstrap:9092"
        assert settings.metrics.host == "0.0.0.0"
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        if "metrics" in ports:
            assert settings.metrics.port == ports["metrics"]
        if doc["metadata"]["name"] == "databus-api":
            assert settings.access.api_host == "0.0.0.0"
            assert settings.access.api_port == ports["http"]
        if "ACCESS__POLICY_FILE" in str(container.get("env")):
            assert settings.access.policy_file is not None
            mounts = [m["mountPath"] for m in container["volumeMounts"]]
            assert str(settings.access.policy_file.parent) in mounts
        if container["args"][:2] in (["sink", "sql"], ["opendata", "export"]):
            assert settings.shared_repo.url is not None
        checked += 1
    assert checked >= 8


def test_strimzi_cluster_is_kraft_with_rf3_and_min_isr2(docs: list[dict[str, Any]]) -> None:
    (kafka,) = of_kind(docs, "Kafka")
    name = kafka["metadata"]["name"]
    # Strimzi 1.x: KRaft with node pools is the only mode; v1beta2's opt-in annotations
    # are gone, and every Strimzi resource is kafka.strimzi.io/v1.
    assert not kafka["metadata"].get("annotations")
    for doc in docs:
        if doc["apiVersion"].startswith("kafka.strimzi.io/"):
            assert doc["apiVersion"] == "kafka.strimzi.io/v1", doc["metadata"]["name"]
    config = kafka["spec"]["kafka"]["config"]
    assert config["default.replication.factor"] == 3
    assert config["min.insync.replicas"] == 2
    assert config["auto.create.topics.enable"] is False
    pools = of_kind(docs, "KafkaNodePool")
    roles = {role for pool in pools for role in pool["spec"]["roles"]}
    assert roles == {"controller", "broker"}
    brokers = sum(p["spec"]["replicas"] for p in pools if "broker" in p["spec"]["roles"])
    controllers = sum(p["spec"]["replicas"] for p in pools if "controller" in p["spec"]["roles"])
    assert brokers >= 3
    assert controllers % 2 == 1 and controllers >= 3, "an odd KRaft quorum that survives a loss"
    for doc in docs:
        if doc["apiVersion"].startswith("kafka.strimzi.io/") and doc["kind"] != "Kafka":
            assert doc["metadata"]["labels"]["strimzi.io/cluster"] == name, doc["metadata"]["name"]
    for topic in of_kind(docs, "KafkaTopic"):
        assert topic["spec"]["replicas"] <= brokers
    listeners = {entry["name"]: entry for entry in kafka["spec"]["kafka"]["listeners"]}
    assert listeners["scram"]["authentication"]["type"] == "scram-sha-512"
    for user in of_kind(docs, "KafkaUser"):
        assert user["spec"]["authentication"]["type"] == "scram-sha-512"


def test_kafka_topics_are_the_topics_the_bus_creates(
    docs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    (configmap,) = [
        c for c in of_kind(docs, "ConfigMap") if c["metadata"]["name"] == "databus-config"
    ]
    for var in list(os.environ):
        if var.startswith("DATABUS_"):
            monkeypatch.delenv(var)
    for var, value in configmap["data"].items():
        monkeypatch.setenv(var, str(value))
    settings = Settings()
    expected = {s.name: s for s in bus_topics(settings)}
    topics = {t["spec"]["topicName"]: t["spec"] for t in of_kind(docs, "KafkaTopic")}
    assert set(topics) == set(expected)
    for name, spec in topics.items():
        assert spec["partitions"] == expected[name].partitions
        assert spec["replicas"] == settings.kafka.replication_factor
        assert spec["config"] == expected[name].config()


def test_pod_monitor_scrapes_every_bus_pod_with_the_alerting_job_names(
    docs: list[dict[str, Any]],
) -> None:
    (monitor,) = of_kind(docs, "PodMonitor")
    (expression,) = monitor["spec"]["selector"]["matchExpressions"]
    port = monitor["spec"]["podMetricsEndpoints"][0]["port"]
    job_label = monitor["spec"]["jobLabel"]
    rules = (ROOT / "deploy/prometheus/rules/databus.rules.yml").read_text(encoding="utf-8")
    (job_regex,) = re.findall(r'up\{job=~"([^"]+)"\}', rules)
    not_alerting: set[str] = set()
    scraped = 0
    for doc, spec in pod_specs(docs):
        labels = pod_template(doc)["metadata"]["labels"]
        serves = any(
            is_bus(c) and any(p.get("name") == port for p in c.get("ports", []))
            for c in spec["containers"]
        )
        selected = labels.get(expression["key"]) in expression["values"]
        if doc["kind"] in {"Job", "CronJob"}:
            assert not selected
            continue
        assert selected == serves, doc["metadata"]["name"]
        if selected:
            scraped += 1
            job = labels[job_label]
            assert re.fullmatch(job_regex, job) or job in not_alerting, job
    assert scraped == 6


def test_prometheus_rule_holds_the_rules_file(docs: list[dict[str, Any]]) -> None:
    assert yaml is not None
    (rule,) = of_kind(docs, "PrometheusRule")
    rules = yaml.safe_load((ROOT / "deploy/prometheus/rules/databus.rules.yml").read_text())
    assert rule["spec"] == rules


def test_bus_containers_probe_livez_and_readyz_on_the_metrics_port(
    docs: list[dict[str, Any]],
) -> None:
    # bus.metrics.HealthServer serves both (tests/unit/bus/test_health_checks.py).
    probed = 0
    for doc, container in containers(docs):
        if not is_bus(container) or doc["kind"] != "Deployment":
            continue
        ports = {p["name"] for p in container["ports"]}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert probe in container, (doc["metadata"]["name"], probe)
        if doc["metadata"]["name"] in NO_HEALTH_SERVER:
            # No health server in the process: its own port accepting connections.
            assert container["livenessProbe"]["tcpSocket"] == {"port": "http"}
            assert container["readinessProbe"]["tcpSocket"] == {"port": "http"}
            assert "http" in ports
        else:
            assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "metrics"}
            assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
            assert container["startupProbe"]["httpGet"] == {"path": "/livez", "port": "metrics"}
            assert "metrics" in ports
        # A check may take its full deadline (3 s) before /readyz answers.
        assert container["readinessProbe"]["timeoutSeconds"] >= 4
        probed += 1
    assert probed == len(BUS_DEPLOYMENTS)


def test_every_bus_service_runs_with_its_command(docs: list[dict[str, Any]]) -> None:
    deployments = {d["metadata"]["name"]: d for d in of_kind(docs, "Deployment")}
    for name, args in BUS_DEPLOYMENTS.items():
        (container,) = pod_template(deployments[name])["spec"]["containers"]
        assert container["args"] == args, name
    (cronjob,) = of_kind(docs, "CronJob")
    (export,) = pod_template(cronjob)["spec"]["containers"]
    assert export["args"][:2] == ["opendata", "export"]
    assert "--every" not in export["args"] and "--scheduled" not in export["args"]
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"


def test_every_container_has_resources(docs: list[dict[str, Any]]) -> None:
    for doc, container in containers(docs):
        resources = container.get("resources", {})
        where = f"{doc['metadata']['name']}/{container['name']}"
        assert resources.get("requests", {}).get("cpu"), where
        assert resources.get("requests", {}).get("memory"), where
        assert resources.get("limits", {}).get("memory"), where


def test_every_long_running_workload_has_a_disruption_budget(docs: list[dict[str, Any]]) -> None:
    budgets = of_kind(docs, "PodDisruptionBudget")
    for doc in docs:
        if doc["kind"] != "Deployment":
            continue
        labels = pod_template(doc)["metadata"]["labels"]
        matching = [
            b for b in budgets if b["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]
        assert len(matching) == 1, doc["metadata"]["name"]
        (budget,) = matching
        replicas = doc["spec"]["replicas"]
        # A budget that allows no disruption at all would block every node drain.
        if "minAvailable" in budget["spec"]:
            assert budget["spec"]["minAvailable"] < replicas, doc["metadata"]["name"]
        else:
            assert budget["spec"]["maxUnavailable"] >= 1


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels, matchExpressions In/Exists) on labels."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        if operator == "In" and labels.get(key) not in expression["values"]:
            return False
        if operator == "Exists" and key not in labels:
            return False
        assert operator in {"In", "Exists"}, operator
    return True


def allowed(
    policies: list[dict[str, Any]],
    direction: str,
    pod: dict[str, str],
    peer: dict[str, str],
    port: int,
) -> bool:
    """Whether some policy selecting ``pod`` lets traffic of ``direction`` through to or
    from a pod of this namespace labelled ``peer`` on ``port``."""
    side = "to" if direction == "egress" else "from"
    for policy in policies:
        if not selects(policy["spec"]["podSelector"], pod):
            continue
        for rule in policy["spec"].get(direction, []):
            ports = [p["port"] for p in rule.get("ports", [])]
            if ports and port not in ports:
                continue
            peers = rule.get(side)
            if not peers:
                return True
            for entry in peers:
                in_namespace = "podSelector" in entry and "namespaceSelector" not in entry
                if in_namespace and selects(entry["podSelector"], peer):
                    return True
    return False


def test_network_policies_deny_by_default_and_allow_what_each_part_needs(
    docs: list[dict[str, Any]],
) -> None:
    policies = of_kind(docs, "NetworkPolicy")
    deny = [p for p in policies if p["spec"]["podSelector"] == {} and not p["spec"].get("ingress")]
    assert any(
        set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"} and not p["spec"].get("egress")
        for p in deny
    ), "a default-deny policy for both directions"
    pods = {
        d["metadata"]["name"]: pod_template(d)["metadata"]["labels"]
        for d in docs
        if d["kind"] in WORKLOADS
    }
    broker = {"strimzi.io/cluster": "databus", "strimzi.io/kind": "Kafka"}
    registry = pods["schema-registry"]
    for name, labels in pods.items():
        if name.startswith("databus-"):
            assert allowed(policies, "egress", labels, broker, 9092), name
            assert allowed(policies, "egress", labels, registry, 8081), name
            assert allowed(policies, "ingress", registry, labels, 8081), name
    assert allowed(policies, "egress", registry, broker, 9092)
    flows = [
        ("databus-sink-ioc", "redis", 6379),
        ("databus-sink-sql", "postgres", 5432),
        ("databus-opendata-export", "postgres", 5432),
    ]
    for client, server, port in flows:
        assert allowed(policies, "egress", pods[client], pods[server], port), (client, server)
        assert allowed(policies, "ingress", pods[server], pods[client], port), (client, server)
    # Nothing else reaches the stores.
    for name, labels in pods.items():
        if name not in {"databus-sink-ioc"}:
            assert not allowed(policies, "ingress", pods["redis"], labels, 6379), name
        if name not in {"databus-sink-sql", "databus-opendata-export"}:
            assert not allowed(policies, "ingress", pods["postgres"], labels, 5432), name
    # The plain listener admits exactly the pods of the bus (Strimzi writes that policy).
    (kafka,) = of_kind(docs, "Kafka")
    (plain,) = [x for x in kafka["spec"]["kafka"]["listeners"] if x["name"] == "plain"]
    for name, labels in pods.items():
        if name.startswith("databus-") or name == "schema-registry":
            assert any(selects(p["podSelector"], labels) for p in plain["networkPolicyPeers"])


def test_the_scrape_policy_admits_every_pod_the_pod_monitor_selects(
    docs: list[dict[str, Any]],
) -> None:
    (monitor,) = of_kind(docs, "PodMonitor")
    (selects,) = monitor["spec"]["selector"]["matchExpressions"]
    (policy,) = [
        d for d in of_kind(docs, "NetworkPolicy") if d["metadata"]["name"] == "allow-metrics-scrape"
    ]
    (admits,) = policy["spec"]["podSelector"]["matchExpressions"]
    assert admits["key"] == selects["key"]
    assert set(admits["values"]) == set(selects["values"])
