"""The project's own Confluent-compatible schema registry (REST subset, AVRO only).

confluent-kafka's ``SchemaRegistryClient``, ``AvroSerializer`` and
``AvroDeserializer`` work against it unchanged. State lives in a compacted Kafka
topic (``_schemas``): every change is written as one record and acknowledged
before the HTTP response, and a starting registry replays the whole topic, so a
restarted one serves the same ids and versions. One registry writes to a topic
at a time; there is no leader election.

    with RegistryServer("127.0.0.1:9092") as registry:
        client = SchemaRegistryClient({"url": registry.url})

    python -m databus.standins.registry_server --bootstrap-servers 127.0.0.1:9092 --port 8081
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from types import FrameType, TracebackType
from typing import Any, Self

from aiohttp import web
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from bus.errors import IncompatibleSchemaError, RegistryError, StackError
from schemas.registry_state import (
    AVRO,
    Change,
    CompatibilityLevel,
    RegistryRequestError,
    RegistryState,
    parse_version,
)

__all__ = ["CONTENT_TYPE", "RegistryServer", "SchemasTopic", "build_app", "main"]

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
_JSON_TYPES = frozenset(
    {
        CONTENT_TYPE,
        "application/vnd.schemaregistry+json",
        "application/json",
        "application/octet-stream",
        "",
    }
)
_WRITE_TIMEOUT_S = 10.0
_REPLAY_TIMEOUT_S = 60.0
_START_TIMEOUT_S = 30.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class SchemasTopic:
    """The ``_schemas`` topic: created if missing, replayed on start, written record by record."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str = "_schemas",
        security: Mapping[str, str | int | float | bool] | None = None,
    ) -> None:
        self.topic = topic
        # TLS and SASL from the bus's settings (``KafkaSettings.security_config()``)
        self._base: dict[str, str | int | float | bool] = {
            **(security or {}),
            "bootstrap.servers": bootstrap_servers,
        }
        self._producer: Producer | None = None

    def ensure_topic(self) -> bool:
        """Creates the topic if missing; True when it was created (so it is empty)."""
        admin = AdminClient(dict(self._base))
        # Compaction keeps the latest record per key forever; retention.ms is set
        # explicitly because some brokers report topic configs only when set at creation.
        spec = NewTopic(
            self.topic,
            num_partitions=1,
            replication_factor=-1,
            config={"cleanup.policy": "compact", "retention.ms": "-1"},
        )
        try:
            admin.create_topics([spec], operation_timeout=_WRITE_TIMEOUT_S)[self.topic].result(
                timeout=_START_TIMEOUT_S
            )
        except KafkaException as exc:
            error = exc.args[0]
            if not (
                isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS
            ):
                raise StackError(f"cannot create schema topic {self.topic!r}: {exc}") from exc
        else:
            log.info("created schema topic %s", self.topic)
            return True
        metadata = admin.list_topics(self.topic, timeout=_START_TIMEOUT_S).topics[self.topic]
        if len(metadata.partitions) != 1:
            # Ordering of registrations is the whole point; it only holds on one partition.
            raise StackError(
                f"schema topic {self.topic!r} has {len(metadata.partitions)} partitions; it needs 1"
            )
        return False

    def replay(self, state: RegistryState) -> int:
        """Applies every record of the topic to ``state``; returns how many were read."""
        consumer = Consumer(
            {
                **self._base,
                # librdkafka insists on a group id; assign() without commits never joins it.
                "group.id": f"databus-schema-registry-{self.topic}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "fetch.wait.max.ms": 10,
            }
        )
        try:
            partition = TopicPartition(self.topic, 0)
            low, high = consumer.get_watermark_offsets(partition, timeout=_START_TIMEOUT_S)
            if high <= low:
                return 0
            consumer.assign([TopicPartition(self.topic, 0, low)])
            read = 0
            deadline = time.monotonic() + _REPLAY_TIMEOUT_S
            position = low
            # Every record is its own batch (see write), so the reported high
            # watermark is exact even on brokers that report a batch's base offset.
            while position < high:
                if time.monotonic() > deadline:
                    raise StackError(
                        f"replaying {self.topic!r} stopped at offset {position} of {high}"
                    )
                message = consumer.poll(0.5)
                if message is None:
                    continue
                if message.error():
                    raise StackError(f"replaying {self.topic!r} failed: {message.error()}")
                position = (message.offset() or 0) + 1
                read += 1
                self._apply(state, message)
            return read
        finally:
            consumer.close()

    @staticmethod
    def _apply(state: RegistryState, message: Message) -> None:
        try:
            state.apply_record(message.key(), message.value())
        except (ValueError, KeyError, TypeError, RegistryError) as exc:
            # One bad record must not keep the registry down; the rest stays consistent.
            log.warning("skipping unreadable schema record at offset %s: %s", message.offset(), exc)

    def write(self, change: Change) -> None:
        """Produces one record and waits for the broker's acknowledgement."""
        if self._producer is None:
            self._producer = Producer(
                {
                    **self._base,
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": 0,
                    "client.id": "databus-schema-registry",
                }
            )
        errors: list[KafkaError] = []

        def delivered(error: KafkaError | None, _message: Message) -> None:
            if error is not None:
                errors.append(error)

        self._producer.produce(
            self.topic,
            key=change.key_bytes(),
            value=change.value_bytes(),
            partition=0,
            on_delivery=delivered,
        )
        # One flush per record keeps one record per batch; see replay.
        pending = self._producer.flush(_WRITE_TIMEOUT_S)
        if pending or errors:
            reason = errors[0] if errors else f"no acknowledgement in {_WRITE_TIMEOUT_S}s"
            raise RegistryError(f"schema store write failed: {reason}", retriable=True)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(_WRITE_TIMEOUT_S)
            self._producer = None


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, content_type=CONTENT_TYPE)


