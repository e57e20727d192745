"""The subscription API: shared datasets over HTTP for agencies without a Kafka client.

    GET /datasets                       the datasets the agency may read
    GET /datasets/{id}/records?max=N    its next records of that dataset (JSON), 1..1000

Every request carries ``Authorization: Bearer <token>``; the policy holds each agency's
token as a SHA-256 digest, compared in constant time. A missing, unknown or expired
token gets 401; a token in the query string 400 (it would sit in proxies' and browsers'
logs; it is never looked up nor logged here, and the access log carries no query
string); a dataset outside the agency's policy (unknown ids included, so the answer
says nothing about what exists) gets 403. The policy file is re-read when it changes
(``PolicyFile``), so a revoked or replaced token is refused without a restart.

Abuse limits, in this order: requests per sliding window from one peer address, then
with one agency's token; over either, 429 with ``Retry-After`` (seconds).

Audit: every read that returned records is one line. Refusals that can
come in floods — 401, 429, a token in the URL, 403, and 400/404/405 answered to an
agency — go through ``RefusalTally``: the first of each (who, what, why) in an interval is
written at once, the rest as one line with their count when the interval ends. No line
holds the caller's path: the route template (``/datasets/{dataset}/records``, or
``(no route)``) and, for an agency's 400/404/405, the head of the path's SHA-256; a 403
names a catalog dataset, any other id only by its digest's head.

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
import contextlib
import hashlib
import json
import logging
import math
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, NamedTuple

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from pyrate_limiter import InMemoryBucket, Rate, RateItem

from bus.audit import AuditLog
from bus.consumers import next_offsets
from bus.errors import CodecError, DeliveryError
from bus.kafka_client import registry_client
from bus.settings import Settings
from schemas.access_policy import AccessPolicy, Agency, PolicyFile, agency_group
from schemas.catalog import DATASETS
from schemas.codec import AvroDeserializer

__all__ = [
    "MAX_RECORDS",
    "TOKEN_PARAMS",
    "AccessLog",
    "RateLimits",
    "Refusal",
    "RefusalTally",
    "create_app",
    "json_default",
    "make_runner",
    "serve",
]

log = logging.getLogger(__name__)

MAX_RECORDS = 1000
# Query parameters that carry a credential: refused, never looked up.
TOKEN_PARAMS = frozenset(
    {
        "access_token",
        "api_key",
        "api_token",
        "apikey",
        "auth",
        "authorization",
        "bearer",
        "jwt",
        "key",
        "password",
        "secret",
        "token",
    }
)
NO_ROUTE = "(no route)"
UNKNOWN_DATASET = "(unknown dataset)"


def _digest_head(text: str) -> str:
    """What the audit log keeps of a caller's string: the head of its SHA-256."""
    return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:16]


class RateLimits:
    """At most ``limit`` requests per sliding ``window_s`` per key (a pyrate-limiter
    bucket per key). The ``max_keys`` most recently seen keys are kept, so a caller
    spreading over many addresses costs bounded memory."""

    def __init__(self, limit: int, window_s: float, max_keys: int = 10_000) -> None:
        self._rate = Rate(limit, max(1, round(window_s * 1000)))
        self._buckets: OrderedDict[str, InMemoryBucket] = OrderedDict()
        self._max_keys = max_keys

    def retry_after(self, key: str) -> int | None:
        """Admit one request of ``key``: None, or the seconds until it would be admitted."""
        now = time.monotonic_ns() // 1_000_000
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = InMemoryBucket([self._rate])
            if len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket.leak(now)  # drop what left the window: a bucket holds <= limit items
        item = RateItem(key, now)
        if bucket.put(item):
            return None
        wait = bucket.waiting(item)
        window_ms = self._rate.interval
        wait_ms = min(wait, window_ms) if isinstance(wait, int) and wait >= 0 else window_ms
        return max(1, math.ceil(wait_ms / 1000))


class Refusal(NamedTuple):
    """What a tallied refusal is counted by; ``address`` only for anonymous callers."""

    actor: str  # agency id or "anonymous"
    action: str  # api.authenticate | api.rate_limit | api.request
    route: str  # route template, NO_ROUTE or a catalog dataset id; never the raw path
    reason: str  # one of a fixed set of phrases
    status: int
    address: str = ""


