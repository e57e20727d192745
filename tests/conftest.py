"""Session fixtures: the real servers every integration test talks to.

The embedded broker and Redis start once per test session on free ports (or the
addresses in DATABUS_KAFKA__BOOTSTRAP_SERVERS / DATABUS_REDIS__URL are used as
they are). With a Docker engine and DATABUS_TEST_DOCKER=1, Kafka comes from
testcontainers instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator

import pytest
import redis
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from registry_clients import close_all

from bus import tracing
from bus.settings import Settings, load_settings
from databus.local_stack import LocalStack

# A process that fails exits at once in the tests: no Prometheus will scrape it.
os.environ.setdefault("DATABUS_METRICS__FINAL_SCRAPE_S", "0")
# A pytest-xdist worker (make test) starts with COLUMNS=80 and LINES=24 in its
# environment. The CLI's consoles, created when a test module imports them, would fix
# that width for good, and a test that sets COLUMNS for a wide table would not get it.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _name in ("COLUMNS", "LINES"):
        os.environ.pop(_name, None)


def _docker_kafka() -> Generator[str | None]:
    """Kafka from testcontainers where a Docker engine exists and it is asked for."""
    if os.environ.get("DATABUS_TEST_DOCKER") != "1":
        yield None
        return
    from testcontainers.kafka import KafkaContainer

    with KafkaContainer().with_kraft() as kafka:
        yield kafka.get_bootstrap_server()


@pytest.fixture(scope="session", autouse=True)
def _registry_clients_closed() -> Iterator[None]:
    """The registry clients tests share (tests/registry_clients.py) close at the end."""
    yield
    close_all()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """The same local stack as `databus up`: embedded servers for every address the
    DATABUS_* variables leave empty, the configured servers otherwise."""
    docker = _docker_kafka()
    bootstrap = next(docker)
    overrides: dict[str, object] = {
        "data_dir": tmp_path_factory.mktemp("stack"),
        # memory storage: faster one-at-a-time writes (tests/stack_storage.py)
        "supervise": {"embedded_broker_storage": "memory"},
    }
    if bootstrap is not None:
        overrides["kafka"] = {"bootstrap_servers": bootstrap}
    try:
        with LocalStack(load_settings(**overrides)) as local:
            yield local
    finally:
        docker.close()


@pytest.fixture(scope="session")
def stack_settings(stack: LocalStack) -> Settings:
    return stack.settings


@pytest.fixture(scope="session")
def kafka_bootstrap(stack_settings: Settings) -> str:
    assert stack_settings.kafka.bootstrap_servers is not None
    return stack_settings.kafka.bootstrap_servers


@pytest.fixture(scope="session")
def redis_url(stack_settings: Settings) -> str:
    assert stack_settings.redis.url is not None
    return stack_settings.redis.url


@pytest.fixture(scope="session")
def registry_url(stack_settings: Settings) -> str:
    assert stack_settings.schema_registry.url is not None
    return stack_settings.schema_registry.url


_STORE_ID_KEY = b"ioc:{offsets}:store"


def _redis_content(client: redis.Redis) -> dict[bytes, object]:
    """Every key's logical content. DUMP bytes are not stable: a hash's internal
    order changes with incremental rehashing even when nothing was written."""
    readers: dict[bytes, Callable[[bytes], object]] = {
        b"string": client.get,
        b"hash": client.hgetall,
        b"set": client.smembers,
        b"zset": lambda k: client.zrange(k, 0, -1, withscores=True),
        b"list": lambda k: client.lrange(k, 0, -1),
        b"stream": lambda k: client.xrange(k),
    }
    content: dict[bytes, object] = {
        key: (kind, readers[kind](key), client.pttl(key) > 0)
        for key in sorted(client.scan_iter(count=1000))
        if (kind := client.type(key)) in readers
    }
    # the IOC store's identity is random per store: compare that it is there
    if _STORE_ID_KEY in content:
        content[_STORE_ID_KEY] = "present"
    return content


@pytest.fixture(scope="session")
def redis_snapshot() -> Callable[[redis.Redis], dict[bytes, object]]:
    return _redis_content


_MACHINE_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _postgres_answers(url: str) -> str | None:
    """None when ``url`` accepts a connection, else why not."""
    import sqlalchemy as sa

    engine = sa.create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return None
    except sa.exc.DBAPIError as exc:
        return type(exc.orig).__name__  # the message may carry the URL
    except sa.exc.SQLAlchemyError as exc:
        return type(exc).__name__
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real PostgreSQL (SQLAlchemy URL, psycopg 3): DATABUS_TEST_POSTGRES_URL, else the
    machine's server on 127.0.0.1:5432 (trust auth, database `test`), else one started
    from the binaries of the `pgserver` package. Tests isolate themselves by table or
    schema name, since the database may be shared."""
    configured = os.environ.get("DATABUS_TEST_POSTGRES_URL")
    if configured:
        yield configured
        return
    machine = _postgres_answers(_MACHINE_POSTGRES)
    if machine is None:
        yield _MACHINE_POSTGRES
        return
    try:
        from pgserver.postgres_server import get_server

        server = get_server(tmp_path_factory.mktemp("pgdata"), cleanup_mode="stop")
    except Exception as exc:  # pgserver missing, no binaries for this platform, initdb failed
        pytest.skip(f"no PostgreSQL: none at 127.0.0.1:5432 ({machine}) and pgserver failed: {exc}")
    try:
        uri = server.get_uri()
        yield uri.replace("postgresql://", "postgresql+psycopg://", 1)
    finally:
        server.cleanup()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Every span the bus records during the test, in memory (bus.tracing's provider)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    try:
        yield exporter
    finally:
        tracing.use(None)
        provider.shutdown()
