"""The subscription API: shared datasets over HTTP for agencies without a Kafka client.

    GET /datasets                       the datasets the agency may read
    GET /datasets/{id}/records?max=N    its next records of that dataset (JSON), 1..1000

Every request carries ``Authorization: Bearer <token>``; the policy holds each agency's
token as a SHA-256 digest, compared in constant time. A missing or unknown token gets
401; a dataset outside the agency's policy (unknown ids included, so the answer says
nothing about what exists) gets 403. Both refusals, and every read that returned
records, are written to the audit log.

Offsets: each (agency, dataset) has its own consumer group,
``agency.<agency>.api.<dataset>``, separate from the agency's ``Subscriber`` group. The
API assigns the shared topic's partitions at the group's committed offsets (no group
membership, so no rebalance wait) and commits the offsets of the records it returns
*before* answering: a read is at-most-once per agency — an answer lost in transit is
not sent again. Run one API instance per cluster (two would share those positions).
Requests of one agency for one dataset are served one at a time.

Values are JSON: timestamps and dates in ISO 8601, decimals as strings, bytes base64.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from aiohttp import web
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient

from bus.access_policy import AccessPolicy, Agency, agency_group
from bus.audit import AuditLog
from bus.consumers import next_offsets
from bus.errors import CodecError, DeliveryError
from bus.settings import Settings
from schemas.catalog import DATASETS
from schemas.codec import AvroDeserializer

__all__ = ["MAX_RECORDS", "create_app", "json_default", "serve"]

log = logging.getLogger(__name__)

MAX_RECORDS = 1000


def json_default(value: object) -> object:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _json(body: Mapping[str, Any], status: int = 200, **headers: str) -> web.Response:
    return web.Response(
        text=json.dumps(body, default=json_default, ensure_ascii=False),
        status=status,
        content_type="application/json",
        headers=headers,
    )


class _Reader:
    """One agency's position on one shared topic; its methods block (run in a thread)."""

    def __init__(self, settings: Settings, group: str, topic: str, decode: AvroDeserializer):
        self.topic = topic
        self.group = group
        self._decode = decode
        self._consumer = Consumer(
            {
                **settings.kafka.client_config(),
                "group.id": group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": settings.kafka.fetch_wait_max_ms,
            }
        )
        self._assigned = False
        self.lock = asyncio.Lock()

    def _assign(self) -> None:
        meta = self._consumer.list_topics(self.topic, timeout=10).topics.get(self.topic)
        if meta is None or meta.error is not None or not meta.partitions:
            raise DeliveryError(f"{self.topic} is not available yet")
        parts = [TopicPartition(self.topic, p) for p in sorted(meta.partitions)]
        committed = self._consumer.committed(parts, timeout=10)
        self._consumer.assign(
            [
                TopicPartition(
                    tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
                )
                for tp in committed
            ]
        )
        self._assigned = True

    def read(self, max_records: int, wait_s: float) -> list[dict[str, Any]]:
        if not self._assigned:
            self._assign()
        messages: list[Message] = []
        deadline = time.monotonic() + wait_s
        while len(messages) < max_records:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            got = []
            for m in self._consumer.consume(max_records - len(messages), min(left, 0.2)):
                err = m.error()
                if err is None:
                    got.append(m)
                elif err.code() != KafkaError._PARTITION_EOF:
                    raise DeliveryError(f"reading {self.topic}: {err}", retriable=err.retriable())
            if not got and messages:
                break  # caught up: answer with what there is
            messages += got
        records = []
        for m in messages:
            try:
                value: Any = self._decode(m.value())
            except CodecError as exc:
                value = None
                log.error("%s: undecodable shared record skipped: %s", self.topic, exc.reason)
            key = m.key()
            records.append(
                {
                    "partition": m.partition(),
                    "offset": m.offset(),
                    "key": key.decode("utf-8", "replace") if key is not None else None,
                    "value": value,
                }
            )
        if messages:
            ends = next_offsets((self.topic, r["partition"], r["offset"]) for r in records)
            self._consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in ends.items()],
                asynchronous=False,
            )
        return [r for r in records if r["value"] is not None]

    def close(self) -> None:
        self._consumer.close()


