"""The sink contract (``tests/sink_contract.py``) run against every sink, each on its
real destination: the IOC store on a Redis server of its own (stopped and started
again for the outage case), the health axis on the loopback FHIR receiver, the shared
repository on SQLite and on PostgreSQL.

The sink dead-letter producer (:class:`sinks.sink_dlq.SinkDeadLetters`) is no
:class:`~sinks.base.Sink` (it has no ``write``; it is what the runner sends the
refused records to), so it is not run here; ``tests/unit/sinks/test_sink_dlq.py``
and the runner tests cover it.
"""

from __future__ import annotations

import copy
import json
import sqlite3
import uuid
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from pg_backends import terminate_backends
from pydantic import SecretStr
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry
from sink_contract import Held, SinkContract, fresh_entities
from std_samples import sink_records

from bus.settings import HealthAxisSettings
from databus.local_stack import ManagedProcess, free_port, redis_binary
from databus.standins.health_receiver import HealthReceiver
from schemas.catalog import get_dataset
from sinks.base import Sink, SinkRecord
from sinks.fhir import entity_key as fhir_entity_key
from sinks.fhir import stored_order
from sinks.health_axis import HealthAxisSink
from sinks.ioc.entities import entity_key as ioc_entity_key
from sinks.ioc.store import IocStoreSink
from sinks.shared_repo import SharedRepoSink, create_repo_engine

pytestmark = pytest.mark.integration

Snapshot = Callable[[redis.Redis], dict[bytes, object]]


def _state(event: dict[str, Any]) -> dict[str, Any]:
    state: dict[str, Any] | None = event["after"] if event["op"] != "d" else event["before"]
    assert state is not None
    return state


def _foreign(dataset_id: str, offset: int, *, rename: str | None = None) -> SinkRecord:
    """A std event of ``dataset_id`` (named ``rename`` when given: a dataset no
    catalog has), on its own topic."""
    (event,) = fresh_entities(dataset_id, 1)
    if rename is None:
        return sink_records(dataset_id, [event], first_offset=offset)[0]
    value = copy.deepcopy(event)
    value["source"]["dataset"] = rename
    return SinkRecord(f"{rename}.std.v1", 0, offset, None, value)


# ---- the IOC store on a Redis of its own ------------------------------------------------


