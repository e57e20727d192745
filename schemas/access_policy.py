"""The access policy: which datasets are shared, and which agency may read which of them.

The policy is a TOML file (the packaged sample is ``schemas/data/access_policy.toml``;
``DATABUS_ACCESS__POLICY_FILE`` names another), checked against the catalog on load:

    bus_principal = "databus"            # the bus's own Kafka principal (ACLs)

    [shared."feedback.reports"]          # published to feedback.reports.shared.v1
    join_keys = ["reporter_phone"]       # personal fields sent as <field>_hash (keyed HMAC)
                                         # every other personal field is dropped

    [agencies.so-tai-chinh]              # id: [a-z0-9-], used in group and principal names
    name = "Sở Tài chính"
    max_classification = "internal"      # public | internal: the highest it may read
    datasets = ["feedback.reports", "education.schools"]
    token_sha256 = "<hex sha256 of its API token>"   # optional: no API access without it
    token_expires = 2026-03-01T00:00:00Z # required with token_sha256: refused from then on
    principal = "agency-so-tai-chinh"    # optional: its Kafka user, default agency-<id>

Rules enforced here, so that a bad policy stops the bus instead of leaking data:
- a ``restricted`` dataset is never shared, whatever the policy says;
- personal fields never reach a shared topic in clear: each one is either a join key
  (hashed) or dropped; a join key must be a personal field of that dataset;
- an agency is granted only shared datasets at or below its ``max_classification``.

API tokens are random secrets handed to each agency; the policy keeps only their
SHA-256 (``token_hash``). A high-entropy token needs no slow hash, and comparing
digests with ``hmac.compare_digest`` keeps the check constant-time. Every token has an
expiry (``token_expires``, an offset date-time); ``databus agency-token`` prints both lines.

``PolicyFile`` re-reads the file when it changes (checked at most every ``check_s``), so
a token removed, replaced or expired early takes effect in a running API; a file that no
longer parses leaves the previous policy in force and is reported.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from time import monotonic
from typing import Any

from bus.errors import ConfigError
from schemas.catalog import CLASSIFICATIONS, DATASETS, Dataset

__all__ = [
    "POLICY_FILE",
    "AccessPolicy",
    "Agency",
    "PolicyFile",
    "ShareRule",
    "agency_group",
    "load_policy",
    "new_token",
    "token_hash",
    "unit_principal",
]

POLICY_FILE: Traversable = resources.files("schemas").joinpath("data", "access_policy.toml")

# What an agency may be cleared for: restricted data is never shared.
_SHAREABLE = ("public", "internal")
_RANK = {name: i for i, name in enumerate(CLASSIFICATIONS)}
_AGENCY_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_PRINCIPAL = re.compile(r"^[a-z0-9][a-z0-9.-]{0,252}$")
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")

log = logging.getLogger(__name__)


def token_hash(token: str) -> str:
    """What the policy stores of an API token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """A fresh API token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def agency_group(agency: str, dataset_id: str, *, api: bool = False) -> str:
    """The consumer group of an agency on one dataset; every such group starts with
    ``agency.<agency>.``, the prefix its ACLs grant."""
    return f"agency.{agency}.api.{dataset_id}" if api else f"agency.{agency}.{dataset_id}"


def unit_principal(owner_unit: str) -> str:
    """The Kafka user of a source unit: ``DNA.SYT`` -> ``unit-dna-syt``."""
    return "unit-" + re.sub(r"[^a-z0-9]+", "-", owner_unit.lower()).strip("-")


@dataclass(frozen=True)
class ShareRule:
    """How one dataset goes to its shared topic."""

    dataset_id: str
    join_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class Agency:
    id: str
    name: str
    max_classification: str
    datasets: tuple[str, ...]
    principal: str
    token_sha256: str | None = None
    token_expires: datetime | None = None  # aware; set whenever token_sha256 is

    def token_matches(self, token: str) -> bool:
        if self.token_sha256 is None:
            return False
        return hmac.compare_digest(token_hash(token), self.token_sha256)

    def token_expired(self, now: datetime) -> bool:
        return self.token_expires is not None and now >= self.token_expires


@dataclass(frozen=True)
class AccessPolicy:
    shared: Mapping[str, ShareRule]
    agencies: Mapping[str, Agency]
    bus_principal: str = "databus"

    def may_read(self, agency_id: str, dataset_id: str) -> bool:
        agency = self.agencies.get(agency_id)
        return agency is not None and dataset_id in agency.datasets

    def agency_for_token(self, token: str) -> Agency | None:
        """The agency holding ``token``; every agency is compared, in constant time each."""
        found = None
        for agency in self.agencies.values():
            if agency.token_matches(token):
                found = agency
        return found

    def shared_datasets(self, catalog: Mapping[str, Dataset] = DATASETS) -> list[Dataset]:
        return [catalog[ds] for ds in sorted(self.shared)]

    def grants(self) -> dict[str, dict[str, object]]:
        """The access each agency is granted, as the audit log records it."""
        return {
            a.id: {"max_classification": a.max_classification, "datasets": sorted(a.datasets)}
            for a in sorted(self.agencies.values(), key=lambda a: a.id)
        }


# ---- reading and checking a policy file -------------------------------------------


def _strings(where: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: must be a list of strings")
    return tuple(value)


def _only(where: str, table: Mapping[str, Any], known: set[str]) -> None:
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}")


def _share_rule(
    where: str, dataset_id: str, table: object, catalog: Mapping[str, Dataset]
) -> ShareRule:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table")
    _only(where, table, {"join_keys"})
    dataset = catalog.get(dataset_id)
    if dataset is None:
        raise ConfigError(f"{where}: {dataset_id!r} is not in the catalog")
    if dataset.classification not in _SHAREABLE:
        raise ConfigError(f"{where}: {dataset_id} is {dataset.classification}: never shared")
    join_keys = _strings(f"{where}.join_keys", table.get("join_keys", []))
    for field in join_keys:
        if field not in dataset.personal_fields:
            raise ConfigError(
                f"{where}.join_keys: {field!r} is not a personal field of {dataset_id} "
                f"(those are: {', '.join(dataset.personal_fields) or 'none'})"
            )
    return ShareRule(dataset_id, join_keys)


def _agency(
    where: str,
    agency_id: str,
    table: object,
    shared: Mapping[str, ShareRule],
    catalog: Mapping[str, Dataset],
) -> Agency:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table")
    _only(
        where,
        table,
        {"name", "max_classification", "datasets", "token_sha256", "token_expires", "principal"},
    )
    if not _AGENCY_ID.match(agency_id):
        raise ConfigError(f"{where}: the agency id must match {_AGENCY_ID.pattern}")
    name = table.get("name", agency_id)
    clearance = table.get("max_classification")
    if not isinstance(name, str):
        raise ConfigError(f"{where}.name: must be a string")
    if clearance not in _SHAREABLE:
        raise ConfigError(f"{where}.max_classification: must be one of {', '.join(_SHAREABLE)}")
    datasets = _strings(f"{where}.datasets", table.get("datasets", []))
    for ds in datasets:
        if ds not in shared:
            raise ConfigError(f"{where}.datasets: {ds!r} is not shared (no [shared.{ds!r}])")
        if _RANK[catalog[ds].classification] > _RANK[clearance]:
            raise ConfigError(
                f"{where}.datasets: {ds} is {catalog[ds].classification}, above the "
                f"agency's max_classification {clearance}"
            )
    token = table.get("token_sha256") or None
    if token is not None and (not isinstance(token, str) or not _SHA256_HEX.match(token)):
        raise ConfigError(f"{where}.token_sha256: must be 64 lowercase hex digits")
    expires = _expiry(f"{where}.token_expires", table.get("token_expires"))
    if token is not None and expires is None:
        raise ConfigError(
            f"{where}.token_expires: required with token_sha256 "
            "(`databus agency-token` prints both lines)"
        )
    principal = table.get("principal", f"agency-{agency_id}")
    if not isinstance(principal, str) or not _PRINCIPAL.match(principal):
        raise ConfigError(f"{where}.principal: must match {_PRINCIPAL.pattern}")
    return Agency(agency_id, name, clearance, datasets, principal, token, expires)


def _expiry(where: str, value: object) -> datetime | None:
    """A TOML offset date-time (or its ISO 8601 string); a bare date means its midnight UTC."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError as exc:
            raise ConfigError(f"{where}: not an ISO 8601 date-time: {value!r}") from exc
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime.combine(value, datetime.min.time(), tzinfo=UTC)
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ConfigError(
            f"{where}: must be a date-time with its offset, e.g. 2026-03-01T00:00:00Z"
        )
    return value