class _State:
    def __init__(
        self,
        settings: Settings,
        policy: AccessPolicy,
        audit: AuditLog,
        registry: SchemaRegistryClient | None,
        topics: Mapping[str, str] | None,
        wait_s: float,
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.audit = audit
        self.topics = dict(topics or {})
        self.wait_s = wait_s
        client = registry or SchemaRegistryClient(settings.schema_registry.client_config())
        self.decode = AvroDeserializer(client)
        self.readers: dict[tuple[str, str], _Reader] = {}

    def topic(self, dataset_id: str) -> str:
        return self.topics.get(dataset_id) or DATASETS[dataset_id].shared_topic

    def reader(self, agency: str, dataset_id: str) -> _Reader:
        key = (agency, dataset_id)
        if key not in self.readers:
            group = agency_group(agency, dataset_id, api=True)
            self.readers[key] = _Reader(self.settings, group, self.topic(dataset_id), self.decode)
        return self.readers[key]

    async def record(self, **entry: Any) -> None:
        await asyncio.to_thread(lambda: self.audit.append(**entry))


_STATE = web.AppKey("subscription_state", _State)
_AGENCY = web.RequestKey("agency", Agency)


def _state(request: web.Request) -> _State:
    return request.app[_STATE]


def _bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = _state(request)
    token = _bearer(request)
    agency = state.policy.agency_for_token(token) if token else None
    if agency is None:
        await state.record(
            actor="anonymous",
            action="api.authenticate",
            object=request.path,
            outcome="denied",
            detail={"reason": "no token" if token is None else "unknown token"},
        )
        return _json(
            {"error": "unauthorized", "message": "send Authorization: Bearer <your agency token>"},
            401,
            **{"WWW-Authenticate": 'Bearer realm="databus"'},
        )
    request[_AGENCY] = agency
    return await handler(request)


async def _datasets(request: web.Request) -> web.Response:
    state = _state(request)
    agency = request[_AGENCY]
    rows = []
    for ds_id in agency.datasets:
        ds = DATASETS[ds_id]
        rows.append(
            {
                "id": ds.id,
                "description_en": ds.description_en,
                "description_vi": ds.description_vi,
                "classification": ds.classification,
                "owner_unit": ds.owner_unit,
                "topic": state.topic(ds.id),
                "records": f"/datasets/{ds.id}/records",
            }
        )
    return _json({"agency": agency.id, "datasets": rows})


async def _records(request: web.Request) -> web.Response:
    state = _state(request)
    agency = request[_AGENCY]
    dataset_id = request.match_info["dataset"]
    if not state.policy.may_read(agency.id, dataset_id):
        await state.record(
            actor=agency.id,
            action="api.read",
            object=dataset_id,
            outcome="denied",
            detail={"reason": "outside the agency's access policy"},
        )
        return _json(
            {"error": "forbidden", "message": f"{dataset_id} is not in your access policy"}, 403
        )
    try:
        max_records = int(request.query.get("max", "100"))
    except ValueError:
        max_records = 0
    if not 1 <= max_records <= MAX_RECORDS:
        return _json({"error": "bad_request", "message": f"max must be 1..{MAX_RECORDS}"}, 400)
    reader = state.reader(agency.id, dataset_id)
    async with reader.lock:
        try:
            records = await asyncio.to_thread(reader.read, max_records, state.wait_s)
        except DeliveryError as exc:
            return _json({"error": "unavailable", "message": str(exc)}, 503, **{"Retry-After": "5"})
    if records:
        await state.record(
            actor=agency.id,
            action="api.read",
            object=dataset_id,
            outcome="granted",
            detail={"records": len(records), "last_offsets": _last_offsets(records)},
        )
    return _json({"dataset": dataset_id, "count": len(records), "records": records})


def _last_offsets(records: list[dict[str, Any]]) -> dict[str, int]:
    last: dict[str, int] = {}
    for r in records:
        last[str(r["partition"])] = int(r["offset"])
    return last


def create_app(
    settings: Settings,
    policy: AccessPolicy,
    audit: AuditLog,
    *,
    registry: SchemaRegistryClient | None = None,
    topics: Mapping[str, str] | None = None,
    wait_s: float = 1.0,
) -> web.Application:
    """The API; ``topics`` maps dataset ids to other shared topics (tests)."""
    app = web.Application(middlewares=[_authenticate])
    state = _State(settings, policy, audit, registry, topics, wait_s)
    app[_STATE] = state
    app.router.add_get("/datasets", _datasets)
    app.router.add_get("/datasets/{dataset}/records", _records)

    async def close_readers(_app: web.Application) -> None:
        for reader in state.readers.values():
            await asyncio.to_thread(reader.close)

    app.on_cleanup.append(close_readers)
    return app


async def serve(app: web.Application, host: str, port: int, stop: asyncio.Event) -> None:
    """Serve ``app`` until ``stop`` is set."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    for address in runner.addresses:
        log.info("subscription API on http://%s:%s", *address[:2])
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
