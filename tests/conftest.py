"""Session fixtures: the real servers every integration test talks to.

The embedded broker and Redis start once per test session on free ports (or the
addresses in DATABUS_KAFKA__BOOTSTRAP_SERVERS / DATABUS_REDIS__URL are used as
they are). With a Docker engine and DATABUS_TEST_DOCKER=1, Kafka comes from
testcontainers instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from bus.local_stack import start_broker, start_redis


@pytest.fixture(scope="session")
def stack_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stack")


def _docker_kafka() -> Iterator[str] | None:
    if os.environ.get("DATABUS_TEST_DOCKER") != "1":
        return None
    try:
        from testcontainers.kafka import KafkaContainer
    except ImportError:
        return None

    def run() -> Iterator[str]:
        with KafkaContainer().with_kraft() as kafka:
            yield kafka.get_bootstrap_server()

    return run()


@pytest.fixture(scope="session")
def kafka_bootstrap(stack_dir: Path) -> Iterator[str]:
    given = os.environ.get("DATABUS_KAFKA__BOOTSTRAP_SERVERS")
    if given:
        yield given
        return
    docker = _docker_kafka()
    if docker is not None:
        yield from docker
        return
    proc, bootstrap = start_broker(stack_dir)
    try:
        yield bootstrap
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def redis_url(stack_dir: Path) -> Iterator[str]:
    given = os.environ.get("DATABUS_REDIS__URL")
    if given:
        yield given
        return
    proc, url = start_redis(stack_dir)
    try:
        yield url
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def registry_url(kafka_bootstrap: str) -> Iterator[str]:
    given = os.environ.get("DATABUS_SCHEMA_REGISTRY__URL")
    if given:
        yield given
        return
    from schemas.registry_server import RegistryServer

    server = RegistryServer(kafka_bootstrap)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


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
