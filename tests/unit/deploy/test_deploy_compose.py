"""deploy/compose.yaml: parses, its references resolve, and every DATABUS_* variable it
sets is a real setting whose value the bus accepts. Pure parsing: no Docker needed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_names import directly_read_env_names, resolves_to_cli_command, setting_env_names

from bus.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"

BUS_SERVICES = {
    "init",
    "processor",
    "sink-ioc",
    "sink-sql",
    "sink-health",
    "share",
    "api",
    "opendata",
    "simulator",
}
# `databus ARGS` of each long-running bus service (the same as deploy/k8s).
COMMANDS = {
    "processor": ["process"],
    "sink-ioc": ["sink", "ioc"],
    "sink-sql": ["sink", "sql"],
    "sink-health": ["sink", "health"],
    "share": ["share"],
    "api": ["api"],
    "opendata": ["opendata", "export", "--scheduled"],
}
# Processes that serve no /readyz (deploy/README.md, "Probes").
NO_HEALTH_SERVER: set[str] = set()
INFRA = {"kafka-1", "kafka-2", "kafka-3", "schema-registry", "redis", "postgres"}
MONITORING = {"prometheus", "alertmanager", "grafana"}
# `${NAME:?message}`, `${NAME:-default}`, `${NAME-default}`, `${NAME}`
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
SECRET_WORDS = ("PASSWORD", "SECRET", "PSEUDONYM_KEY")


def sample_value(name: str) -> str:
    if name.endswith("TOKEN_URL"):
        return "https://health-axis.example.invalid/fhir/token"
    if "__SYSTEMS__" in name:  # the ministry's FHIR identifier systems
        return f"https://identifiers.example.invalid/{name.rsplit('__', 1)[1].lower()}"
    if name.endswith("URL"):
        return "https://health-axis.example.invalid/fhir"
    if name == "PROCESSOR_REPLICAS":
        return "3"
    return "0123456789abcdef0123456789abcdef"  # hex, as deploy/.env.example advises


def interpolate(text: str) -> str:
    """What compose substitutes, with sample values for what deploy/.env would hold."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        if op in (":-", "-"):
            return arg
        return sample_value(name)

    return INTERPOLATION.sub(one, text.replace("$$", "\0")).replace("\0", "$")


def dockerfile_env() -> dict[str, str]:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            env.update(dict(re.findall(r"([A-Z0-9_]+)=(\S+)", line)))
    return env


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    assert yaml is not None
    doc = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


# --- text checks (no YAML parser needed) -------------------------------------------------


def test_every_databus_variable_is_a_real_setting() -> None:
    known = setting_env_names() | directly_read_env_names()
    for path in (COMPOSE, DEPLOY / ".env.example", DEPLOY / "Dockerfile"):
        used = set(re.findall(r"\bDATABUS_[A-Z0-9_]*[A-Z0-9]", path.read_text(encoding="utf-8")))
        assert used, path
        assert used <= known, f"{path.name}: not settings: {sorted(used - known)}"


def test_settings_walk_finds_nested_fields() -> None:
    names = setting_env_names()
    assert "DATABUS_KAFKA__BOOTSTRAP_SERVERS" in names
    assert "DATABUS_HEALTH_AXIS__CLIENT_SECRET" in names
    assert "DATABUS_PROCESSOR_BATCH_SIZE" in names
    assert "DATABUS_KAFKA" not in names


def test_secrets_are_required_interpolations_never_values() -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    for match in INTERPOLATION.finditer(text):
        name, op = match.group(1), match.group(2)
        if any(word in name for word in SECRET_WORDS):
            assert op == ":?", f"${{{name}}} must be required (:?), never defaulted"
    # A secret-looking key is set from an interpolation, never from a literal.
    for key, value in re.findall(r"^\s+([A-Z0-9_]+):\s*(.+)$", text, flags=re.MULTILINE):
        if any(word in key for word in SECRET_WORDS):
            assert "${" in value, f"{key} has a literal value in compose.yaml"


def test_env_example_lists_every_required_variable() -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    required = {m.group(1) for m in INTERPOLATION.finditer(text) if m.group(2) == ":?"}
    example = (DEPLOY / ".env.example").read_text(encoding="utf-8")
    listed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", example, flags=re.MULTILINE))
    assert required <= listed, sorted(required - listed)
    # Only placeholders: no value after the = of a secret.
    for line in example.splitlines():
        name, _, value = line.partition("=")
        if not line.startswith("#") and any(word in name for word in SECRET_WORDS):
            assert value == "", f"{name} has a value in .env.example"