class RedisServer:
    """A ``redis-server`` (the project's binary) on a fixed port, with the append-only
    file fsync'd on every write, so a stop and a start keep every key."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.dir = tmp / "redis"
        self.dir.mkdir()
        self.log = tmp / "redis.log"
        self.proc: ManagedProcess | None = None

    def start(self) -> None:
        argv = [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.dir)]
        self.proc = ManagedProcess("redis (sink contract)", argv, self.log)
        probe = redis.Redis(
            port=self.port,
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.01), 200),
            retry_on_error=[redis.exceptions.ConnectionError, redis.exceptions.BusyLoadingError],
        )
        try:
            probe.ping()  # the client's retries wait for the port
        finally:
            probe.close()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("contract-redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


class IocHarness:
    dataset_id = "education.schools"

    def __init__(self, server: RedisServer, client: redis.Redis, snapshot: Snapshot) -> None:
        self._server = server
        self._client = client
        self._snapshot = snapshot
        self.sinks: list[Sink] = []

    def build(self) -> Sink:
        sink = IocStoreSink(self._client)
        sink.setup()
        self.sinks.append(sink)
        return sink

    def _key(self, event: dict[str, Any]) -> str:
        state = _state(event)
        return ioc_entity_key(self.dataset_id, get_dataset(self.dataset_id).key_of(state), state)

    def held(self, event: dict[str, Any]) -> Held | None:
        key = self._key(event)
        if self._client.type(key) != b"hash":
            return None
        stored: dict[bytes, bytes] = self._client.hgetall(key)  # type: ignore[assignment]
        return Held(int(stored[b"_version"]), stored[b"_event_id"].decode(), stored[b"_op"] == b"d")

    def snapshot(self) -> object:
        return self._snapshot(self._client)

    @contextmanager
    def outage(self) -> Iterator[None]:
        self._server.stop()
        try:
            yield
        finally:
            self._server.start()
            # Redis 7 keeps no scripts across a restart; Redis 6 replays SCRIPT LOAD
            # from the AOF: make this one forget them too, as the sink must cope
            self._client.script_flush()

    def refuse(self, event: dict[str, Any]) -> tuple[dict[str, Any], str]:
        # a key of the wrong type where the entity's hash goes: Redis refuses the
        # script (WRONGTYPE) however often it is sent
        self._client.set(self._key(event), "not a hash")
        return event, "redis_rejected"

    def foreign(self, offset: int) -> SinkRecord:
        # every catalog dataset is the store's: only one no catalog has is foreign
        return _foreign(self.dataset_id, offset, rename="no.such.dataset")


# ---- the health axis on the loopback FHIR receiver ----------------------------------------

SECRET = "contract-receiver-secret"
PSEUDONYM_KEY = "pseudonym-key-for-the-contract-tests"


class HealthHarness:
    dataset_id = "health.encounters"

    def __init__(self, receiver: HealthReceiver) -> None:
        self._receiver = receiver
        self.sinks: list[Sink] = []

    def build(self) -> Sink:
        settings = HealthAxisSettings(
            url=self._receiver.url,
            client_secret=SecretStr(SECRET),
            pseudonym_key=SecretStr(PSEUDONYM_KEY),
            rate_per_s=1000,
            timeout_s=5,
        )
        sink = HealthAxisSink(settings)
        sink.setup()
        self.sinks.append(sink)
        return sink

    def held(self, event: dict[str, Any]) -> Held | None:
        rtype, ident = fhir_entity_key(event)
        system, _, value = ident.partition("|")
        found = self._receiver.find(rtype, system, value)
        if not found:
            return None
        (resource,) = found
        order = stored_order(resource)
        assert order is not None
        return Held(order[0], order[1], resource.get("status") == "entered-in-error")

    def snapshot(self) -> object:
        return sorted(
            json.dumps(r, sort_keys=True) for r in self._receiver.resources()
        ), self._receiver.stats()["resources"]

    @contextmanager
    def outage(self) -> Iterator[None]:
        self._receiver.stop()
        try:
            yield
        finally:
            self._receiver.start()  # on the same address, its resources kept

    def refuse(self, event: dict[str, Any]) -> tuple[dict[str, Any], str]:
        self._receiver.reject({str(_state(event)["encounter_id"])}, status=422)
        return event, "http_4xx"

    def foreign(self, offset: int) -> SinkRecord:
        return _foreign("education.schools", offset)


# ---- the shared repository on SQLite and PostgreSQL -------------------------------------


class SqlHarness:
    dataset_id = "education.schools"

    def __init__(
        self,
        engine: sa.Engine,
        db_schema: str | None,
        outage: Callable[[], Any],
    ) -> None:
        self._engine = engine
        self._db_schema = db_schema
        self._outage = outage
        self.sinks: list[Sink] = []
        self._repo: SharedRepoSink | None = None

    def build(self) -> Sink:
        sink = SharedRepoSink(
            self._engine, db_schema=self._db_schema, datasets=[get_dataset(self.dataset_id)]
        )
        sink.setup()
        self._repo = sink
        self.sinks.append(sink)
        return sink

    def _tables(self) -> tuple[sa.Table, sa.Table]:
        assert self._repo is not None
        return self._repo.tables(self.dataset_id)

    def held(self, event: dict[str, Any]) -> Held | None:
        current, _ = self._tables()
        state = _state(event)
        where = [current.c[k] == state[k] for k in get_dataset(self.dataset_id).key_fields]
        query = sa.select(current.c._version, current.c._event_id, current.c._deleted)
        with self._engine.connect() as conn:
            rows = conn.execute(query.where(*where)).all()
        if not rows:
            return None
        ((version, event_id, is_deleted),) = rows
        return Held(int(version), str(event_id), bool(is_deleted))

    def snapshot(self) -> object:
        current, history = self._tables()
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(current)).mappings().all()
            ids = sorted(str(i) for i in conn.scalars(sa.select(history.c._event_id)))
        return sorted(
            repr(sorted((k, v) for k, v in row.items() if k != "_updated_at")) for row in rows
        ), ids

    def outage(self) -> Any:
        return self._outage()

    def refuse(self, event: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """A rule the database enforces on the history table: this entity is refused."""
        _, history = self._tables()
        (key_field,) = get_dataset(self.dataset_id).key_fields
        value = str(_state(event)[key_field]).replace("'", "''")
        with self._engine.begin() as conn:
            table = conn.dialect.identifier_preparer.format_table(history)
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql(
                    f"ALTER TABLE {table} ADD CONSTRAINT ck_contract_refused "
                    f"CHECK ({key_field} <> '{value}')"
                )
            else:  # SQLite cannot add a CHECK to a table; a trigger aborts the same way
                conn.exec_driver_sql(
                    f"CREATE TRIGGER ck_contract_refused BEFORE INSERT ON {table} "
                    f"WHEN NEW.{key_field} = '{value}' "
                    "BEGIN SELECT RAISE(ABORT, 'ck_contract_refused'); END"
                )
        return event, "db_rejected"

    def foreign(self, offset: int) -> SinkRecord:
        return _foreign("feedback.reports", offset)  # a catalog dataset this sink does not own


def _sqlite_harness(tmp_path: Path) -> Generator[SqlHarness]:
    path = tmp_path / "repo.db"
    # a short busy timeout: a locked database fails the write at once, retriably
    engine = create_repo_engine(f"sqlite:///{path}", connect_args={"timeout": 0.2})

    @contextmanager
    def locked() -> Iterator[None]:
        """Another writer holds the database's write lock."""
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN EXCLUSIVE")
            yield
            other.execute("ROLLBACK")
        finally:
            other.close()

    try:
        yield SqlHarness(engine, None, locked)
    finally:
        engine.dispose()


