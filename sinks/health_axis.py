"""Health axis sink: std health events pushed to the ministry as FHIR R4 transactions.

``write(batch)`` maps each event with :mod:`sinks.fhir`, keeps one entry per resource
(the newest source version when the batch holds several events of one entity), packs
the entries into transaction Bundles of at most ``bundle_max_entries`` and POSTs each
with an ``Idempotency-Key`` derived from its event ids and the versions it was conditioned on.

Version safety uses FHIR's own optimistic locking, so it holds against any FHIR
server (HAPI, cloud FHIR stores), not only the loopback receiver. Before each
transaction the sink reads the current resources with one ``batch`` of identifier
searches, then per resource: absent -> conditional create (``ifNoneExist``); held
from a source version at least the event's -> nothing sent (``stale``); older ->
``PUT Type/<id>`` with ``ifMatch: W/"<versionId>"``. A ``412`` (another writer moved
the version) or a conditional create answered ``200`` (another writer created it) makes
the sink read again and decide again, up to ``_CONFLICT_ROUNDS`` times; then the batch
fails retriably. Several resources matching one identifier refuse that event
(``reason="ambiguous"``): the server holds duplicates someone must merge. So a retry
or a replay is harmless, and an older source version arriving after a newer one
never overwrites it (see :mod:`sinks.fhir`).

Outcomes, as the sink contract (:mod:`sinks.base`) wants them:

- 5xx, 408, 425, 429, timeouts, connection errors, a token endpoint that is down:
  ``SinkError(retriable=True)``; the runner retries the whole batch. After a 429 the
  next request waits out ``Retry-After`` (at most a minute);
- 401: the token is fetched again and the request repeated once; a second 401, a
  403, or a token endpoint refusing the client credentials, and an untrusted TLS
  certificate: ``SinkError(retriable=False)`` — the sink is misconfigured, and
  dead-lettering a whole stream would be wrong;
- any other 4xx refuses *entries*. A transaction is all or nothing, so the sink finds
  the entries concerned — from the OperationOutcome's ``Bundle.entry[i]``
  expressions when the server names them, from per-entry ``response.status`` when
  it answers a Bundle, else by splitting the bundle in halves until each refused
  event stands alone — returns a :class:`~sinks.base.Rejected` for each of their
  records (``reason="http_4xx"``, the status and the trimmed response body in the
  message) and sends the rest again. A refused Patient or Organization entry refuses
  the events that reference it. The bundle holds no name or citizen id, so what the
  server echoes back holds none either.

OAuth2 client credentials: the sink fetches a bearer token from the token endpoint
(client_secret_basic), reuses it until shortly before ``expires_in`` runs out, then
fetches another; a 401 also triggers one refresh. It is an ``httpx.Auth`` flow rather
than Authlib's ``OAuth2Client``: the installed Authlib builds that client on
``httpx2``, a separate package that is no dependency of the project, whose exceptions
``httpx`` handlers would not catch.

The request rate is capped with pyrate-limiter (one request per ``1/rate_per_s``
seconds, blocking); TLS verifies against ``ca_bundle`` when given, else the system CAs.
"""

from __future__ import annotations

import json
import logging
import ssl
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from pyrate_limiter import InMemoryBucket, Limiter, Rate

from bus.errors import ConfigError, SinkError
from bus.settings import HealthAxisSettings
from sinks.base import Rejected, SinkRecord
from sinks.fhir import (
    Entry,
    Mapped,
    MappingError,
    bundle,
    guarded_update,
    idempotency_key,
    map_event,
    search_bundle,
    search_results,
)

__all__ = ["TOPICS", "HealthAxisSink"]

log = logging.getLogger(__name__)

TOPICS = ("health.facilities.std.v1", "health.encounters.std.v1", "health.disease_cases.std.v1")

_RETRIABLE_STATUS = frozenset({408, 425, 429})
_BROKEN_STATUS = frozenset({401, 403, 405})
_BODY_LIMIT = 2000
_MAX_RETRY_AFTER_S = 60.0
# Reads and writes in a row that another writer may spoil before the batch fails
# (retriably): a conflict needs a concurrent writer of the same resource.
_CONFLICT_ROUNDS = 5