def test_filled_in_files_are_ignored() -> None:
    ignored = (DEPLOY / ".gitignore").read_text(encoding="utf-8").split()
    assert ".env" in ignored
    assert "secrets/" in ignored


def test_dockerfile_installs_the_project_on_python_slim() -> None:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.1[1-9]-slim", text, flags=re.MULTILINE)
    assert "pip wheel" in text and "pip install" in text
    assert re.search(r"^USER (?!root)", text, flags=re.MULTILINE), "run as a non-root user"
    assert dockerfile_env()["DATABUS_METRICS__HOST"] == "0.0.0.0"
    for copied in re.findall(r"^COPY (?!--)(\S+)", text, flags=re.MULTILINE):
        assert (ROOT / copied).exists(), copied
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8")
    for package in ("bus", "databus", "schemas", "producers", "stream_processors", "sinks"):
        assert f"!{package}/**" in ignore


# --- structure -------------------------------------------------------------------------


def test_the_stack_has_every_part(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) >= INFRA | MONITORING | BUS_SERVICES


def test_kafka_is_three_kraft_brokers_with_rf3_and_min_isr2(
    services: dict[str, dict[str, Any]],
) -> None:
    brokers = {name: s for name, s in services.items() if name.startswith("kafka-")}
    assert len(brokers) == 3
    node_ids = set()
    for name, service in brokers.items():
        assert service["image"].startswith("apache/kafka:")
        env = service["environment"]
        node_ids.add(env["KAFKA_NODE_ID"])
        assert "controller" in env["KAFKA_PROCESS_ROLES"]
        voters = dict(v.split("@") for v in env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(","))
        assert voters == {"1": "kafka-1:9093", "2": "kafka-2:9093", "3": "kafka-3:9093"}
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
        assert f"INTERNAL://{name}:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
        assert "healthcheck" in service
    assert node_ids == {"1", "2", "3"}


