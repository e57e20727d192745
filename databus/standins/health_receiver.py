"""A loopback stand-in for the ministry's health axis, for tests and ``make run``.

A small FHIR R4 server that stores what it receives and can be told to misbehave::

    POST /token      OAuth2 client credentials (Basic or form client auth); short-lived
                     bearer tokens; a bad secret gets 401 invalid_client
    POST /           a transaction Bundle, all or nothing, as a FHIR server (HAPI, a
                     cloud FHIR store) does it, and nothing more: ``ifNoneExist``
                     conditional creates (``201`` when created, ``200`` when one
                     exists), ``PUT Type/id`` updates (create when absent) and
                     conditional ``PUT Type?identifier=...`` updates, both
                     last-write-wins unless the entry carries ``ifMatch: W/"<versionId>"``,
                     which fails the transaction with ``412`` when the resource is at
                     another version (or absent); every write bumps ``meta.versionId``,
                     answered as ``etag``; ``urn:uuid`` references resolved inside the
                     bundle; an ``Idempotency-Key`` answered from the first response; a
                     refused entry fails the bundle with an OperationOutcome whose
                     issues name it (``expression: Bundle.entry[i]``)
                     -- or a batch Bundle of ``GET Type?identifier=system|value``
                     searches and ``GET Type/id`` reads, each answered on its own
    GET  /Type?identifier=system|value, GET /Type/id
                     a search (searchset Bundle), a read (with an ``ETag``)
    GET  /_stats     counters (JSON)
    GET  /_resources stored resources (JSON; ``?type=Encounter`` filters)
    POST /_control   {"action": "fail", "status": 503, "count": 3} | "stall" (seconds) |
                     "rate_limit" (retry_after) | "reject" (identifiers, status) |
                     "token_ttl" (seconds) | "revoke_tokens" | "clear"; ``count``
                     limits a fault to the next requests, ``for_s`` to a time window,
                     neither: until cleared

Faults apply to ``POST /`` only, before authentication, like a failing proxy in front
of the API. In process, :class:`HealthReceiver` offers the same controls as methods::

    with HealthReceiver(client_secret="s3cret") as axis:
        axis.fail(500, count=3)
        ... axis.url, axis.token_url, axis.stats(), axis.find("Encounter", system, id)
        axis.interleave(lambda: axis.apply(other_bundle))  # another sender's write,
        # applied after the client's next read and before its transaction

It enforces nothing a real FHIR server would not: no order of the bus's own (the
sink keeps it with If-Match), so what the tests see is what HAPI or a cloud FHIR store
would keep.

As a process: ``python -m databus.standins.health_receiver --port 8090 [--tls-cert cert.pem
--tls-key key.pem] [--store axis.json]``; it prints its URL and runs until stopped.
It keeps resources in memory, and in ``--store`` (rewritten after each transaction,
read back at start) when given.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import logging
import os
import secrets
import signal
import socket
import ssl
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from bus.errors import StackError
from bus.private_files import open_private

__all__ = ["HealthReceiver", "main"]

log = logging.getLogger(__name__)

_METHOD_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3}
_REASONS = {200: "OK", 201: "Created", 400: "Bad Request", 404: "Not Found"}

Predicate = Callable[[Mapping[str, Any]], bool]


@dataclass
class _Fault:
    kind: str  # fail | stall | rate_limit
    status: int = 500
    seconds: float = 0.0
    remaining: int | None = None
    until: float | None = None

    def active(self, now: float) -> bool:
        if self.until is not None and now >= self.until:
            return False
        return self.remaining is None or self.remaining > 0


class _TransactionError(Exception):
    def __init__(self, status: int, issues: list[dict[str, Any]]) -> None:
        super().__init__(status)
        self.status = status
        self.issues = issues


def _outcome(issues: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": issues}


def _issue(code: str, diagnostics: str, index: int | None = None) -> dict[str, Any]:
    issue: dict[str, Any] = {"severity": "error", "code": code, "diagnostics": diagnostics}
    if index is not None:
        issue["expression"] = [f"Bundle.entry[{index}]"]
    return issue


def _identifiers(resource: Mapping[str, Any]) -> list[tuple[str, str]]:
    found = []
    for ident in resource.get("identifier") or ():
        if isinstance(ident, Mapping):
            found.append((str(ident.get("system", "")), str(ident.get("value", ""))))
    return found


def _etag(resource: Mapping[str, Any]) -> str:
    return f'W/"{(resource.get("meta") or {}).get("versionId", "")}"'


def _version_of(if_match: str) -> str:
    """``W/"3"`` (or ``"3"``) -> ``3``."""
    tag = if_match.strip()
    tag = tag[2:] if tag.startswith("W/") else tag
    return tag.strip('"')


def _search(query: str) -> tuple[str, str]:
    """``identifier=system|value`` -> (system, value)."""
    params = parse_qs(query, keep_blank_values=True)
    token = params.get("identifier", [""])[0]
    system, sep, value = token.rpartition("|")
    if not sep or not value:
        raise ValueError(f"unsupported search {query!r}: only identifier=system|value")
    return unquote(system), unquote(value)


def _rewrite_references(node: Any, resolved: Mapping[str, str]) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "reference" and isinstance(value, str) and value in resolved:
                out[key] = resolved[value]
            else:
                out[key] = _rewrite_references(value, resolved)
        return out
    if isinstance(node, list):
        return [_rewrite_references(item, resolved) for item in node]
    return node


def _urn_references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str) and value.startswith("urn:"):
                yield value
            else:
                yield from _urn_references(value)
    elif isinstance(node, list):
        for item in node:
            yield from _urn_references(item)


class _Store:
    """Resources by type and id, with an identifier index; not thread-safe alone."""

    def __init__(self) -> None:
        self.resources: dict[str, dict[str, dict[str, Any]]] = {}

    def find(self, resource_type: str, system: str, value: str) -> list[dict[str, Any]]:
        return [
            res
            for res in self.resources.get(resource_type, {}).values()
            if (system, value) in _identifiers(res)
        ]

    def put(self, resource: dict[str, Any]) -> dict[str, Any]:
        by_id = self.resources.setdefault(resource["resourceType"], {})
        previous = by_id.get(resource["id"])
        version = int((previous or {}).get("meta", {}).get("versionId", "0")) + 1
        meta = dict(resource.get("meta") or {})
        meta["versionId"] = str(version)
        meta["lastUpdated"] = datetime.now(UTC).isoformat(timespec="milliseconds")
        stored = {**resource, "meta": meta}
        by_id[resource["id"]] = stored
        return stored

    def dump(self) -> dict[str, Any]:
        return {"resources": [r for by_id in self.resources.values() for r in by_id.values()]}

    def load(self, data: Mapping[str, Any]) -> None:
        for res in data.get("resources", ()):
            self.resources.setdefault(res["resourceType"], {})[res["id"]] = res


class HealthReceiver:
    """The loopback FHIR receiver; ``start()`` binds (port 0: a free one)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        client_id: str = "databus",
        client_secret: str = "loopback-secret",
        token_ttl_s: float = 300.0,
        ssl_context: ssl.SSLContext | None = None,
        store_path: Path | None = None,
    ) -> None:
        self._host, self._port = host, port
        self._client_id, self._client_secret = client_id, client_secret
        self._token_ttl_s = token_ttl_s
        self._ssl = ssl_context
        self._store_path = store_path
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._store = _Store()
        self._tokens: dict[str, float] = {}
        self._faults: list[_Fault] = []
        self._reject_ids: set[str] = set()
        self._reject_where: Predicate | None = None
        self._reject_status = 422
        self._reject_locate = True
        self._idempotent: dict[str, tuple[int, bytes]] = {}
        self._interleave: list[Callable[[], None]] = []
        self._stats: Counter[str] = Counter()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> HealthReceiver:
        """Bind and serve. Started again after :meth:`stop`, it answers again (the stop
        no longer drops requests) on the address it had, as a restarted server would;
        its resources stay (and are reloaded from ``store_path`` when given)."""
        if self._server is not None:
            raise StackError("health receiver: already started")
        self._stopping.clear()
        if self._store_path is not None and self._store_path.exists():
            self._store.load(json.loads(self._store_path.read_text(encoding="utf-8")))
        server = _Server((self._host, self._port), _Handler, self)
        if self._ssl is not None:
            # handshake in the connection's thread, so a bad client never blocks accept
            server.socket = self._ssl.wrap_socket(
                server.socket, server_side=True, do_handshake_on_connect=False
            )
        self._server = server
        # a restart binds the same port, so clients find the receiver where it was
        self._port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes stalled requests; they answer nothing
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        with self._lock:
            for sock in list(self._connections):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> HealthReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise StackError("health receiver: not started")
        host, port = self._server.server_address[:2]
        scheme = "https" if self._ssl is not None else "http"
        return f"{scheme}://{host if isinstance(host, str) else host.decode()}:{port}"

    @property
    def token_url(self) -> str:
        return self.url + "/token"

    # ------------------------------------------------------------------ control

    def _fault(self, fault: _Fault, count: int | None, for_s: float | None) -> None:
        fault.remaining = count
        fault.until = time.monotonic() + for_s if for_s is not None else None
        with self._lock:
            self._faults.append(fault)

    def fail(
        self, status: int = 500, *, count: int | None = None, for_s: float | None = None
    ) -> None:
        """Answer ``status`` to the next ``count`` requests / for ``for_s`` / until cleared."""
        self._fault(_Fault("fail", status=status), count, for_s)

    def stall(
        self, seconds: float, *, count: int | None = None, for_s: float | None = None
    ) -> None:
        """Wait ``seconds`` before handling each request (then handle it normally)."""
        self._fault(_Fault("stall", seconds=seconds), count, for_s)

    def rate_limit(
        self, retry_after_s: int = 1, *, count: int | None = None, for_s: float | None = None
    ) -> None:
        """Answer 429 with ``Retry-After``."""
        self._fault(_Fault("rate_limit", status=429, seconds=retry_after_s), count, for_s)

    def reject(
        self,
        identifiers: set[str] | frozenset[str] = frozenset(),
        *,
        where: Predicate | None = None,
        status: int = 422,
        locate: bool = True,
    ) -> None:
        """Refuse entries whose resource has one of ``identifiers`` (values, any system)
        or matches ``where``; the whole transaction fails with ``status``, naming the
        refused entries in the OperationOutcome unless ``locate`` is false."""
        with self._lock:
            self._reject_ids = set(identifiers)
            self._reject_where = where
            self._reject_status = status
            self._reject_locate = locate

    def interleave(self, write: Callable[[], None]) -> None:
        """Run ``write`` (another sender's write, e.g. :meth:`apply`) just before the
        next transaction is applied: after the client's read, before its write, as a
        concurrent sender would."""
        with self._lock:
            self._interleave.append(write)

    def apply(self, bundle: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        """Apply a transaction in process, as another sender's ``POST /`` would (no
        token, no fault): the status and the response Bundle or OperationOutcome."""
        with self._lock:
            try:
                response = self._transaction(dict(bundle))
            except _TransactionError as exc:
                return exc.status, _outcome(exc.issues)
            self._persist()
            return 200, response

    def set_token_ttl(self, seconds: float) -> None:
        with self._lock:
            self._token_ttl_s = seconds

    def revoke_tokens(self) -> None:
        with self._lock:
            self._tokens.clear()

    def clear(self) -> None:
        """Drop every fault and rejection rule (stored resources stay)."""
        with self._lock:
            self._faults.clear()
            self._reject_ids = set()
            self._reject_where = None

    def control(self, command: Mapping[str, Any]) -> None:
        """The JSON control API, as ``POST /_control`` takes it."""
        action = command.get("action")
        window = {"count": command.get("count"), "for_s": command.get("for_s")}
        if action == "fail":
            self.fail(int(command.get("status", 500)), **window)
        elif action == "stall":
            self.stall(float(command["seconds"]), **window)
        elif action == "rate_limit":
            self.rate_limit(int(command.get("retry_after", 1)), **window)
        elif action == "reject":
            self.reject(
                set(command.get("identifiers", ())),
                status=int(command.get("status", 422)),
                locate=bool(command.get("locate", True)),
            )
        elif action == "token_ttl":
            self.set_token_ttl(float(command["seconds"]))
        elif action == "revoke_tokens":
            self.revoke_tokens()
        elif action == "clear":
            self.clear()
        else:
            raise ValueError(f"unknown action {action!r}")

    # ------------------------------------------------------------------ inspection

    def stats(self) -> dict[str, int]:
        with self._lock:
            counts = dict(self._stats)
            counts["resources"] = sum(len(v) for v in self._store.resources.values())
            return counts

    def resources(self, resource_type: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [
                json.loads(json.dumps(res))
                for rtype, by_id in self._store.resources.items()
                if resource_type in (None, rtype)
                for res in by_id.values()
            ]

    def find(self, resource_type: str, system: str, value: str) -> list[dict[str, Any]]:
        with self._lock:
            found: list[dict[str, Any]] = json.loads(
                json.dumps(self._store.find(resource_type, system, value))
            )
        return found

    # ------------------------------------------------------------------ handling

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._stats[name] += n

    def _next_fault(self) -> tuple[float, _Fault | None]:
        """The stall to wait, and the failure to answer, for this request."""
        stall, failure = 0.0, None
        now = time.monotonic()
        with self._lock:
            self._faults = [f for f in self._faults if f.active(now)]
            for fault in self._faults:
                if fault.kind == "stall" and stall == 0.0:
                    stall = fault.seconds
                elif fault.kind != "stall" and failure is None:
                    failure = fault
                else:
                    continue
                if fault.remaining is not None:
                    fault.remaining -= 1
        return stall, failure

    def _issue_token(self, headers: Mapping[str, str], form: Mapping[str, str]) -> tuple[int, Any]:
        client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        auth = headers.get("Authorization", "")
        if auth.startswith("Basic "):
            with contextlib.suppress(ValueError):
                decoded = base64.b64decode(auth[6:]).decode("utf-8")
                client_id, _, secret = decoded.partition(":")
                client_id, secret = unquote(client_id), unquote(secret)
        if form.get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type"}
        if not (
            secrets.compare_digest(client_id, self._client_id)
            and secrets.compare_digest(secret, self._client_secret)
        ):
            self._count("token_refused")
            return 401, {"error": "invalid_client"}
        token = secrets.token_urlsafe(24)
        with self._lock:
            now = time.monotonic()
            self._tokens = {t: exp for t, exp in self._tokens.items() if exp > now}
            self._tokens[token] = now + self._token_ttl_s
            self._stats["tokens_issued"] += 1
            ttl = self._token_ttl_s
        return 200, {"access_token": token, "token_type": "Bearer", "expires_in": max(1, int(ttl))}

    def _authorized(self, headers: Mapping[str, str]) -> bool:
        auth = headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return False
        with self._lock:
            expiry = self._tokens.get(auth[7:])
        return expiry is not None and expiry > time.monotonic()

    def _refused(self, resource: Mapping[str, Any]) -> bool:
        if any(value in self._reject_ids for _, value in _identifiers(resource)):
            return True
        return self._reject_where is not None and self._reject_where(resource)

    def _search_set(self, rtype: str, query: str) -> dict[str, Any]:
        """A searchset Bundle of ``rtype`` resources with ``identifier=system|value``."""
        system, value = _search(query)
        found = self._store.find(rtype, system, value)
        return {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(found),
            "entry": [
                {
                    "fullUrl": f"{self.url}/{rtype}/{res['id']}",
                    "resource": json.loads(json.dumps(res)),
                    "search": {"mode": "match"},
                }
                for res in found
            ],
        }

    def read(self, url: str) -> tuple[int, dict[str, Any]]:
        """``GET Type?identifier=...`` or ``GET Type/id``: status and body (a searchset,
        the resource, or an OperationOutcome)."""
        path, _, query = url.lstrip("/").partition("?")
        with self._lock:
            self._stats["reads"] += 1
            try:
                if query:
                    return 200, self._search_set(path, query)
                rtype, _, rid = path.partition("/")
                found = self._store.resources.get(rtype, {}).get(rid)
            except ValueError as exc:
                return 400, _outcome([_issue("not-supported", str(exc))])
            if not rid or found is None:
                return 404, _outcome([_issue("not-found", f"{path} not found")])
            return 200, json.loads(json.dumps(found))

    def _batch(self, bundle: Mapping[str, Any]) -> dict[str, Any]:
        """A batch of reads, each answered on its own (writes are not batched here)."""
        answers = []
        for entry in bundle.get("entry") or []:
            request = entry.get("request") if isinstance(entry, dict) else None
            if not isinstance(request, dict) or request.get("method") != "GET":
                status, body = 400, _outcome([_issue("not-supported", "only GET in a batch")])
            else:
                status, body = self.read(str(request.get("url", "")))
            response: dict[str, Any] = {"status": f"{status} {_REASONS.get(status, '')}".strip()}
            if status == 200 and body.get("resourceType") != "Bundle":
                response["etag"] = _etag(body)
            answer: dict[str, Any] = {"response": response}
            if status == 200:
                answer["resource"] = body
            else:
                response["outcome"] = body
            answers.append(answer)
        self._stats["batches"] += 1
        return {"resourceType": "Bundle", "type": "batch-response", "entry": answers}

    def _transaction(self, bundle: Any) -> dict[str, Any]:
        """Apply a transaction Bundle all or nothing; raises _TransactionError."""
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            raise _TransactionError(400, [_issue("structure", "expected a Bundle")])
        if bundle.get("type") != "transaction":
            raise _TransactionError(400, [_issue("not-supported", "only transaction bundles")])
        entries = bundle.get("entry") or []
        full_urls = {e.get("fullUrl") for e in entries if isinstance(e, dict)}
        issues = []
        for i, entry in enumerate(entries):
            resource, request = entry.get("resource"), entry.get("request")
            if not isinstance(resource, dict) or not isinstance(request, dict):
                issues.append(_issue("structure", "entry needs a resource and a request", i))
                continue
            if request.get("method") not in _METHOD_ORDER:
                issues.append(_issue("not-supported", f"method {request.get('method')!r}", i))
            if self._refused(resource):
                issues.append(_issue("business-rule", "resource refused by the axis", i))
            dangling = [ref for ref in _urn_references(resource) if ref not in full_urls]
            if dangling:
                issues.append(_issue("not-found", f"unresolved reference {dangling[0]}", i))
        if issues:
            refused = any(i["code"] == "business-rule" for i in issues)
            if refused and not self._reject_locate:
                issues = [{k: v for k, v in i.items() if k != "expression"} for i in issues]
            raise _TransactionError(self._reject_status if refused else 400, issues)

        store = self._store
        resolved: dict[str, str] = {}
        outcomes: dict[int, tuple[int, str]] = {}
        plan: list[tuple[int, dict[str, Any]]] = []
        deletes: list[tuple[str, str]] = []
        counts: Counter[str] = Counter()
        # identities this transaction creates: a second entry for one finds the first
        pending: dict[tuple[str, str, str], str] = {}

        def matches(rtype: str, query: str, i: int) -> list[str]:
            system, value = _search(query)
            if (rtype, system, value) in pending:
                return [pending[(rtype, system, value)]]
            found = [res["id"] for res in store.find(rtype, system, value)]
            if len(found) > 1:
                raise _TransactionError(412, [_issue("duplicate", "several matches", i)])
            return found

        def method_of(i: int) -> int:
            return _METHOD_ORDER[entries[i]["request"]["method"]]

        for i in sorted(range(len(entries)), key=method_of):
            entry = entries[i]
            resource, request = entry["resource"], entry["request"]
            rtype, method = str(resource.get("resourceType", "")), request["method"]
            full_url = str(entry.get("fullUrl", ""))
            path, _, query = str(request.get("url", "")).partition("?")
            try:
                if method == "DELETE":
                    deletes.extend((path, found) for found in matches(path, query, i))
                    outcomes[i] = (204, "")
                    continue
                if method == "POST":
                    found = (
                        matches(rtype, request["ifNoneExist"], i)
                        if request.get("ifNoneExist")
                        else []
                    )
                    if found:
                        resolved[full_url] = f"{rtype}/{found[0]}"
                        outcomes[i] = (200, f"{rtype}/{found[0]}")
                        counts["unchanged"] += 1
                        continue
                elif method == "PUT" and query:  # conditional update: last write wins
                    if path != rtype:
                        raise ValueError(f"PUT {path}?... of a {rtype}")
                    found = matches(path, query, i)
                elif method == "PUT" and "/" in path:  # update by id (create when absent)
                    path_type, _, path_id = path.partition("/")
                    if path_type != rtype or resource.get("id", path_id) != path_id:
                        raise ValueError(f"PUT {path} of a {rtype} with id {resource.get('id')}")
                    found = [path_id]
                else:
                    raise ValueError(f"unsupported {method} {request.get('url')!r}")
                new_id = found[0] if found else str(uuid.uuid4())
                target = store.resources.get(rtype, {}).get(new_id)
                if request.get("ifMatch"):
                    wanted = _version_of(str(request["ifMatch"]))
                    held = None if target is None else str(target["meta"]["versionId"])
                    if held != wanted:
                        self._stats["conflicts"] += 1
                        raise _TransactionError(
                            412,
                            [
                                _issue(
                                    "conflict",
                                    f"{rtype}/{new_id} is at version {held}, not {wanted}",
                                    i,
                                )
                            ],
                        )
                resolved[full_url] = f"{rtype}/{new_id}"
                for system, value in _identifiers(resource):
                    pending.setdefault((rtype, system, value), new_id)
                plan.append((i, {**resource, "id": new_id}))
                outcomes[i] = (200 if target is not None else 201, f"{rtype}/{new_id}")
            except (ValueError, KeyError) as exc:
                raise _TransactionError(400, [_issue("invalid", str(exc), i)]) from exc

        for path, found_id in deletes:
            store.resources.get(path, {}).pop(found_id, None)
            counts["deleted"] += 1
        etags: dict[int, str] = {}
        for i, resource in plan:
            stored = store.put(_rewrite_references(resource, resolved))
            counts["created" if outcomes[i][0] == 201 else "updated"] += 1
            where = f"{stored['resourceType']}/{stored['id']}"
            outcomes[i] = (outcomes[i][0], f"{where}/_history/{stored['meta']['versionId']}")
            etags[i] = _etag(stored)
        self._stats.update(counts)
        self._stats["largest_bundle"] = max(self._stats["largest_bundle"], len(entries))
        self._stats["transactions"] += 1
        self._stats["entries"] += len(entries)
        return {
            "resourceType": "Bundle",
            "type": "transaction-response",
            "entry": [
                {
                    "response": {
                        "status": f"{outcomes[i][0]} {_REASONS.get(outcomes[i][0], '')}".strip(),
                        **({"location": outcomes[i][1]} if outcomes[i][1] else {}),
                        **({"etag": etags[i]} if i in etags else {}),
                    }
                }
                for i in range(len(entries))
            ],
        }

    def _persist(self) -> None:
        if self._store_path is None:
            return
        tmp = self._store_path.with_suffix(self._store_path.suffix + ".tmp")
        # patients' resources: owner-only (0600), whatever the umask
        with os.fdopen(open_private(tmp, os.O_WRONLY | os.O_TRUNC), "w", encoding="utf-8") as fh:
            fh.write(json.dumps(self._store.dump(), ensure_ascii=False))
        os.replace(tmp, self._store_path)

    def handle_bundle(
        self, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        """What ``POST /`` answers: status, extra headers, body."""
        self._count("requests")
        self._count("in_flight")
        try:
            return self._handle_bundle(headers, body)
        finally:
            self._count("in_flight", -1)

    def _handle_bundle(
        self, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        stall, failure = self._next_fault()
        if stall:
            self._count("stalled")
            if self._stopping.wait(stall):
                return 503, {}, b""
        if failure is not None:
            self._count("injected_failures")
            extra = {"Retry-After": str(int(failure.seconds))} if failure.status == 429 else {}
            issue = _issue("transient", f"injected failure {failure.status}")
            return failure.status, extra, json.dumps(_outcome([issue])).encode()
        if not self._authorized(headers):
            self._count("unauthorized")
            issue = _issue("login", "missing, unknown or expired bearer token")
            auth = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
            return 401, auth, json.dumps(_outcome([issue])).encode()
        key = headers.get("Idempotency-Key")
        with self._lock:
            interleaved, self._interleave = self._interleave, []
        if interleaved and b'"transaction"' in body:
            for write in interleaved:
                write()
        elif interleaved:  # a read: the writes wait for the transaction after it
            with self._lock:
                self._interleave = interleaved + self._interleave
        with self._lock:
            if key and key in self._idempotent:
                self._stats["idempotent_replays"] += 1
                status, cached = self._idempotent[key]
                return status, {}, cached
            try:
                bundle = json.loads(body)
                if isinstance(bundle, dict) and bundle.get("type") == "batch":
                    return 200, {}, json.dumps(self._batch(bundle)).encode()
                response = self._transaction(bundle)
            except json.JSONDecodeError:
                return 400, {}, json.dumps(_outcome([_issue("structure", "not JSON")])).encode()
            except _TransactionError as exc:
                self._stats["rejected_requests"] += 1
                self._stats["rejected_entries"] += sum(1 for i in exc.issues if "expression" in i)
                return exc.status, {}, json.dumps(_outcome(exc.issues)).encode()
            encoded = json.dumps(response).encode()
            if key:
                self._idempotent[key] = (200, encoded)
            self._persist()
        return 200, {}, encoded


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[_Handler], owner: HealthReceiver):
        self.owner = owner
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.owner._lock:
            self.owner._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.owner._lock:
            self.owner._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that gave up (timeout, failed TLS handshake) is not the server's error
        log.debug("health receiver: connection from %s ended badly", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # headers and body go out in two writes: without TCP_NODELAY, Nagle and the
    # client's delayed ACK hold every response for ~40 ms
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("health receiver: " + format, *args)

    def _reply(self, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        content_type = (
            "application/fhir+json" if body.startswith(b'{"resourceType"') else "application/json"
        )
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, value: Any) -> None:
        self._reply(status, json.dumps(value).encode())

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def do_GET(self) -> None:
        owner = self.server.owner
        parts = urlsplit(self.path)
        if parts.path == "/_stats":
            self._json(200, owner.stats())
        elif parts.path == "/_resources":
            wanted = parse_qs(parts.query).get("type", [None])[0]
            self._json(200, owner.resources(wanted))
        elif parts.path.strip("/")[:1].isupper():  # a FHIR read or search
            if not owner._authorized({k: v for k, v in self.headers.items()}):
                self._json(401, _outcome([_issue("login", "missing or expired bearer token")]))
                return
            status, body = owner.read(self.path)
            extra = {"ETag": _etag(body)} if status == 200 and "meta" in body else {}
            self._reply(status, json.dumps(body).encode(), extra)
        else:
            self._json(404, _outcome([_issue("not-found", parts.path)]))

    def do_POST(self) -> None:
        owner = self.server.owner
        path = urlsplit(self.path).path.rstrip("/")
        body = self._body()
        headers = {k: v for k, v in self.headers.items()}
        if path == "/token":
            form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
            status, payload = owner._issue_token(headers, form)
            extra = {"WWW-Authenticate": "Basic"} if status == 401 else {}
            self._reply(
                status, json.dumps(payload).encode(), {"Cache-Control": "no-store", **extra}
            )
        elif path == "/_control":
            try:
                owner.control(json.loads(body or b"{}"))
            except (ValueError, KeyError, TypeError) as exc:
                self._json(400, {"error": str(exc)})
                return
            self._json(200, {"ok": True})
        elif path == "":
            status, extra, payload = owner.handle_bundle(headers, body)
            if owner._stopping.is_set():
                self.close_connection = True
                return
            self._reply(status, payload, extra)
        else:
            self._json(404, _outcome([_issue("not-found", path)]))


def _ssl_context(cert: Path, key: Path | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="loopback FHIR receiver (health axis)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--tls-cert", type=Path, help="PEM certificate (chain); enables TLS")
    parser.add_argument("--tls-key", type=Path, help="PEM key, when not in --tls-cert")
    parser.add_argument(
        "--client-id", default=os.environ.get("DATABUS_HEALTH_AXIS__CLIENT_ID", "databus")
    )
    parser.add_argument("--token-ttl", type=float, default=300.0, help="token lifetime, seconds")
    parser.add_argument("--store", type=Path, help="JSON file keeping the resources")
    args = parser.parse_args(argv)
    # the secret comes from the environment, never from the command line (ps shows it)
    secret = os.environ.get("DATABUS_HEALTH_AXIS__CLIENT_SECRET", "loopback-secret")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    receiver = HealthReceiver(
        host=args.host,
        port=args.port,
        client_id=args.client_id,
        client_secret=secret,
        token_ttl_s=args.token_ttl,
        ssl_context=_ssl_context(args.tls_cert, args.tls_key) if args.tls_cert else None,
        store_path=args.store,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    receiver.start()
    print(receiver.url, flush=True)
    try:
        stop.wait()
    finally:
        receiver.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