def parse_policy(
    document: Mapping[str, Any], source: str = "<policy>", catalog: Mapping[str, Dataset] = DATASETS
) -> AccessPolicy:
    _only(source, document, {"bus_principal", "shared", "agencies"})
    bus_principal = document.get("bus_principal", "databus")
    if not isinstance(bus_principal, str) or not _PRINCIPAL.match(bus_principal):
        raise ConfigError(f"{source}: bus_principal must match {_PRINCIPAL.pattern}")
    shared_tables = document.get("shared", {})
    agency_tables = document.get("agencies", {})
    if not isinstance(shared_tables, dict) or not isinstance(agency_tables, dict):
        raise ConfigError(f"{source}: 'shared' and 'agencies' must be tables")
    shared = {
        ds: _share_rule(f"{source}: shared.{ds}", ds, table, catalog)
        for ds, table in shared_tables.items()
    }
    agencies = {
        aid: _agency(f"{source}: agencies.{aid}", aid, table, shared, catalog)
        for aid, table in agency_tables.items()
    }
    principals = [a.principal for a in agencies.values()] + [bus_principal]
    if len(set(principals)) != len(principals):
        raise ConfigError(f"{source}: two parties share one Kafka principal")
    tokens = [a.token_sha256 for a in agencies.values() if a.token_sha256 is not None]
    if len(set(tokens)) != len(tokens):
        raise ConfigError(f"{source}: two agencies share one API token")
    return AccessPolicy(shared, agencies, bus_principal)