class RefusalTally:
    """Refusals counted per key and interval, so a flood costs a few audit lines.

    ``note`` says whether a refusal is its key's first in the current interval (audit it
    now); ``due`` ends an interval that is over and returns each key's further refusals.
    Past ``max_keys`` keys in one interval, new ones are counted under address ``*``.
    """

    def __init__(self, interval_s: float, max_keys: int = 1000) -> None:
        self.interval_s = interval_s
        self._max_keys = max_keys
        self._counts: dict[Refusal, int] = {}
        self._started = time.monotonic()

    def note(self, refusal: Refusal) -> bool:
        if refusal not in self._counts and len(self._counts) >= self._max_keys:
            refusal = refusal._replace(address="*")
        seen = self._counts.get(refusal, 0)
        self._counts[refusal] = seen + 1
        return seen == 0

    def due(self, now: float, *, force: bool = False) -> list[tuple[Refusal, int]]:
        if not force and now - self._started < self.interval_s:
            return []
        repeats = [(r, n - 1) for r, n in self._counts.items() if n > 1]
        self._counts.clear()
        self._started = now
        return repeats


def _route(request: web.BaseRequest) -> str:
    if not isinstance(request, web.Request):
        return NO_ROUTE
    try:
        match_info = request.match_info
    except AssertionError:  # a request refused before routing (bad request line)
        return NO_ROUTE
    resource = match_info.route.resource if match_info is not None else None
    return resource.canonical if resource is not None else NO_ROUTE


class AccessLog(AbstractAccessLogger):
    """One line per request with the route template, never the path or query string (a
    token put in a URL must reach no log)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            "%s %s %s %d %.3fs",
            request.remote,
            request.method,
            _route(request),
            response.status,
            time,
        )


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
        policy: PolicyFile,
        audit: AuditLog,
        registry: SchemaRegistryClient | None,
        topics: Mapping[str, str] | None,
        wait_s: float,
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.policy_generation = policy.generation
        self.audit = audit
        access = settings.access
        self.per_address = RateLimits(access.api_rate_per_address, access.api_rate_window_s)
        self.per_token = RateLimits(access.api_rate_per_token, access.api_rate_window_s)
        self.tally = RefusalTally(access.api_refusal_audit_interval_s)
        self.topics = dict(topics or {})
        self.wait_s = wait_s
        # A registry client made here is closed with this object; one passed in is the caller's.
        registry, self.owned_registry = registry_client(settings, registry)
        self.decode = AvroDeserializer(registry)
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

    async def refused(self, refusal: Refusal, **detail: object) -> None:
        """Count a refusal; audit it if it is its key's first of the interval."""
        if self.tally.note(refusal):
            await self.record(**_refusal_entry(refusal, {**detail, "count": 1}))

    async def flush_refusals(self, *, force: bool = False) -> None:
        repeats = self.tally.due(time.monotonic(), force=force)
        for refusal, count in repeats:
            detail = {"count": count, "repeats_within_s": self.tally.interval_s}
            await self.record(**_refusal_entry(refusal, detail))

    async def current_policy(self) -> AccessPolicy:
        policy = self.policy.current()
        if self.policy.generation != self.policy_generation:
            self.policy_generation = self.policy.generation
            error = self.policy.error
            await self.record(
                actor="databus-api",
                action="grant.policy_reloaded",
                object=str(self.policy.path),
                outcome="kept previous" if error else "loaded",
                detail={"error": error} if error else {"agencies": policy.grants()},
            )
        return policy


def _refusal_entry(refusal: Refusal, detail: Mapping[str, object]) -> dict[str, Any]:
    where = {"address": refusal.address} if refusal.address else {}
    return {
        "actor": refusal.actor,
        "action": refusal.action,
        "object": refusal.route,
        "outcome": "denied",
        "detail": {"reason": refusal.reason, "status": refusal.status, **where, **detail},
    }


_STATE = web.AppKey("subscription_state", _State)
_AGENCY = web.RequestKey("agency", Agency)
_POLICY = web.RequestKey("policy", AccessPolicy)


def _state(request: web.Request) -> _State:
    return request.app[_STATE]


def _bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _too_many(retry_after: int, whose: str) -> web.Response:
    return _json(
        {
            "error": "too_many_requests",
            "message": f"request rate of this {whose} over its limit; retry after {retry_after} s",
        },
        429,
        **{"Retry-After": str(retry_after)},
    )


def _unauthorized(error: str, message: str, *, token_sent: bool = True) -> web.Response:
    challenge = 'Bearer realm="databus"' + (', error="invalid_token"' if token_sent else "")
    return _json({"error": error, "message": message}, 401, **{"WWW-Authenticate": challenge})