def _trim(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _BODY_LIMIT else text[:_BODY_LIMIT] + "…"


def _retry_after(response: httpx.Response) -> float:
    try:
        return min(max(float(response.headers.get("Retry-After", "1")), 0.0), _MAX_RETRY_AFTER_S)
    except ValueError:  # an HTTP date: wait a second, the runner backs off anyway
        return 1.0


def _cert_untrusted(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


class _ClientCredentials(httpx.Auth):
    """Bearer tokens from an OAuth2 client-credentials grant, refreshed before expiry
    and once more on a 401."""

    requires_response_body = True

    def __init__(self, token_url: str, client_id: str, client_secret: str) -> None:
        self._token_url = token_url
        self._basic = httpx.BasicAuth(client_id, client_secret)
        self._token: str | None = None
        self._expires = 0.0
        self.fetched = 0

    def _token_request(self) -> httpx.Request:
        request = httpx.Request(
            "POST",
            self._token_url,
            data={"grant_type": "client_credentials"},
            headers={"Accept": "application/json"},
        )
        return next(self._basic.auth_flow(request))

    def _take(self, response: httpx.Response) -> None:
        status = response.status_code
        if status >= 500 or status in _RETRIABLE_STATUS:
            raise SinkError(f"health axis token endpoint answered {status}", retriable=True)
        if status != 200:
            raise SinkError(
                f"health axis token endpoint refused the client credentials ({status}): "
                f"{_trim(response.text)}",
                retriable=False,
            )
        try:
            payload = response.json()
            token = str(payload["access_token"])
            lifetime = float(payload.get("expires_in", 300))
        except (ValueError, KeyError, TypeError) as exc:
            raise SinkError("health axis token endpoint sent no token", retriable=True) from exc
        # Renew a tenth of the lifetime early (at most 30 s), so a token never
        # expires between the check and the server reading it.
        self._token = token
        self._expires = time.monotonic() + lifetime - min(30.0, lifetime / 10)
        self.fetched += 1

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self._token is None or time.monotonic() >= self._expires:
            self._take((yield self._token_request()))
        request.headers["Authorization"] = f"Bearer {self._token}"
        response = yield request
        if response.status_code == 401:
            self._take((yield self._token_request()))
            request.headers["Authorization"] = f"Bearer {self._token}"
            yield request


@dataclass
class _Unit:
    """One resource to write and the records it stands for (several events of one
    entity in a batch collapse into the newest)."""

    mapped: Mapped
    records: list[SinkRecord] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)
    write: Entry | None = None  # the main entry as the read decided it

    @property
    def main(self) -> Entry:
        return self.write or self.mapped.main


def _entries(units: Sequence[_Unit]) -> tuple[list[Entry], list[list[int]]]:
    """The bundle's entries, and for each the units that need it."""
    mains = {u.main.key for u in units}
    index: dict[tuple[str, str], int] = {}
    entries: list[Entry] = []
    owners: list[list[int]] = []
    for n, unit in enumerate(units):
        index[unit.main.key] = len(entries)
        entries.append(unit.main)
        owners.append([n])
    for n, unit in enumerate(units):
        for helper in unit.mapped.helpers:
            if helper.key in mains and helper.key in index:
                owners[index[helper.key]].append(n)  # the full resource stands for the stub
                continue
            if helper.key not in index:
                index[helper.key] = len(entries)
                entries.append(helper)
                owners.append([])
            owners[index[helper.key]].append(n)
    return entries, owners


def _size(unit: _Unit) -> int:
    return 1 + len(unit.mapped.helpers)


def _refused_entries(body: Any, count: int) -> dict[int, str]:
    """Entry index -> why, from an OperationOutcome or a response Bundle."""
    refused: dict[int, str] = {}
    if not isinstance(body, dict):
        return refused
    if body.get("resourceType") == "OperationOutcome":
        for issue in body.get("issue") or ():
            for where in (issue.get("expression") or []) + (issue.get("location") or []):
                text = str(where)
                if text.startswith("Bundle.entry[") and "]" in text:
                    digits = text[len("Bundle.entry[") : text.index("]")]
                    if digits.isdigit() and int(digits) < count:
                        refused[int(digits)] = str(issue.get("diagnostics") or issue.get("code"))
    elif body.get("resourceType") == "Bundle":
        for i, entry in enumerate((body.get("entry") or [])[:count]):
            status = str((entry.get("response") or {}).get("status", ""))
            if status[:1] == "4":
                refused[i] = status
            elif status[:1] == "5":
                raise SinkError(f"health axis entry answered {status}", retriable=True)
    return refused


class HealthAxisSink:
    """Pushes ``health.*`` std events to the ministry's FHIR API (see the module doc)."""

    def __init__(self, settings: HealthAxisSettings) -> None:
        if settings.url is None:
            raise ConfigError("DATABUS_HEALTH_AXIS__URL is not set")
        if settings.client_secret is None or settings.pseudonym_key is None:
            raise ConfigError(
                "DATABUS_HEALTH_AXIS__CLIENT_SECRET and DATABUS_HEALTH_AXIS__PSEUDONYM_KEY "
                "must be set"
            )
        local = settings.systems.local()
        if settings.is_production() and local:
            raise ConfigError(
                "the health axis is in production, so "
                + ", ".join(f"DATABUS_HEALTH_AXIS__SYSTEMS__{k.upper()}" for k in local)
                + " must be set to the Ministry of Health's identifier system URIs"
            )
        self._settings = settings
        self._url = settings.url
        self._systems = settings.systems.as_dict()
        self._secret = settings.pseudonym_key.get_secret_value().encode("utf-8")
        self._auth = _ClientCredentials(
            settings.resolved_token_url(),
            settings.client_id,
            settings.client_secret.get_secret_value(),
        )
        # one request per interval: smooth, no bursts against the ministry's API
        interval_ms = max(1, round(1000 / settings.rate_per_s))
        self._limiter = Limiter(InMemoryBucket([Rate(1, interval_ms)]), buffer_ms=1)
        self._client: httpx.Client | None = None
        self._closed = False
        self._not_before = 0.0
        self.requests = 0
        self.stale = 0  # events not sent: the server holds their version or a newer one
        self.conflicts = 0  # reads repeated after a 412 or a raced conditional create

    @property
    def tokens_fetched(self) -> int:
        return self._auth.fetched

    # ------------------------------------------------------------------ contract

    def setup(self) -> None:
        if self._closed:
            raise SinkError("health axis sink is closed", retriable=False)
        if self._client is not None:
            return
        verify: ssl.SSLContext | bool = True
        if self._settings.ca_bundle is not None:
            verify = ssl.create_default_context(cafile=str(self._settings.ca_bundle))
        timeout = self._settings.timeout_s
        self._client = httpx.Client(
            auth=self._auth,
            verify=verify,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            headers={"Accept": "application/fhir+json"},
            follow_redirects=False,
        )

    def write(self, batch: Sequence[SinkRecord]) -> Sequence[Rejected]:
        if self._client is None:
            self.setup()
        units, rejected = self._units(batch)
        chunk: list[_Unit] = []
        size = 0
        for unit in units:
            if chunk and size + _size(unit) > self._settings.bundle_max_entries:
                rejected.extend(self._send(chunk))
                chunk, size = [], 0
            chunk.append(unit)
            size += _size(unit)
        if chunk:
            rejected.extend(self._send(chunk))
        return rejected

    def flush(self) -> None:
        """Nothing is buffered: ``write`` returns after the axis answered."""

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        self._client = None
        self._closed = True

    # ------------------------------------------------------------------ internals

    def _units(self, batch: Sequence[SinkRecord]) -> tuple[list[_Unit], list[Rejected]]:
        units: dict[tuple[str, str], _Unit] = {}
        rejected: list[Rejected] = []
        for rec in batch:
            try:
                mapped = map_event(rec.value, self._secret, self._systems)
            except MappingError as exc:
                rejected.append(Rejected(rec, "malformed", str(exc), type(exc).__name__))
                continue
            unit = units.get(mapped.main.key)
            if unit is None:
                unit = units[mapped.main.key] = _Unit(mapped)
            elif mapped.order > unit.mapped.order:
                unit.mapped = mapped
            unit.records.append(rec)
            unit.event_ids.append(mapped.order[1])
        return list(units.values()), rejected

    def _post(self, payload: dict[str, Any], key: str | None) -> httpx.Response:
        client = self._client
        if client is None:
            raise SinkError("health axis sink is closed", retriable=False)
        wait = self._not_before - time.monotonic()
        if wait > 0:  # the axis asked for a pause (Retry-After)
            time.sleep(wait)
        self._limiter.try_acquire("health-axis")
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
        headers = {"Content-Type": "application/fhir+json"}
        if key is not None:
            headers["Idempotency-Key"] = key
        self.requests += 1
        try:
            return client.post(self._url, content=body.encode("utf-8"), headers=headers)
        except httpx.TimeoutException as exc:
            raise SinkError(
                f"health axis timed out after {self._settings.timeout_s}s ({type(exc).__name__})",
                retriable=True,
            ) from exc
        except httpx.TransportError as exc:
            untrusted = _cert_untrusted(exc)
            if untrusted is not None:
                raise SinkError(
                    f"health axis TLS certificate not trusted ({untrusted.verify_message}); "
                    "check DATABUS_HEALTH_AXIS__CA_BUNDLE",
                    retriable=False,
                ) from exc
            raise SinkError(
                f"health axis unreachable: {type(exc).__name__}: {exc}", retriable=True
            ) from exc

    def _raise_for_server(self, response: httpx.Response) -> None:
        """Raise for the answers no entry caused: the axis down, busy, or refusing us."""
        status = response.status_code
        if status >= 500 or status in _RETRIABLE_STATUS:
            if status == 429:
                self._not_before = time.monotonic() + _retry_after(response)
            raise SinkError(f"health axis answered {status}", retriable=True)
        if status in _BROKEN_STATUS:
            raise SinkError(
                f"health axis refused the sink ({status}): {_trim(response.text)}",
                retriable=False,
            )

    def _read(self, units: list[_Unit]) -> tuple[list[_Unit], list[Rejected]]:
        """Read the server's current resources and decide each unit's write: the units
        still to send (``write`` set), and the refused ones; stale ones are dropped."""
        keys = [u.mapped.main.key for u in units]
        response = self._post(search_bundle(keys), None)
        self._raise_for_server(response)
        if response.status_code != 200:
            raise SinkError(
                f"health axis refused the read ({response.status_code}): {_trim(response.text)}",
                retriable=False,
            )
        try:
            found = search_results(keys, response.json())
        except (ValueError, MappingError) as exc:
            raise SinkError(f"health axis read: {exc}", retriable=True) from exc
        ready: list[_Unit] = []
        rejected: list[Rejected] = []
        for unit, matches in zip(units, found, strict=True):
            if matches is None:
                raise SinkError(
                    f"health axis read of a {unit.mapped.main.key[0]} failed", retriable=True
                )
            if len(matches) > 1:
                detail = (
                    f"{len(matches)} {unit.mapped.main.key[0]} resources on the axis hold "
                    "this identifier; they must be merged there"
                )
                rejected.extend(Rejected(rec, "ambiguous", detail) for rec in unit.records)
                continue
            if not matches:
                unit.write = unit.mapped.main  # conditional create (ifNoneExist)
            elif matches[0].order is not None and matches[0].order >= unit.mapped.order:
                self.stale += len(unit.records)  # the axis holds this version or a newer one
                continue
            else:
                unit.write = guarded_update(unit.mapped.main, matches[0])
            ready.append(unit)
        return ready, rejected

    def _send(self, units: list[_Unit]) -> list[Rejected]:
        """Read, then write ``units`` until each is taken, stale or refused; read again
        what another writer changed in between."""
        rejected: list[Rejected] = []
        pending = units
        for _ in range(_CONFLICT_ROUNDS):
            if not pending:
                break
            ready, refused = self._read(pending)
            rejected.extend(refused)
            pending = []
            if ready:
                rejected.extend(self._transact(ready, pending))
            self.conflicts += len(pending)
        else:
            if pending:
                raise SinkError(
                    f"health axis: {len(pending)} resource(s) kept changing under the sink "
                    f"({_CONFLICT_ROUNDS} reads)",
                    retriable=True,
                )
        if rejected:
            log.warning("health axis refused %d record(s)", len(rejected))
        return rejected

    def _transact(self, units: list[_Unit], conflicted: list[_Unit]) -> list[Rejected]:
        """Send ``units`` as transactions until each is taken, refused, or conflicted
        (appended to ``conflicted``: to read again)."""
        rejected: list[Rejected] = []
        queue = [units]
        while queue:
            group = queue.pop()
            entries, owners = _entries(group)
            conditions = [f"{e.request['url']}@{e.request.get('ifMatch', '')}" for e in entries]
            key = idempotency_key([*(e for u in group for e in u.event_ids), *conditions])
            response = self._post(bundle(entries), key)
            self._raise_for_server(response)
            status = response.status_code
            if status == 412:  # a version moved, or a conditional write matched several
                conflicted.extend(group)
                continue
            try:
                body = response.json()
            except ValueError:
                body = None
            refused = _refused_entries(body, len(entries))
            if 200 <= status < 300 and not refused:
                conflicted.extend(_raced_creates(group, body))
                continue
            if status < 400 and not refused:
                raise SinkError(f"health axis answered {status}", retriable=False)
            bad = sorted({n for i in refused for n in owners[i]})
            if not bad and len(group) > 1:
                half = len(group) // 2  # the server did not say which: halve and ask again
                queue += [group[:half], group[half:]]
                continue
            bad = bad or [0]
            message = f"HTTP {status}: {_trim(response.text)}"
            for n in bad:
                unit = group[n]
                why = next((refused[i] for i in refused if n in owners[i]), "")
                detail = f"{message} (entry {unit.mapped.main.key[0]}: {why})" if why else message
                rejected.extend(Rejected(rec, "http_4xx", detail) for rec in unit.records)
            rest = [u for n, u in enumerate(group) if n not in set(bad)]
            if rest:
                queue.append(rest)
        return rejected


def _raced_creates(group: Sequence[_Unit], body: Any) -> list[_Unit]:
    """The units whose conditional create found a resource (``200``, not ``201``):
    another writer created it after the read, so this event was not applied."""
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        return []
    answers = body.get("entry") or []
    raced = []
    for n, unit in enumerate(group):  # the main entries come first, in unit order
        if unit.main.request["method"] != "POST" or n >= len(answers):
            continue
        status = str((answers[n].get("response") or {}).get("status", ""))
        if status.startswith("200"):
            raced.append(unit)
    return raced