def load_policy(
    path: Path | Traversable | None = None, catalog: Mapping[str, Dataset] = DATASETS
) -> AccessPolicy:
    """Read and check a policy file (default: the packaged sample)."""
    source = POLICY_FILE if path is None else path
    try:
        document = tomllib.loads(source.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read the access policy: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    return parse_policy(document, str(source), catalog)


class PolicyFile:
    """The policy in force, re-read from its file when the file changes.

    ``current()`` looks at the file's inode, size and mtime at most every ``check_s``
    seconds; when they changed it reloads. A file that is missing or no longer valid
    leaves the previous policy in force and is logged (``error`` keeps the reason);
    ``generation`` counts both outcomes so a caller can audit each change once.
    ``path=None`` is the packaged sample, or ``loaded`` (tests): neither ever changes.
    """

    def __init__(
        self,
        path: Path | None = None,
        *,
        check_s: float = 2.0,
        catalog: Mapping[str, Dataset] = DATASETS,
        loaded: AccessPolicy | None = None,
    ) -> None:
        self.path = path
        self.check_s = check_s
        self._catalog = catalog
        self._signature = self._stat()
        self._policy = loaded if loaded is not None and path is None else load_policy(path, catalog)
        self._checked = monotonic()
        self.generation = 0
        self.error: str | None = None

    def _stat(self) -> tuple[int, int, int] | None:
        if self.path is None:
            return None
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def current(self) -> AccessPolicy:
        if self.path is None:
            return self._policy
        now = monotonic()
        if now - self._checked < self.check_s:
            return self._policy
        self._checked = now
        signature = self._stat()
        if signature == self._signature:
            return self._policy
        self._signature = signature
        self.generation += 1
        try:
            self._policy = load_policy(self.path, self._catalog)
        except ConfigError as exc:
            self.error = str(exc)
            log.error("access policy not reloaded, the previous one stays in force: %s", exc)
        else:
            self.error = None
            log.info("access policy reloaded from %s", self.path)
        return self._policy