def _error(status: int, error_code: int, message: str) -> web.Response:
    return _json({"error_code": error_code, "message": message}, status=status)


def _flag(request: web.Request, name: str) -> bool:
    # The Python client sends booleans both as "false" and as "False".
    return request.query.get(name, "false").lower() in ("true", "1")


def _int_query(request: web.Request, name: str, default: int) -> int:
    try:
        return int(request.query.get(name, default))
    except ValueError:
        return default


def _page(items: list[Any], request: web.Request) -> list[Any]:
    offset = max(_int_query(request, "offset", 0), 0)
    limit = _int_query(request, "limit", -1)
    return items[offset:] if limit < 0 else items[offset : offset + limit]


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except RegistryRequestError as exc:
        return _error(exc.http_status, exc.error_code, str(exc))
    except IncompatibleSchemaError as exc:
        return _error(409, 409, str(exc))
    except RegistryError as exc:
        log.error("schema store failure on %s %s: %s", request.method, request.path, exc)
        return _error(500, 50001, f"Error in the backend data store: {exc}")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, exc.status, f"HTTP {exc.status} {exc.reason}")
    except RecursionError:
        # a schema nested deeper than parsing or comparing it can follow
        log.warning("refused a too deeply nested request on %s %s", request.method, request.path)
        return _error(422, 42201, "Invalid schema: nested too deeply")
    except Exception:
        log.exception("unexpected failure on %s %s", request.method, request.path)
        return _error(500, 50000, "Internal server error")


