"""The subscription API over real HTTP, broker and registry: tokens, policy, offsets, audit;
and under abuse: rate limits, floods of refusals, expired, revoked and misplaced tokens."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from registry_clients import registry_client
from std_samples import std_events

from bus.audit import AuditLog, verify
from bus.settings import AccessSettings, Settings
from bus.topic_admin import TopicSpec, ensure_topics
from schemas.access_policy import AccessPolicy, PolicyFile, parse_policy, token_hash
from schemas.catalog import DATASETS
from schemas.codec import AvroSerializer
from sinks.subscription_api import create_app, make_runner
from stream_processors.share import mask_event, share_plan

pytestmark = pytest.mark.integration

KEY = b"api-test-pseudonym-key-0001"
LATER = "2099-01-01T00:00:00Z"
COUNT = 30
DEADLINE_S = 60.0


def _publish_shared(settings: Settings, registry: SchemaRegistryClient, topic: str) -> set[str]:
    plan = share_plan(DATASETS["feedback.reports"], ("reporter_phone",), shared_topic=topic)
    ensure_topics(settings, [TopicSpec(topic, 2)])
    serialize = AvroSerializer(registry, plan.subject, plan.schema_str)
    producer = Producer({**settings.kafka.client_config(), "enable.idempotence": True})
    ids = set()
    for event in std_events("feedback.reports")[:COUNT]:
        shared = mask_event(plan, event, KEY)
        producer.produce(topic, value=serialize(shared), key=shared["after"]["report_id"].encode())
        ids.add(str(shared["event_id"]))
    assert producer.flush(30) == 0
    return ids


async def _read_all(client: TestClient[Any, Any], token: str, want: int) -> list[dict[str, Any]]:
    """Read in pages of 7 until ``want`` records came (or the deadline passed)."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + DEADLINE_S
    while len(got) < want and time.monotonic() < deadline:
        resp = await client.get(
            "/datasets/feedback.reports/records?max=7",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert resp.status == 200
        body = await resp.json()
        assert body["count"] == len(body["records"]) <= 7
        got += body["records"]
    return got


def _entries(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_agencies_read_their_datasets_and_are_refused_the_rest(
    stack_settings: Settings, registry_url: str, tmp_path: Path
) -> None:
    registry = registry_client({"url": registry_url})
    tag = uuid.uuid4().hex[:8]
    topic = f"test.api{tag}.feedback_reports.shared.v1"
    ids = _publish_shared(stack_settings, registry, topic)
    token_a, token_b = f"token-a-{tag}-0123456789", f"token-b-{tag}-0123456789"
    a, b = f"a-{tag}", f"b-{tag}"
    policy = parse_policy(
        {
            "shared": {"feedback.reports": {"join_keys": ["reporter_phone"]}, "land.parcels": {}},
            "agencies": {
                a: {
                    "max_classification": "internal",
                    "datasets": ["feedback.reports"],
                    "token_sha256": token_hash(token_a),
                    "token_expires": LATER,
                },
                b: {
                    "max_classification": "internal",
                    "datasets": ["feedback.reports", "land.parcels"],
                    "token_sha256": token_hash(token_b),
                    "token_expires": LATER,
                },
            },
        }
    )
    audit = AuditLog(tmp_path / "audit.jsonl")
    app = create_app(
        stack_settings,
        policy,
        audit,
        registry=registry,
        topics={"feedback.reports": topic},
        wait_s=0.3,
    )

    async def scenario() -> None:
        async with TestClient(TestServer(app)) as client:
            # no token, a wrong token: 401
            assert (await client.get("/datasets")).status == 401
            resp = await client.get("/datasets", headers={"Authorization": "Bearer nope"})
            assert resp.status == 401 and "Bearer" in resp.headers["WWW-Authenticate"]

            auth_a = {"Authorization": f"Bearer {token_a}"}
            listed = await (await client.get("/datasets", headers=auth_a)).json()
            assert [d["id"] for d in listed["datasets"]] == ["feedback.reports"]

            # outside its policy, shared to someone else or restricted or unknown: 403
            for outside in ("land.parcels", "health.encounters", "no.such"):
                resp = await client.get(f"/datasets/{outside}/records", headers=auth_a)
                assert resp.status == 403, outside

            bad = await client.get("/datasets/feedback.reports/records?max=0", headers=auth_a)
            assert bad.status == 400

            # each agency keeps its own offsets: A pages through once, B reads it all too
            got_a = await _read_all(client, token_a, COUNT)
            got_b = await _read_all(client, token_b, COUNT)
            for got in (got_a, got_b):
                assert len(got) == COUNT
                assert {r["value"]["event_id"] for r in got} == ids
            again = await client.get("/datasets/feedback.reports/records?max=5", headers=auth_a)
            assert (await again.json())["count"] == 0  # nothing new for A
            value = got_a[0]["value"]
            assert "reporter_phone" not in value["after"]
            assert isinstance(value["ts_ms"], str) and value["ts_ms"].startswith("20")

    asyncio.run(scenario())

    result = verify(audit.path)
    assert result.ok
    entries = _entries(audit.path)
    denied = [e for e in entries if e["outcome"] == "denied" and e["action"] == "api.read"]
    assert {(e["actor"], e["object"]) for e in denied} == {
        (a, "land.parcels"),
        (a, "health.encounters"),
        (a, "(unknown dataset)"),  # what the caller typed is not stored
    }
    unauthenticated = [e for e in entries if e["action"] == "api.authenticate"]
    assert len(unauthenticated) == 2 and all(e["actor"] == "anonymous" for e in unauthenticated)
    granted = [e for e in entries if e["outcome"] == "granted"]
    assert sum(e["detail"]["records"] for e in granted if e["actor"] == a) == COUNT
    assert sum(e["detail"]["records"] for e in granted if e["actor"] == b) == COUNT
    assert token_a not in audit.path.read_text(encoding="utf-8")


# ---- under abuse: a real server on a TCP port, the runner `databus api` uses ---------


@pytest.fixture
def settings_with(stack_settings: Settings) -> Callable[..., Settings]:
    """The stack's settings with these access settings (limits, intervals)."""

    def make(**access: Any) -> Settings:
        return stack_settings.model_copy(update={"access": AccessSettings(**access)})

    return make


def _policy_doc(tokens: dict[str, tuple[str, object]]) -> dict[str, Any]:
    """agency id -> (token, expiry) over feedback.reports."""
    return {
        "shared": {"feedback.reports": {"join_keys": ["reporter_phone"]}, "land.parcels": {}},
        "agencies": {
            agency: {
                "max_classification": "internal",
                "datasets": ["feedback.reports"],
                "token_sha256": token_hash(token),
                "token_expires": expires,
            }
            for agency, (token, expires) in tokens.items()
        },
    }


@contextlib.asynccontextmanager
async def _serving(app: web.Application) -> AsyncIterator[aiohttp.ClientSession]:
    runner = make_runner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with aiohttp.ClientSession(
            base_url=f"http://{host}:{port}", connector=aiohttp.TCPConnector(limit=32)
        ) as session:
            yield session
    finally:
        await runner.cleanup()  # flushes the refusal tally into the audit log


async def _until(
    probe: Callable[[], Awaitable[bool]], deadline_s: float = DEADLINE_S, every_s: float = 0.05
) -> float:
    """Poll ``probe`` until it holds; the seconds it took."""
    start = time.monotonic()
    while not await probe():
        assert time.monotonic() - start < deadline_s, "condition not met before the deadline"
        await asyncio.sleep(every_s)
    return time.monotonic() - start


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _app(settings: Settings, policy: AccessPolicy | PolicyFile, audit: AuditLog) -> web.Application:
    return create_app(settings, policy, audit, topics={"feedback.reports": "unused.topic"})


def test_a_burst_gets_429_with_retry_after_and_recovers_after_the_window(
    settings_with: Callable[..., Settings],
    tmp_path: Path,
) -> None:
    token, other = "burst-token-0123456789", "other-token-0123456789"
    policy = parse_policy(_policy_doc({"a": (token, LATER), "b": (other, LATER)}))
    audit = AuditLog(tmp_path / "audit.jsonl")

    async def burst(session: aiohttp.ClientSession, headers: dict[str, str], n: int) -> list[int]:
        statuses = []
        for _ in range(n):
            async with session.get("/datasets", headers=headers) as resp:
                statuses.append(resp.status)
                if resp.status == 429:
                    retry_after = int(resp.headers["Retry-After"])
                    assert 1 <= retry_after <= 2
                    assert (await resp.json())["error"] == "too_many_requests"
        return statuses

    async def ok(session: aiohttp.ClientSession, headers: dict[str, str]) -> bool:
        async with session.get("/datasets", headers=headers) as resp:
            return resp.status == 200

    async def per_address() -> None:
        settings = settings_with(
            api_rate_per_address=5, api_rate_per_token=1000, api_rate_window_s=2
        )
        async with _serving(_app(settings, policy, audit)) as session:
            assert await burst(session, _auth(token), 8) == [200] * 5 + [429] * 3
            # anonymous callers are limited by address too: 429 before any token check
            assert (await session.get("/datasets")).status == 429
            await _until(lambda: ok(session, _auth(token)), deadline_s=20)

    async def per_token() -> None:
        settings = settings_with(
            api_rate_per_address=1000, api_rate_per_token=4, api_rate_window_s=2
        )
        async with _serving(_app(settings, policy, audit)) as session:
            assert await burst(session, _auth(token), 6) == [200] * 4 + [429] * 2
            # another agency's token from the same address is not held back
            assert await burst(session, _auth(other), 4) == [200] * 4
            await _until(lambda: ok(session, _auth(token)), deadline_s=20)

    asyncio.run(per_address())  # recovers in the same server: the window moved on
    asyncio.run(per_token())

    entries = _entries(audit.path)
    limited = [e for e in entries if e["action"] == "api.rate_limit"]
    # each (who, why) once at its first 429, then its further ones as one counted line
    assert {(e["actor"], e["detail"]["reason"]) for e in limited} == {
        ("anonymous", "address over its request rate"),
        ("a", "token over its request rate"),
    }
    by_address = [e for e in limited if e["actor"] == "anonymous"]
    assert sum(e["detail"]["count"] for e in by_address) >= 4
    assert all(e["detail"]["address"] == "127.0.0.1" for e in by_address)
    assert verify(audit.path).ok


@pytest.mark.parametrize("flood", [1_000, pytest.param(10_000, marks=pytest.mark.slow)])
def test_anonymous_401_floods_grow_the_audit_log_by_a_bounded_amount(
    settings_with: Callable[..., Settings], tmp_path: Path, flood: int
) -> None:
    policy = parse_policy(_policy_doc({"a": ("flood-token-0123456789", LATER)}))
    audit = AuditLog(tmp_path / "audit.jsonl")
    audit.append(actor="test", action="test.start", object="-", outcome="ok")
    before = audit.path.stat().st_size
    settings = settings_with(api_rate_per_address=1_000_000, api_refusal_audit_interval_s=3600)
    marker = "no-such-path-" + "x" * 200

    async def scenario() -> list[int]:
        async with _serving(_app(settings, policy, audit)) as session:

            async def one(i: int) -> int:
                path = f"/datasets/{marker}-{i}/records" if i % 2 else f"/{marker}/{i}"
                headers = _auth(f"wrong-{i}") if i % 3 == 0 else {}
                async with session.get(path, headers=headers) as resp:
                    return resp.status

            statuses: list[int] = []
            for start in range(0, flood, 500):
                statuses += await asyncio.gather(
                    *(one(i) for i in range(start, min(flood, start + 500)))
                )
            return statuses

    started = time.monotonic()
    statuses = asyncio.run(scenario())
    elapsed = time.monotonic() - started
    assert statuses == [401] * flood
    grown = audit.path.stat().st_size - before
    lines = _entries(audit.path)[1:]
    # (route x reason) keys, each: its first line and one counted line at shutdown
    assert len(lines) <= 8 and grown < 4096, (len(lines), grown)
    assert sum(e["detail"]["count"] for e in lines) == flood
    assert {e["object"] for e in lines} <= {"/datasets/{dataset}/records", "(no route)"}
    assert marker not in audit.path.read_text(encoding="utf-8")
    assert verify(audit.path).ok
    print(f"{flood} anonymous 401s in {elapsed:.1f} s: audit +{grown} bytes, {len(lines)} lines")


def test_an_expired_token_is_refused_with_its_reason(
    settings_with: Callable[..., Settings], tmp_path: Path
) -> None:
    expired, valid = "expired-token-0123456789", "valid-token-0123456789"
    past = datetime.now(UTC) - timedelta(minutes=1)
    policy = parse_policy(_policy_doc({"old": (expired, past), "new": (valid, LATER)}))
    audit = AuditLog(tmp_path / "audit.jsonl")

    async def scenario() -> None:
        async with _serving(_app(settings_with(), policy, audit)) as session:
            async with session.get("/datasets", headers=_auth(expired)) as resp:
                assert resp.status == 401
                body = await resp.json()
                assert body["error"] == "token_expired"
                assert "expired" in body["message"] and "new one" in body["message"]
                assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]
            async with session.get("/datasets", headers=_auth(valid)) as resp:
                assert resp.status == 200

    asyncio.run(scenario())
    refused = [e for e in _entries(audit.path) if e["action"] == "api.authenticate"]
    assert [(e["actor"], e["detail"]["reason"], e["detail"]["status"]) for e in refused] == [
        ("old", "token expired", 401)
    ]


def _write_policy(path: Path, document: dict[str, Any]) -> None:
    """The policy as TOML, replaced atomically as an editor or a deploy would."""
    lines = [
        '[shared."feedback.reports"]',
        'join_keys = ["reporter_phone"]',
        '[shared."land.parcels"]',
    ]
    for agency, table in document["agencies"].items():
        lines += [
            f"[agencies.{agency}]",
            'max_classification = "internal"',
            "datasets = [" + ", ".join(f'"{d}"' for d in table["datasets"]) + "]",
        ]
        if "token_sha256" in table:
            lines += [f'token_sha256 = "{table["token_sha256"]}"', f"token_expires = {LATER}"]
    tmp = path.with_suffix(".new")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def test_revocation_and_grants_apply_without_a_restart(
    settings_with: Callable[..., Settings], tmp_path: Path
) -> None:
    keep, revoke = "kept-token-0123456789", "revoked-token-0123456789"
    document = _policy_doc({"keep": (keep, LATER), "gone": (revoke, LATER)})
    path = tmp_path / "policy.toml"
    _write_policy(path, document)
    source = PolicyFile(path, check_s=0.05)
    audit = AuditLog(tmp_path / "audit.jsonl")

    async def status(session: aiohttp.ClientSession, token: str, url: str = "/datasets") -> int:
        async with session.get(url, headers=_auth(token)) as resp:
            return resp.status

    async def listed(session: aiohttp.ClientSession) -> list[str]:
        async with session.get("/datasets", headers=_auth(keep)) as resp:
            return [d["id"] for d in (await resp.json())["datasets"]]

    async def scenario() -> None:
        async with _serving(_app(settings_with(), source, audit)) as session:
            assert await status(session, revoke) == 200
            assert await listed(session) == ["feedback.reports"]

            del document["agencies"]["gone"]["token_sha256"]  # revoked in the file
            document["agencies"]["keep"]["datasets"] = ["feedback.reports", "land.parcels"]
            _write_policy(path, document)

            async def revoked() -> bool:
                return await status(session, revoke) == 401

            await _until(revoked, deadline_s=20)
            assert await status(session, keep) == 200
            assert await listed(session) == ["feedback.reports", "land.parcels"]

    asyncio.run(scenario())
    reloads = [e for e in _entries(audit.path) if e["action"] == "grant.policy_reloaded"]
    assert len(reloads) == 1 and reloads[0]["outcome"] == "loaded"
    assert reloads[0]["detail"]["agencies"]["keep"]["datasets"] == [
        "feedback.reports",
        "land.parcels",
    ]


def test_a_token_in_the_query_string_is_refused_and_never_logged(
    settings_with: Callable[..., Settings], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token = "query-token-0123456789-secret"
    policy = parse_policy(_policy_doc({"a": (token, LATER)}))
    audit = AuditLog(tmp_path / "audit.jsonl")

    async def scenario() -> None:
        async with _serving(_app(settings_with(), policy, audit)) as session:
            for url in (
                f"/datasets?access_token={token}",
                f"/datasets/feedback.reports/records?max=5&TOKEN={token}",
                f"/nowhere?api_key={token}",
            ):
                for headers in ({}, _auth(token)):  # refused even alongside a good header
                    async with session.get(url, headers=headers) as resp:
                        assert resp.status == 400, url
                        body = await resp.json()
                        assert body["error"] == "token_in_url"
                        assert "Authorization" in body["message"]
            # a request line the HTTP parser refuses, token and all: 400, nothing logged
            assert session._base_url is not None
            reader, writer = await asyncio.open_connection(
                session._base_url.host, session._base_url.port
            )
            line = f"GET /datasets?token={token}\x7f HTTP/1.1\r\nHost: api\r\n\r\n"
            writer.write(line.encode("latin-1"))
            await writer.drain()
            assert b" 400 " in await reader.readline()
            writer.close()
            await writer.wait_closed()

    with caplog.at_level(logging.DEBUG):
        asyncio.run(scenario())
    assert any("/datasets" in r.getMessage() and " 400 " in r.getMessage() for r in caplog.records)
    assert token not in caplog.text
    server = [r.getMessage() for r in caplog.records if r.name == "aiohttp.server"]
    assert server and all("refused (" in m and r"\x7f" not in m for m in server)
    text = audit.path.read_text(encoding="utf-8")
    assert token not in text and token_hash(token) not in text
    refused = [e for e in _entries(audit.path) if e["action"] == "api.authenticate"]
    assert refused and all(
        e["detail"]["reason"] == "credential in the query string" for e in refused
    )
    assert sum(e["detail"]["count"] for e in refused) == 6


def test_an_agencys_400_404_405_are_audited_without_the_path(
    settings_with: Callable[..., Settings], tmp_path: Path
) -> None:
    token = "agency-token-0123456789"
    policy = parse_policy(_policy_doc({"so-a": (token, LATER)}))
    audit = AuditLog(tmp_path / "audit.jsonl")
    secret = "0790000001"  # what a caller might put in a path: never in the audit log

    async def scenario() -> None:
        async with _serving(_app(settings_with(), policy, audit)) as session:
            async with session.get(f"/citizens/{secret}", headers=_auth(token)) as resp:
                assert resp.status == 404 and (await resp.json())["error"] == "not_found"
            async with session.post("/datasets", headers=_auth(token)) as resp:
                assert resp.status == 405 and "GET" in resp.headers["Allow"]
            url = "/datasets/feedback.reports/records?max=0"
            async with session.get(url, headers=_auth(token)) as resp:
                assert resp.status == 400
            # the same 404 again: counted, not written again until the interval ends
            async with session.get(f"/citizens/{secret}x", headers=_auth(token)) as resp:
                assert resp.status == 404

    asyncio.run(scenario())
    text = audit.path.read_text(encoding="utf-8")
    assert secret not in text
    requests = [e for e in _entries(audit.path) if e["action"] == "api.request"]
    firsts = [e for e in requests if "path_sha256_head" in e["detail"]]
    assert [(e["actor"], e["object"], e["detail"]["status"]) for e in firsts] == [
        ("so-a", "(no route)", 404),
        ("so-a", "(no route)", 405),
        ("so-a", "/datasets/{dataset}/records", 400),
    ]
    assert [e["detail"]["method"] for e in firsts] == ["GET", "POST", "GET"]
    assert all("address" not in e["detail"] for e in requests)  # the agency id says who
    repeated = [e for e in requests if "path_sha256_head" not in e["detail"]]
    assert [(e["detail"]["status"], e["detail"]["count"]) for e in repeated] == [(404, 1)]
    assert verify(audit.path).ok