_AUDITED_STATUSES = frozenset({400, 404, 405})


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Rate limits, token checks and the audit of refusals, before any handler runs."""
    state = _state(request)
    address = request.remote or "unknown"
    route = _route(request)
    wait = state.per_address.retry_after(address)
    if wait is not None:
        why = "address over its request rate"
        await state.refused(Refusal("anonymous", "api.rate_limit", route, why, 429, address))
        return _too_many(wait, "address")
    if any(name.lower() in TOKEN_PARAMS for name in request.query):
        why = "credential in the query string"
        await state.refused(Refusal("anonymous", "api.authenticate", route, why, 400, address))
        return _json(
            {
                "error": "token_in_url",
                "message": "send the token in the header Authorization: Bearer <token>, "
                "never in the URL; a token that was in a URL may be in logs on its way: "
                "ask the bus operator for a new one",
            },
            400,
        )
    policy = await state.current_policy()
    token = _bearer(request)
    agency = policy.agency_for_token(token) if token else None
    if agency is None:
        why = "no token" if token is None else "unknown token"
        await state.refused(Refusal("anonymous", "api.authenticate", route, why, 401, address))
        return _unauthorized(
            "unauthorized",
            "send Authorization: Bearer <your agency token>",
            token_sent=token is not None,
        )
    if agency.token_expired(datetime.now(UTC)):
        expired = agency.token_expires.isoformat() if agency.token_expires else "?"
        await state.refused(Refusal(agency.id, "api.authenticate", route, "token expired", 401))
        return _unauthorized(
            "token_expired",
            f"this token expired at {expired}; ask the bus operator for a new one",
        )
    wait = state.per_token.retry_after(agency.id)
    if wait is not None:
        why = "token over its request rate"
        await state.refused(Refusal(agency.id, "api.rate_limit", route, why, 429))
        return _too_many(wait, "token")
    request[_AGENCY] = agency
    request[_POLICY] = policy
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status not in _AUDITED_STATUSES:
            raise
        response = _json({"error": exc.reason.lower().replace(" ", "_")}, exc.status)
        if exc.status == 405 and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
    if response.status in _AUDITED_STATUSES:
        digest = _digest_head(request.path)
        why = f"answered {response.status}"
        await state.refused(
            Refusal(agency.id, "api.request", route, why, response.status),
            method=request.method[:16],
            path_sha256_head=digest,
        )
    return response


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
    if not request[_POLICY].may_read(agency.id, dataset_id):
        # a catalog id is named; anything else the caller typed is not stored, its digest is
        known = dataset_id in DATASETS
        extra = {} if known else {"dataset_sha256_head": _digest_head(dataset_id)}
        why = "outside the agency's access policy"
        target = dataset_id if known else UNKNOWN_DATASET
        await state.refused(Refusal(agency.id, "api.read", target, why, 403), **extra)
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
    policy: AccessPolicy | PolicyFile,
    audit: AuditLog,
    *,
    registry: SchemaRegistryClient | None = None,
    topics: Mapping[str, str] | None = None,
    wait_s: float = 1.0,
) -> web.Application:
    """The API; ``policy`` a ``PolicyFile`` to follow changes of the file, a fixed
    ``AccessPolicy`` otherwise; ``topics`` maps dataset ids to other shared topics (tests)."""
    app = web.Application(middlewares=[_guard])
    source = policy if isinstance(policy, PolicyFile) else PolicyFile(loaded=policy)
    state = _State(settings, source, audit, registry, topics, wait_s)
    app[_STATE] = state
    app.router.add_get("/datasets", _datasets)
    app.router.add_get("/datasets/{dataset}/records", _records)

    async def flush_refusals(_app: web.Application) -> AsyncIterator[None]:
        async def every_interval() -> None:
            while True:
                await asyncio.sleep(min(1.0, state.tally.interval_s))
                await state.flush_refusals()

        task = asyncio.create_task(every_interval())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await state.flush_refusals(force=True)

    async def close_readers(_app: web.Application) -> None:
        for reader in state.readers.values():
            await asyncio.to_thread(reader.close)
        if state.owned_registry is not None:
            state.owned_registry.close()

    app.cleanup_ctx.append(flush_refusals)
    app.on_cleanup.append(close_readers)
    return app


class _MalformedRequests(logging.Filter):
    """aiohttp logs a request its parser refuses with the raw request line, which may
    hold a token in its query string: keep the peer and the error's kind only."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg = record.msg + " refused (%s)"
            record.args = (
                *(record.args if isinstance(record.args, tuple) else ()),
                type(exc).__name__,
            )
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


_SERVER_LOG = logging.getLogger("aiohttp.server")


def make_runner(app: web.Application) -> web.AppRunner:
    """The runner ``serve`` uses: access log without paths or query strings, and no raw
    request line in the log of a request the HTTP parser refused."""
    if not any(isinstance(f, _MalformedRequests) for f in _SERVER_LOG.filters):
        _SERVER_LOG.addFilter(_MalformedRequests())
    return web.AppRunner(app, access_log_class=AccessLog)


async def serve(app: web.Application, host: str, port: int, stop: asyncio.Event) -> None:
    """Serve ``app`` until ``stop`` is set."""
    runner = make_runner(app)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    for address in runner.addresses:
        log.info("subscription API on http://%s:%s", *address[:2])
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