def _postgres_harness(url: str) -> Generator[SqlHarness]:
    app_name = f"databus-contract-{uuid.uuid4().hex[:12]}"
    schema = f"t_contract_{uuid.uuid4().hex[:10]}"
    engine = create_repo_engine(url, connect_args={"application_name": app_name})

    def kill_inserts(_conn: sa.Connection, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT"):
            terminate_backends(url, app_name)

    @contextmanager
    def dropping() -> Iterator[None]:
        """The server drops the sink's connection in the middle of its transaction."""
        sa.event.listen(engine, "before_cursor_execute", kill_inserts)
        try:
            yield
        finally:
            sa.event.remove(engine, "before_cursor_execute", kill_inserts)

    try:
        yield SqlHarness(engine, schema, dropping)
    finally:
        engine.dispose()
        admin = sa.create_engine(url, poolclass=sa.NullPool)
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.dispose()


# ---- the contract, for every sink --------------------------------------------------------


@pytest.fixture(params=["ioc-redis", "health-axis-fhir", "shared-repo-sqlite", "shared-repo-pg"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    made: Any
    if request.param == "ioc-redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        snapshot: Snapshot = request.getfixturevalue("redis_snapshot")
        # no client-side retries: the runner decides from ``retriable``
        client = redis.Redis(port=server.port, retry=Retry(NoBackoff(), 0))
        client.flushall()
        try:
            made = IocHarness(server, client, snapshot)
            yield made
            for sink in made.sinks:
                sink.close()
        finally:
            client.close()
    elif request.param == "health-axis-fhir":
        with HealthReceiver(client_secret=SECRET) as receiver:
            made = HealthHarness(receiver)
            try:
                yield made
            finally:
                for sink in made.sinks:
                    sink.close()
    else:
        if request.param == "shared-repo-sqlite":
            harnesses = _sqlite_harness(tmp_path)
        else:
            harnesses = _postgres_harness(request.getfixturevalue("postgres_url"))
        made = next(harnesses)
        try:
            yield made
        finally:
            for sink in made.sinks:
                sink.close()
            harnesses.close()


class TestSinkContract(SinkContract):
    """Every case of :class:`sink_contract.SinkContract`, for each sink."""
