"""TLS and SASL against real servers, and the same exit code from every command.

The embedded Tansu broker speaks plain TCP only: a TLS terminator (``tests/tls_proxy``,
certificate from a ``trustme`` CA) sits in front of it, and the broker advertises the
terminator's port, so every connection librdkafka makes after bootstrap is TLS too.
SASL: Tansu answers the SASL handshake but this build cannot create users, so only the
refusal path is tested (a login the broker refuses → exit 3 naming user and mechanism).
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from confluent_kafka.schema_registry import Schema
from databus_cli import run_databus
from registry_clients import registry_client
from tls_proxy import TlsProxy

from bus.errors import BrokerAuthError
from bus.kafka_client import check_broker
from bus.settings import KafkaSettings, Settings, load_settings
from databus.local_stack import LocalStack, ManagedProcess, start_broker
from databus.standins.registry_server import RegistryServer

PASSWORD = "wrong-pass-never-shown"


@dataclass(frozen=True)
class TlsBroker:
    proxy: TlsProxy
    plain: str  # the broker's own (plain) listener
    data_dir: Path

    @property
    def tls_env(self) -> dict[str, str]:
        return {
            "DATABUS_KAFKA__BOOTSTRAP_SERVERS": self.proxy.bootstrap,
            "DATABUS_KAFKA__SECURITY_PROTOCOL": "SSL",
            "DATABUS_KAFKA__SSL_CA_LOCATION": str(self.proxy.ca_file),
        }

    def settings(self, **kafka: object) -> Settings:
        return load_settings(
            kafka={
                "bootstrap_servers": self.proxy.bootstrap,
                "security_protocol": "SSL",
                "ssl_ca_location": str(self.proxy.ca_file),
                **kafka,
            },
            data_dir=self.data_dir,
            redis={"url": "redis://127.0.0.1:1/0"},  # not used here; keeps LocalStack off it
        )


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    where = tmp_path_factory.mktemp("tls")
    proc: ManagedProcess | None = None
    with TlsProxy(trustme.CA(), where) as proxy:
        try:
            proc, plain = start_broker(where, advertised_port=proxy.port)
            proxy.start(int(plain.rsplit(":", 1)[1]))
            yield TlsBroker(proxy, plain, where)
        finally:
            if proc is not None:
                proc.stop()


def _err(done: subprocess.CompletedProcess[str]) -> str:
    """stderr as one line: the console wraps long messages."""
    return " ".join(done.stderr.split())


def _wait_for(condition: object, what: str, timeout: float = 30.0) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {timeout:.0f} s"


def test_publish_and_consume_through_tls_with_the_ca(tls_broker: TlsBroker) -> None:
    kafka = tls_broker.settings().kafka
    before = tls_broker.proxy.connections
    topic = f"tls-{uuid.uuid4().hex[:8]}"
    admin = AdminClient(kafka.client_config())
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(timeout=30)
    producer = Producer({**kafka.client_config(), "acks": "all"})
    sent = [f"record-{i}".encode() for i in range(5)]
    for value in sent:
        producer.produce(topic, value=value)
    assert producer.flush(30) == 0
    consumer = Consumer(
        {
            **kafka.client_config(),
            "group.id": f"tls-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])  # no group join to wait for
    got: list[bytes] = []

    def read_all() -> bool:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            got.append(message.value() or b"")
        return len(got) == len(sent)

    try:
        _wait_for(read_all, "every record read back through TLS")
    finally:
        consumer.close()
    assert got == sent
    assert tls_broker.proxy.connections > before  # the clients did go through TLS


def test_a_client_without_the_ca_exits_3_saying_tls_failed(tls_broker: TlsBroker) -> None:
    ok = run_databus(
        tls_broker.data_dir, "topics", "create", "--dry-run", timeout=60, **tls_broker.tls_env
    )
    assert ok.returncode == 0, ok.stderr
    env = {**tls_broker.tls_env}
    del env["DATABUS_KAFKA__SSL_CA_LOCATION"]  # the system CAs do not know the test CA
    refused = run_databus(tls_broker.data_dir, "topics", "create", "--dry-run", timeout=60, **env)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "TLS handshake" in _err(refused)
    assert "certificate verify failed" in _err(refused)
    assert "DATABUS_KAFKA__SSL_CA_LOCATION" in _err(refused)
    assert "Traceback" not in _err(refused)


def test_the_registry_keeps_its_schemas_in_kafka_over_tls(tls_broker: TlsBroker) -> None:
    topic = f"_schemas_tls_{uuid.uuid4().hex[:8]}"
    schema = Schema('{"type":"record","name":"T","fields":[{"name":"a","type":"int"}]}', "AVRO")
    settings = tls_broker.settings()
    # `databus up` against a TLS broker: the stack's registry uses the TLS settings
    with LocalStack(settings) as stack:
        assert stack.settings.schema_registry.url is not None
        client = registry_client(stack.settings.schema_registry.client_config())
        schema_id = client.register_schema("tls-value", schema)
    # a second registry on another topic, then one replaying the first's topic over TLS
    security = settings.kafka.security_config()
    with RegistryServer(tls_broker.proxy.bootstrap, topic=topic, security=security) as server:
        other = registry_client({"url": server.url}).register_schema("tls-value", schema)
        assert other >= 1
    with RegistryServer(tls_broker.proxy.bootstrap, security=security) as replayed:
        found = registry_client({"url": replayed.url}).get_latest_version("tls-value")
    assert found.schema_id == schema_id


def test_a_refused_sasl_login_names_user_and_mechanism(tls_broker: TlsBroker) -> None:
    kafka = KafkaSettings(
        bootstrap_servers=tls_broker.plain,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-256",
        sasl_username="bus-user",
        sasl_password=PASSWORD,  # type: ignore[arg-type]
    )
    with pytest.raises(BrokerAuthError) as caught:
        check_broker(kafka, timeout=10)
    text = str(caught.value)
    assert "'bus-user'" in text and "SCRAM-SHA-256" in text
    assert PASSWORD not in text


def _sasl_env(broker: TlsBroker) -> dict[str, str]:
    return {
        "DATABUS_KAFKA__BOOTSTRAP_SERVERS": broker.plain,
        "DATABUS_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "DATABUS_KAFKA__SASL_MECHANISM": "PLAIN",
        "DATABUS_KAFKA__SASL_USERNAME": "bus-user",
        "DATABUS_KAFKA__SASL_PASSWORD": PASSWORD,
        "DATABUS_SCHEMA_REGISTRY__URL": "http://127.0.0.1:1",
        "DATABUS_REDIS__URL": "redis://127.0.0.1:1/0",
    }


# every kind of command: one-shot readers and writers, long-running services; one of
# each kind in the default suite, the rest in `make test-slow`
_SLOW = pytest.mark.slow
_DAY = ("--day", "2025-07-01", "--count", "1")
DECLARE = ("declare", "--dataset", "health.facilities", "--unit", "u", *_DAY)
COMMANDS = [
    pytest.param(("topics", "create", "--dry-run"), id="topics"),
    pytest.param(("status",), id="status", marks=_SLOW),
    pytest.param(("dlq", "list", "--dataset", "health.facilities"), id="dlq", marks=_SLOW),
    # a valid file (`databus template` writes one): a bad file is exit 2 before any broker
    pytest.param(
        ("publish", "health.facilities.csv", "--dataset", "health.facilities"), id="publish"
    ),
    pytest.param(
        DECLARE,
        id="declare",
        marks=_SLOW,
    ),
    pytest.param(
        ("reconcile", "--from", "2025-07-01", "--to", "2025-07-01"), id="reconcile", marks=_SLOW
    ),
    pytest.param(("catalog", "status"), id="catalog", marks=_SLOW),
    pytest.param(("sink", "ioc"), id="sink"),
    pytest.param(("process",), id="process", marks=_SLOW),
    pytest.param(("share",), id="share", marks=_SLOW),
]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_exits_3_on_a_refused_login(
    tls_broker: TlsBroker, command: tuple[str, ...]
) -> None:
    if command[0] == "publish":
        made = run_databus(
            tls_broker.data_dir,
            "template",
            "--dataset",
            "health.facilities",
            "-o",
            "health.facilities.csv",
        )
        assert made.returncode == 0, made.stdout + made.stderr
    done = run_databus(tls_broker.data_dir, *command, timeout=60, **_sasl_env(tls_broker))
    assert done.returncode == 3, done.stdout + done.stderr
    assert "authentication to the broker" in _err(done)
    assert "'bus-user'" in _err(done) and "PLAIN" in _err(done)
    assert PASSWORD not in done.stdout + done.stderr
    assert "Traceback" not in _err(done)


def test_up_against_a_broker_that_refuses_the_login_exits_3(tls_broker: TlsBroker) -> None:
    env = _sasl_env(tls_broker)
    del env["DATABUS_SCHEMA_REGISTRY__URL"]  # the stack starts the registry on that broker
    # `up` stops at start-up, before anything runs: no time window to pass
    done = run_databus(tls_broker.data_dir, "up", timeout=90, **env)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "'bus-user'" in _err(done) and "PLAIN" in _err(done)
    assert PASSWORD not in done.stdout + done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_exits_3_when_the_broker_is_unreachable(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    env = {
        "DATABUS_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "DATABUS_SCHEMA_REGISTRY__URL": "http://127.0.0.1:1",
        "DATABUS_REDIS__URL": "redis://127.0.0.1:1/0",
    }
    if command[0] == "publish":
        made = run_databus(tmp_path, "template", "--dataset", "health.facilities")
        assert made.returncode == 0, made.stderr
    done = run_databus(tmp_path, *command, timeout=60, **env)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "cannot reach the broker at 127.0.0.1:1" in _err(done)
    assert "Traceback" not in _err(done)


def test_an_unreachable_broker_exits_3(tmp_path: Path) -> None:
    env = {"DATABUS_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    done = run_databus(tmp_path, "topics", "create", "--dry-run", timeout=60, **env)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "cannot reach the broker at 127.0.0.1:1" in _err(done)


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("DATABUS_KAFKA__SECURITY_PROTOCOL", "SASL_SSL", "DATABUS_KAFKA__SASL_MECHANISM"),
        ("DATABUS_KAFKA__SSL_CA_LOCATION", "/nowhere/ca.pem", "DATABUS_KAFKA__SSL_CA_LOCATION"),
    ],
)
def test_an_impossible_combination_exits_2_naming_the_variable(
    tmp_path: Path, variable: str, value: str, named: str
) -> None:
    env = {"DATABUS_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1", variable: value}
    if variable.endswith("CA_LOCATION"):
        env["DATABUS_KAFKA__SECURITY_PROTOCOL"] = "SSL"
    for command in (("topics", "create", "--dry-run"), ("up",)):
        done = run_databus(tmp_path, *command, timeout=60, **env)
        assert done.returncode == 2, done.stdout + done.stderr
        assert named in _err(done)


@pytest.mark.parametrize("client", ["faust", "status"])
def test_the_aiokafka_clients_go_through_tls_with_the_ca(
    tls_broker: TlsBroker, client: str
) -> None:
    """Faust's worker (its credentials as Faust hands them to aiokafka) and `databus
    status`'s aiokafka admin client take the same TLS settings as the others."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    from bus.kafka_client import aiokafka_options
    from stream_processors.faust_auth import faust_credentials

    kafka = tls_broker.settings().kafka
    options = (
        dict(credentials_to_aiokafka_auth(faust_credentials(kafka)))
        if client == "faust"
        else aiokafka_options(kafka)
    )
    topic = f"tls-aio-{uuid.uuid4().hex[:8]}"
    admin = AdminClient(kafka.client_config())  # kept alive until the topic is created
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)

    async def round_trip() -> list[bytes]:
        producer = AIOKafkaProducer(bootstrap_servers=tls_broker.proxy.bootstrap, **options)
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"over-tls")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=tls_broker.proxy.bootstrap,
            auto_offset_reset="earliest",
            **options,
        )
        await consumer.start()
        try:
            batch = await consumer.getmany(timeout_ms=30_000, max_records=1)
        finally:
            await consumer.stop()
        return [m.value or b"" for records in batch.values() for m in records]

    assert asyncio.run(round_trip()) == [b"over-tls"]