class _Api:
    """Confluent's REST resources over a ``RegistryState`` and its topic."""

    def __init__(self, state: RegistryState, store: SchemasTopic) -> None:
        self._state = state
        self._store = store
        self._write_lock = asyncio.Lock()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/", self.root),
            web.get("/schemas/types", self.schema_types),
            web.get("/schemas/ids/{id}", self.schema_by_id),
            web.get("/schemas/ids/{id}/schema", self.raw_schema_by_id),
            web.get("/schemas/ids/{id}/subjects", self.subjects_by_id),
            web.get("/schemas/ids/{id}/versions", self.versions_by_id),
            web.get("/subjects", self.list_subjects),
            web.post("/subjects/{subject}", self.lookup),
            web.delete("/subjects/{subject}", self.delete_subject),
            web.get("/subjects/{subject}/versions", self.list_versions),
            web.post("/subjects/{subject}/versions", self.register),
            web.get("/subjects/{subject}/versions/{version}", self.get_version),
            web.delete("/subjects/{subject}/versions/{version}", self.delete_version),
            web.get("/subjects/{subject}/versions/{version}/schema", self.raw_version),
            web.get("/subjects/{subject}/versions/{version}/referencedby", self.referenced_by),
            web.post("/compatibility/subjects/{subject}/versions", self.compatibility_all),
            web.post("/compatibility/subjects/{subject}/versions/{version}", self.compatibility),
            web.get("/config", self.get_config),
            web.put("/config", self.put_config),
            web.delete("/config", self.delete_config),
            web.get("/config/{subject}", self.get_config),
            web.put("/config/{subject}", self.put_config),
            web.delete("/config/{subject}", self.delete_config),
            web.get("/mode", self.mode),
            web.get("/mode/{subject}", self.mode),
        ]

    async def _commit(self, change: Change) -> None:
        """Acknowledged by the broker first, then applied: a crash never loses an answered id."""
        await asyncio.get_running_loop().run_in_executor(None, self._store.write, change)
        self._state.apply(change)

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any]:
        if request.content_type not in _JSON_TYPES:
            raise web.HTTPUnsupportedMediaType()
        try:
            body = json.loads(await request.read() or b"{}")
        except RecursionError as exc:
            raise RegistryRequestError(400, "Malformed JSON body: nested too deeply") from exc
        except ValueError as exc:  # not JSON, not UTF-8, an integer past the digit limit
            raise RegistryRequestError(400, f"Malformed JSON body: {exc}") from exc
        if not isinstance(body, dict):
            raise RegistryRequestError(400, "The request body must be a JSON object.")
        return body

    @staticmethod
    def _schema_id(request: web.Request) -> int:
        try:
            return int(request.match_info["id"])
        except ValueError as exc:
            raise RegistryRequestError(40403, "Schema not found.") from exc

    async def root(self, _request: web.Request) -> web.Response:
        return _json({})

    async def schema_types(self, _request: web.Request) -> web.Response:
        return _json([AVRO])

    async def schema_by_id(self, request: web.Request) -> web.Response:
        return _json({"schema": self._state.schema_by_id(self._schema_id(request))})

    async def raw_schema_by_id(self, request: web.Request) -> web.Response:
        schema = self._state.schema_by_id(self._schema_id(request))
        return web.Response(text=schema, content_type=CONTENT_TYPE)

    async def subjects_by_id(self, request: web.Request) -> web.Response:
        found = self._state.versions_by_id(
            self._schema_id(request), deleted=_flag(request, "deleted")
        )
        return _json(_page(list(dict.fromkeys(v.subject for v in found)), request))

    async def versions_by_id(self, request: web.Request) -> web.Response:
        found = self._state.versions_by_id(
            self._schema_id(request), deleted=_flag(request, "deleted")
        )
        return _json(_page([{"subject": v.subject, "version": v.version} for v in found], request))

    async def list_subjects(self, request: web.Request) -> web.Response:
        subjects = self._state.subjects(
            deleted=_flag(request, "deleted"),
            deleted_only=_flag(request, "deleted_only"),
            prefix=request.query.get("subjectPrefix", ""),
        )
        return _json(_page(subjects, request))

    async def list_versions(self, request: web.Request) -> web.Response:
        versions = self._state.versions(
            request.match_info["subject"],
            deleted=_flag(request, "deleted"),
            deleted_only=_flag(request, "deleted_only"),
        )
        return _json(_page(versions, request))

    async def get_version(self, request: web.Request) -> web.Response:
        found = self._state.get_version(
            request.match_info["subject"],
            request.match_info["version"],
            deleted=_flag(request, "deleted"),
        )
        return _json(found.to_json())

    async def raw_version(self, request: web.Request) -> web.Response:
        found = self._state.get_version(
            request.match_info["subject"],
            request.match_info["version"],
            deleted=_flag(request, "deleted"),
        )
        return web.Response(text=found.schema, content_type=CONTENT_TYPE)

    async def referenced_by(self, request: web.Request) -> web.Response:
        # References are not supported, so nothing can refer to a version.
        self._state.get_version(request.match_info["subject"], request.match_info["version"])
        return _json([])

    async def lookup(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        found = self._state.lookup(
            request.match_info["subject"], body.get("schema"), deleted=_flag(request, "deleted")
        )
        return _json(found.to_json())

    async def register(self, request: web.Request) -> web.Response:
        subject = request.match_info["subject"]
        body = await self._body(request)
        if body.get("metadata") or body.get("ruleSet"):
            raise RegistryRequestError(
                42201, "Schema metadata and rule sets are not supported by this registry."
            )
        async with self._write_lock:
            plan = self._state.plan_register(
                subject, body.get("schema"), body.get("schemaType", AVRO), body.get("references")
            )
            if plan.change is not None:
                await self._commit(plan.change)
                log.info(
                    "registered subject %s version %d as schema id %d",
                    subject,
                    plan.version,
                    plan.schema_id,
                )
        return _json({"id": plan.schema_id})

    async def delete_subject(self, request: web.Request) -> web.Response:
        subject = request.match_info["subject"]
        permanent = _flag(request, "permanent")
        async with self._write_lock:
            versions, change = self._state.plan_delete_subject(subject, permanent=permanent)
            await self._commit(change)
        log.info("deleted subject %s versions %s (permanent=%s)", subject, versions, permanent)
        return _json(versions)

    async def delete_version(self, request: web.Request) -> web.Response:
        subject = request.match_info["subject"]
        permanent = _flag(request, "permanent")
        async with self._write_lock:
            version, change = self._state.plan_delete_version(
                subject, request.match_info["version"], permanent=permanent
            )
            await self._commit(change)
        log.info("deleted subject %s version %d (permanent=%s)", subject, version, permanent)
        return _json(version)

    async def compatibility(self, request: web.Request) -> web.Response:
        return await self._compatibility(request, request.match_info["version"])

    async def compatibility_all(self, request: web.Request) -> web.Response:
        return await self._compatibility(request, None)

    async def _compatibility(self, request: web.Request, version: str | None) -> web.Response:
        if version is not None:
            parse_version(version)
        body = await self._body(request)
        result = self._state.check_compatibility(
            request.match_info["subject"], body.get("schema"), version
        )
        answer: dict[str, Any] = {"is_compatible": result.is_compatible}
        # Confluent sends the reasons only when asked for them.
        if _flag(request, "verbose"):
            answer["messages"] = list(result.messages)
        return _json(answer)

    async def get_config(self, request: web.Request) -> web.Response:
        subject = request.match_info.get("subject")
        if subject is None:
            return _json({"compatibilityLevel": self._state.global_level.value})
        level = self._state.subject_level(subject)
        if level is None:
            if not _flag(request, "defaultToGlobal"):
                raise RegistryRequestError(
                    40408,
                    f"Subject '{subject}' does not have subject-level compatibility configured",
                )
            level = self._state.global_level
        return _json({"compatibilityLevel": level.value})

    async def put_config(self, request: web.Request) -> web.Response:
        subject = request.match_info.get("subject")
        body = await self._body(request)
        level = CompatibilityLevel.parse(body.get("compatibility"))
        async with self._write_lock:
            await self._commit(self._state.plan_set_level(level, subject))
        log.info("compatibility of %s set to %s", subject or "(global)", level)
        return _json({"compatibility": level.value})

    async def delete_config(self, request: web.Request) -> web.Response:
        subject = request.match_info.get("subject")
        async with self._write_lock:
            previous, change = self._state.plan_delete_level(subject)
            await self._commit(change)
        log.info("compatibility of %s reset", subject or "(global)")
        return _json({"compatibilityLevel": previous.value})

    async def mode(self, _request: web.Request) -> web.Response:
        return _json({"mode": "READWRITE"})


def build_app(state: RegistryState, store: SchemasTopic) -> web.Application:
    """The aiohttp application over an already replayed state."""
    app = web.Application(middlewares=[_errors])
    app.add_routes(_Api(state, store).routes())
    return app


class RegistryServer:
    """Runs the registry in a background thread with its own event loop."""

    def __init__(
        self,
        bootstrap_servers: str,
        host: str = "127.0.0.1",
        port: int = 0,
        topic: str = "_schemas",
        security: Mapping[str, str | int | float | bool] | None = None,
    ) -> None:
        """``security``: the Kafka client's TLS and SASL settings
        (``KafkaSettings.security_config()``); the bus's settings by default."""
        self._store = SchemasTopic(bootstrap_servers, topic, security)
        self._host = host
        self._port = port
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None

    @property
    def url(self) -> str:
        if self._socket is None:
            raise StackError("the schema registry is not started")
        host, port = self._socket.getsockname()[:2]
        return f"http://{host}:{port}"

    def start(self) -> None:
        """Replays the topic, then serves; returns once requests are answered."""
        if self._thread is not None:
            raise StackError("the schema registry is already started")
        state = RegistryState()
        try:
            if not self._store.ensure_topic():
                count = self._store.replay(state)
                log.info("replayed %d schema records from %s", count, self._store.topic)
        except (KafkaException, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            raise StackError(
                f"schema registry cannot load {self._store.topic!r}: {reason}"
            ) from exc
        # Binding here, not in the thread, gives port 0 its real number before serving.
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self._host, self._port))
        except OSError as exc:
            sock.close()
            raise StackError(
                f"schema registry cannot bind {self._host}:{self._port}: {exc}"
            ) from exc
        self._socket = sock
        self._ready.clear()
        self._failure = None
        self._thread = threading.Thread(
            target=self._run,
            args=(build_app(state, self._store), sock),
            name="schema-registry",
            daemon=True,
        )
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT_S) or self._failure is not None:
            failure = self._failure
            self.stop()
            raise StackError(f"schema registry did not start: {failure}") from failure
        log.info("schema registry serving on %s (topic %s)", self.url, self._store.topic)

    def _run(self, app: web.Application, sock: socket.socket) -> None:
        try:
            asyncio.run(self._serve(app, sock))
        except BaseException as exc:
            self._failure = exc
            self._ready.set()
            log.exception("schema registry stopped on an error")

    async def _serve(self, app: web.Application, sock: socket.socket) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        try:
            await web.SockSite(runner, sock).start()
            self._ready.set()
            await self._stopping.wait()
        finally:
            await runner.cleanup()

    def stop(self) -> None:
        """Stops serving and flushes the store; calling it twice is harmless."""
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is not None:
            if loop is not None and stopping is not None and not loop.is_closed():
                # The loop may close between the check and the call.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(stopping.set)
            thread.join(_START_TIMEOUT_S)
        self._thread = self._loop = self._stopping = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        self._store.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m databus.standins.registry_server",
        description="Serve the databus schema registry in the foreground.",
    )
    parser.add_argument("--bootstrap-servers", required=True, help="Kafka bootstrap servers")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--topic", default="_schemas")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    done = threading.Event()

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    from bus.settings import load_settings

    security = load_settings().kafka.security_config()  # DATABUS_KAFKA__SECURITY_PROTOCOL …
    with RegistryServer(
        args.bootstrap_servers, args.host, args.port, args.topic, security
    ) as server:
        print(server.url, flush=True)
        done.wait()


if __name__ == "__main__":
    main()
