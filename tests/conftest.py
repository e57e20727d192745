"""Session fixtures: the real servers every integration test talks to.

The embedded broker and Redis start once per test session on free ports (or the
addresses in DATABUS_KAFKA__BOOTSTRAP_SERVERS / DATABUS_REDIS__URL are used as
they are). With a Docker engine and DATABUS_TEST_DOCKER=1, Kafka comes from
testcontainers instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest
import redis

from bus.local_stack import LocalStack
from bus.settings import Settings, load_settings


def _docker_kafka() -> Iterator[str | None]:
    """Kafka from testcontainers where a Docker engine exists and it is asked for."""
    if os.environ.get("DATABUS_TEST_DOCKER") != "1":
        yield None
        return
    from testcontainers.kafka import KafkaContainer

    with KafkaContainer().with_kraft() as kafka:
        yield kafka.get_bootstrap_server()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """The same local stack as `databus up`: embedded servers for every address the
    DATABUS_* variables leave empty, the configured servers otherwise."""
    docker = _docker_kafka()
    bootstrap = next(docker)
    overrides: dict[str, object] = {"data_dir": tmp_path_factory.mktemp("stack")}
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
    return {
        key: (kind, readers[kind](key), client.pttl(key) > 0)
        for key in sorted(client.scan_iter(count=1000))
        if (kind := client.type(key)) in readers
    }


@pytest.fixture(scope="session")
def redis_snapshot() -> Callable[[redis.Redis], dict[bytes, object]]:
    return _redis_content