def test_depends_on_targets_exist_and_can_meet_their_condition(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        for target, spec in (service.get("depends_on") or {}).items():
            assert target in services, f"{name} depends on unknown {target}"
            condition = spec["condition"]
            other = services[target]
            if condition == "service_healthy":
                check = other.get("healthcheck") or {}
                assert check.get("test") and not check.get("disable"), f"{target}: no healthcheck"
            elif condition == "service_completed_successfully":
                assert other.get("restart") == "no", f"{target} must be a one-shot"
            else:
                assert condition == "service_started"


def test_bus_services_build_from_the_dockerfile(services: dict[str, dict[str, Any]]) -> None:
    for name in BUS_SERVICES:
        build = services[name]["build"]
        assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == (
            DEPLOY / "Dockerfile"
        )
    replicas = services["processor"]["deploy"]["replicas"]
    assert INTERPOLATION.fullmatch(str(replicas)), "processor replicas come from the env"
    assert int(interpolate(str(replicas))) >= 2


def test_bus_commands_are_real_cli_commands(services: dict[str, dict[str, Any]]) -> None:
    init = " ".join(services["init"]["command"])
    for argv in re.findall(r"\bdatabus ((?:[a-z][a-z-]* ?)+)", init):
        assert resolves_to_cli_command(argv.split()), argv
    assert "ensure_topics" in init and "bus_topics" in init
    missing = []
    for name in BUS_SERVICES - {"init"}:
        if not resolves_to_cli_command(services[name]["command"]):
            missing.append(tuple(services[name]["command"][:2]))
    assert not missing, f"not databus commands: {missing}"


@pytest.mark.parametrize("name", sorted(BUS_SERVICES))
def test_bus_service_environment_is_accepted_by_the_settings(
    name: str, services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    for var in list(os.environ):
        if var.startswith("DATABUS_"):
            monkeypatch.delenv(var)
    env = {**dockerfile_env(), **services[name]["environment"]}
    for var, value in env.items():
        if var.startswith("DATABUS_"):
            monkeypatch.setenv(var, interpolate(str(value)))
    settings = Settings()
    assert settings.kafka.bootstrap_servers == "kafka-1:9092,kafka-2:9092,kafka-3:9092"
    assert settings.kafka.replication_factor == 3
    assert settings.schema_registry.url == "http://schema-registry:8081"
    assert settings.metrics.port == 9100
    if name == "sink-health":
        assert settings.health_axis.url is not None
    if name in {"sink-sql", "opendata"}:
        assert settings.shared_repo.url is not None
        assert settings.shared_repo.url.get_secret_value().startswith("postgresql+psycopg://")
    if name in {"share", "api"}:
        assert settings.access.policy_file is not None
        secret = settings.access.policy_file.name
        assert str(settings.access.policy_file) == f"/run/secrets/{secret}"
        assert secret in services[name]["secrets"]
    if name == "share":
        assert settings.access.pseudonym_key is not None
    if name == "api":
        assert settings.access.api_host == "0.0.0.0"
        published = [p.rsplit(":", 1)[1] for p in services[name]["ports"]]
        assert str(settings.access.api_port) in published


def test_every_long_running_bus_process_is_a_service(services: dict[str, dict[str, Any]]) -> None:
    for name, argv in COMMANDS.items():
        assert services[name]["command"] == argv, name


def test_each_sink_has_its_own_consumer_group(services: dict[str, dict[str, Any]]) -> None:
    groups = [services[s]["environment"]["DATABUS_SINK_GROUP"] for s in services if "sink-" in s]
    assert len(groups) == len(set(groups)) == 3


def test_bind_mounts_and_secret_files_point_into_deploy(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    mounts = {}
    for service in services.values():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith("."):
                assert (DEPLOY / source).is_dir(), source
                mounts[target] = DEPLOY / source
            else:
                assert source in compose["volumes"], source
    assert (mounts["/etc/prometheus"] / "prometheus.yml").is_file()
    assert (mounts["/etc/alertmanager"] / "alertmanager.yml").is_file()
    assert list((mounts["/var/lib/grafana/dashboards"]).glob("*.json"))
    assert (mounts["/etc/grafana/provisioning"] / "datasources").is_dir()
    for secret in compose["secrets"].values():
        assert secret["file"].startswith("./secrets/"), "kept in the git-ignored deploy/secrets"
    for service in services.values():
        for secret in service.get("secrets", []):
            assert secret in compose["secrets"]


def test_prometheus_scrapes_the_compose_services_on_the_metrics_port(
    services: dict[str, dict[str, Any]],
) -> None:
    assert yaml is not None
    config = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text(encoding="utf-8"))
    port = int(dockerfile_env()["DATABUS_METRICS__PORT"])
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    scraped = set()
    for job in jobs.values():
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, _, target_port = target.rpartition(":")
                if host != "localhost":
                    assert host in services, f"{job['job_name']}: {host} is no compose service"
                    scraped.add(host)
                    if host in BUS_SERVICES:
                        assert int(target_port) == port
        for sd in job.get("dns_sd_configs", []):
            assert sd["port"] == port
            for host in sd["names"]:
                assert host in services
                scraped.add(host)
    assert {"processor", "sink-ioc", "sink-sql", "sink-health"} <= scraped
    alerting = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert alerting == ["alertmanager:9093"]


def test_grafana_provisioning_points_at_the_mounted_dashboards(
    services: dict[str, dict[str, Any]],
) -> None:
    assert yaml is not None
    providers = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/dashboards/databus.yaml").read_text(encoding="utf-8")
    )["providers"]
    targets = [v.split(":")[1] for v in services["grafana"]["volumes"]]
    assert providers[0]["options"]["path"] in targets
    datasources = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/databus.yaml").read_text(encoding="utf-8")
    )["datasources"]
    assert datasources[0]["url"] == "http://prometheus:9090"


def test_bus_services_report_healthy_only_when_ready(
    services: dict[str, dict[str, Any]],
) -> None:
    port = dockerfile_env()["DATABUS_METRICS__PORT"]
    for name in BUS_SERVICES - {"init"} - NO_HEALTH_SERVER:
        test = " ".join(services[name]["healthcheck"]["test"])
        assert f"http://127.0.0.1:{port}/readyz" in test, name
    for name in NO_HEALTH_SERVER:
        test = " ".join(services[name]["healthcheck"]["test"])
        api_port = services[name]["environment"]["DATABUS_ACCESS__API_PORT"]
        assert f"create_connection(('127.0.0.1', {api_port})" in test, name
