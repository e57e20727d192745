"""Std health events as HL7 FHIR R4 resources in transaction Bundles (pure functions).

One event maps to one *main* entry (its own resource) and the *helper* entries that
resource references, so every reference resolves inside the bundle:

    health.facilities    -> Organization  (identifier: facility code)
    health.encounters    -> Encounter     (identifier: encounter id)
                            + Patient, + Organization (the facility) as helpers
    health.disease_cases -> Condition     (identifier: case id)
                            + Patient, + Organization (the reporting facility)

The disease-case schema carries no encounter id, so a Condition is never linked to
an Encounter; the day the schema gains one, ``Condition.encounter`` goes here.

Personal data — what leaves the province
----------------------------------------
The province's rule (docs/domain.md, "Identifiers"): identifiers and personal data
leave the province only as the ministry's rules allow, and no rule allowing more was
found. So the bundle carries the least that still lets the ministry link one person's
encounters and cases:

- the Patient identifier is a **keyed pseudonym**: HMAC-SHA256 of the citizen id
  (CCCD) under ``DATABUS_HEALTH_AXIS__PSEUDONYM_KEY``, a key the province keeps.
  The same person gets the same pseudonym in every event; without the key no one
  can recompute it from a guessed citizen id (a plain hash of a 12-digit number
  could be brute-forced in minutes);
- the Patient carries its sex and **birth year only** (FHIR partial date), never
  the full birth date;
- never sent: the name, the citizen id, the health-insurance (BHYT) number (it is
  catalogued as personal; should the ministry's rules allow it, it becomes a second
  ``Patient.identifier`` in :func:`_patient`), costs;
- a disease case without a citizen id (foreign nationals) gets a Patient of its own,
  pseudonymised from the case id under a separate identifier system, so two such
  cases are never merged into one person.

Identifier systems
------------------
Every ``Identifier.system`` comes from the settings (``DATABUS_HEALTH_AXIS__SYSTEMS__*``,
:class:`bus.settings.HealthIdentifierSystems`), passed to :func:`map_event` as a mapping
kind -> URI: ``facility``, ``facility_licence``, ``encounter``, ``disease_case``,
``patient_pseudonym``, ``case_subject_pseudonym``. The defaults
(:data:`LOCAL_SYSTEMS`) are ``urn:databus:local:`` placeholders, which the settings
refuse in production: there they must be the Ministry of Health's URIs, so its server
matches a patient or a facility across senders. The code systems and extension URLs
below (facility type and level, outcomes, commune) are local too, until the ministry's
profiles name theirs.

A facility code is a national code, so a ministry URI for it is enough to match a
facility across senders. A patient pseudonym matches across senders only when they
share both its system and ``DATABUS_HEALTH_AXIS__PSEUDONYM_KEY`` (a key the ministry
would issue), or when the rules allow sending the CCCD itself under the ministry's
system; with a key of the province's own, the ministry links a person within the
province only.

Versions — an older event never overwrites a newer one, with FHIR's own means
-----------------------------------------------------------------------------
Real FHIR servers (HAPI, cloud FHIR stores) keep no promise about a client's extension:
an unconditioned or conditional ``PUT`` is last-write-wins. So the order is kept with
the server's optimistic locking, by the sink (:mod:`sinks.health_axis`):

1. every main resource carries its source version and event id in a root
   ``extension`` (:data:`SOURCE_VERSION_URL`, :data:`SOURCE_EVENT_URL`; a plain element
   every server stores and returns, unlike ``meta`` extensions, which some drop);
2. before writing, the sink reads the current resources with one ``batch`` of
   ``GET Type?identifier=system|value`` searches (:func:`search_bundle`);
3. per resource: none found -> conditional create, ``POST`` with ``ifNoneExist``
   (:func:`map_event`'s main entry as is); found with a source version
   (:func:`stored_order`) at least the event's -> nothing is sent (stale or
   duplicate); found older or without one (an identifier-only stub) -> ``PUT
   Type/<id>`` with ``ifMatch: W/"<versionId>"`` read in step 2
   (:func:`guarded_update`);
4. a writer that came in between makes the server answer ``412 Precondition
   Failed`` (the version moved) or ``200`` instead of ``201`` to a conditional create
   (someone created it): the sink reads again and decides again.

op ``d`` writes the resource marked ``entered-in-error`` (Organization: ``active:
false``), not a DELETE: the tombstone keeps its source version, so a replayed older
create finds it and changes nothing. Helpers (Patient, Organization stub) are
conditional creates (``ifNoneExist``), never updates. Each request carries an
``Idempotency-Key`` (:func:`idempotency_key`) derived from its event ids and the
versions it was conditioned on.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import quote

from bus.settings import HealthIdentifierSystems

__all__ = [
    "DATASETS",
    "LOCAL_SYSTEMS",
    "SOURCE_EVENT_URL",
    "SOURCE_VERSION_URL",
    "Entry",
    "Mapped",
    "MappingError",
    "Match",
    "bundle",
    "entity_key",
    "guarded_update",
    "idempotency_key",
    "map_event",
    "pseudonym",
    "search_bundle",
    "search_results",
    "source_order",
    "stored_order",
]

_BASE = "urn:databus:local:fhir"
LOCAL_SYSTEMS: Mapping[str, str] = HealthIdentifierSystems().as_dict()
SOURCE_VERSION_URL = f"{_BASE}:ext:source-version"
SOURCE_EVENT_URL = f"{_BASE}:ext:source-event-id"
_EXT = {
    "facility_type": f"{_BASE}:cs:facility-type",
    "facility_level": f"{_BASE}:cs:facility-level",
    "treatment_outcome": f"{_BASE}:cs:treatment-outcome",
    "case_outcome": f"{_BASE}:ext:case-outcome",
    "disease_group": f"{_BASE}:ext:notifiable-disease-group",
    "reporting_facility": f"{_BASE}:ext:reporting-facility",
    "commune": f"{_BASE}:ext:commune-code",
}
_ICD10 = "http://hl7.org/fhir/sid/icd-10"
_ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
_VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
_UCUM = "http://unitsofmeasure.org"
_URN_NAMESPACE = uuid.UUID("0b6f3d1e-2c55-5d0c-9a63-5f3c1b8e7a41")

DATASETS = ("health.facilities", "health.encounters", "health.disease_cases")

_ENCOUNTER_CLASS = {
    "OUTPATIENT": ("AMB", "ambulatory"),
    "INPATIENT": ("IMP", "inpatient encounter"),
    "DAY_TREATMENT": ("SS", "short stay"),
    "EMERGENCY": ("EMER", "emergency"),
}
_VERIFICATION_STATUS = {
    "SUSPECTED": "unconfirmed",
    "PROBABLE": "provisional",
    "CONFIRMED": "confirmed",
}
_GENDER = {"MALE": "male", "FEMALE": "female"}


class MappingError(ValueError):
    """The event cannot become a FHIR resource (unknown dataset, no record)."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One transaction entry; ``key`` is its identity (type, ``system|value``), the
    same for a helper stub and the full resource, so a bundle holds each once."""

    key: tuple[str, str]
    resource: dict[str, Any]
    request: dict[str, str]
    helper: bool = False

    @property
    def full_url(self) -> str:
        return _full_url(self.key)

    def as_json(self) -> dict[str, Any]:
        return {"fullUrl": self.full_url, "resource": self.resource, "request": self.request}


@dataclass(frozen=True, slots=True)
class Match:
    """A resource the server holds for an identity: its id, ``meta.versionId`` and the
    (source version, event id) it was written from (None: a stub, or not the bus's)."""

    id: str
    version_id: str
    order: tuple[int, str] | None


@dataclass(frozen=True, slots=True)
class Mapped:
    """What one event becomes: its main entry and the helpers it references."""

    main: Entry
    helpers: tuple[Entry, ...]
    order: tuple[int, str]  # (source version, event id): which of two events wins


def _full_url(key: tuple[str, str]) -> str:
    return f"urn:uuid:{uuid.uuid5(_URN_NAMESPACE, '|'.join(key))}"


def pseudonym(key: bytes, value: str) -> str:
    """The keyed pseudonym of a citizen id (hex HMAC-SHA256)."""
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()


def idempotency_key(event_ids: Iterable[str]) -> str:
    """One key per set of strings (event ids, and the versions a write was conditioned
    on): the same set always gives the same key, whatever the order."""
    digest = hashlib.sha256()
    for event_id in sorted(set(event_ids)):
        digest.update(event_id.encode("ascii", "replace") + b"\n")
    return digest.hexdigest()


def source_order(event: Mapping[str, Any]) -> tuple[int, str]:
    return int(event["source"]["version"]), str(event["event_id"])


def stored_order(resource: Mapping[str, Any]) -> tuple[int, str] | None:
    """The (source version, event id) a stored resource was written from; None when it
    carries none (an identifier-only stub, or a resource another sender wrote)."""
    version: int | None = None
    event_id = ""
    for ext in resource.get("extension") or ():
        if not isinstance(ext, Mapping):
            continue
        if ext.get("url") == SOURCE_VERSION_URL:
            raw = ext.get("valueDecimal", ext.get("valueInteger"))
            try:
                version = int(raw)
            except (TypeError, ValueError):
                return None
        elif ext.get("url") == SOURCE_EVENT_URL:
            event_id = str(ext.get("valueString", ""))
    return None if version is None else (version, event_id)


def _instant(value: Any) -> str:
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
    elif isinstance(value, int | float):
        moment = datetime.fromtimestamp(value / 1000, UTC)
    else:
        return str(value)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _day(value: Any) -> str:
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, int):  # Avro date: days since the epoch
        return date.fromordinal(date(1970, 1, 1).toordinal() + value).isoformat()
    return str(value)


@dataclass(frozen=True, slots=True)
class _Ctx:
    secret: bytes
    systems: Mapping[str, str]

    def identifier(self, kind: str, value: str) -> dict[str, str]:
        return {"system": self.systems[kind], "value": value}

    def key(self, resource_type: str, kind: str, value: str) -> tuple[str, str]:
        return resource_type, f"{self.systems[kind]}|{value}"


def _reference(key: tuple[str, str]) -> dict[str, str]:
    return {"reference": _full_url(key)}


def _source_extensions(event: Mapping[str, Any]) -> list[dict[str, Any]]:
    version, event_id = source_order(event)
    return [
        {"url": SOURCE_VERSION_URL, "valueDecimal": version},
        {"url": SOURCE_EVENT_URL, "valueString": event_id},
    ]


def _search(key: tuple[str, str]) -> str:
    return "identifier=" + quote(key[1], safe=":/|")


def _create(key: tuple[str, str], resource: dict[str, Any], *, helper: bool = False) -> Entry:
    request = {"method": "POST", "url": key[0], "ifNoneExist": _search(key)}
    return Entry(key, resource, request, helper)


def guarded_update(entry: Entry, match: Match) -> Entry:
    """``entry`` as an update of the server's resource ``match``, applied only while
    the server still holds the version read (``If-Match``; else 412)."""
    resource = {**entry.resource, "id": match.id}
    request = {
        "method": "PUT",
        "url": f"{entry.key[0]}/{match.id}",
        "ifMatch": f'W/"{match.version_id}"',
    }
    return Entry(entry.key, resource, request, entry.helper)


def search_bundle(keys: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """A batch Bundle reading the resources of ``keys`` (one search each)."""
    return {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": f"{key[0]}?{_search(key)}"}} for key in keys
        ],
    }


def search_results(
    keys: Sequence[tuple[str, str]], response: Mapping[str, Any]
) -> list[list[Match] | None]:
    """What the batch-response of :func:`search_bundle` found for each key: the matches,
    or None when that search failed (its status in the response is not 2xx)."""
    entries = response.get("entry") or []
    if response.get("resourceType") != "Bundle" or len(entries) != len(keys):
        raise MappingError("the read answered no batch-response of the searches sent")
    found: list[list[Match] | None] = []
    for key, entry in zip(keys, entries, strict=True):
        status = str((entry.get("response") or {}).get("status", ""))
        searchset = entry.get("resource") or {}
        if status[:1] != "2" or searchset.get("resourceType") != "Bundle":
            found.append(None)
            continue
        matches = []
        for hit in searchset.get("entry") or ():
            res = hit.get("resource") or {}
            if res.get("resourceType") != key[0] or not res.get("id"):
                continue  # e.g. an OperationOutcome with search mode "outcome"
            version_id = str((res.get("meta") or {}).get("versionId", ""))
            matches.append(Match(str(res["id"]), version_id, stored_order(res)))
        found.append(matches)
    return found


def _organization_stub(ctx: _Ctx, code: str) -> Entry:
    key = ctx.key("Organization", "facility", code)
    resource = {"resourceType": "Organization", "identifier": [ctx.identifier("facility", code)]}
    return _create(key, resource, helper=True)


def _patient(ctx: _Ctx, kind: str, value: str, sex: str | None, birth_year: int | None) -> Entry:
    key = ctx.key("Patient", kind, value)
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": [ctx.identifier(kind, value)],
    }
    if sex in _GENDER:
        resource["gender"] = _GENDER[sex]
    if birth_year is not None:
        resource["birthDate"] = f"{birth_year:04d}"
    return _create(key, resource, helper=True)


def _organization(
    ctx: _Ctx, event: Mapping[str, Any], rec: Mapping[str, Any], deleted: bool
) -> Mapped:
    code = str(rec["facility_code"])
    identifiers = [ctx.identifier("facility", code)]
    if rec.get("license_number"):
        identifiers.append(ctx.identifier("facility_licence", str(rec["license_number"])))
    resource: dict[str, Any] = {
        "resourceType": "Organization",
        "extension": [
            *_source_extensions(event),
            {"url": _EXT["commune"], "valueCode": str(rec["commune_code"])},
        ],
        "identifier": identifiers,
        "active": rec.get("status") == "ACTIVE" and not deleted,
        "name": rec["facility_name"],
        "type": [
            {
                "coding": [
                    {"system": _EXT["facility_type"], "code": str(rec["facility_type"])},
                    {"system": _EXT["facility_level"], "code": str(rec["level"])},
                ]
            }
        ],
    }
    if rec.get("address"):
        resource["address"] = [{"text": rec["address"], "country": "VN"}]
    key = ctx.key("Organization", "facility", code)
    return Mapped(_create(key, resource), (), source_order(event))


def _encounter(
    ctx: _Ctx, event: Mapping[str, Any], rec: Mapping[str, Any], deleted: bool
) -> Mapped:
    birth = rec.get("patient_birth_date")
    birth_year = int(_day(birth)[:4]) if birth is not None else None
    patient = _patient(
        ctx,
        "patient_pseudonym",
        pseudonym(ctx.secret, str(rec["patient_citizen_id"])),
        rec.get("patient_sex"),
        birth_year,
    )
    facility = _organization_stub(ctx, str(rec["facility_code"]))
    code, display = _ENCOUNTER_CLASS.get(str(rec["encounter_type"]), ("AMB", "ambulatory"))
    period = {"start": _instant(rec["admitted_at"])}
    if rec.get("discharged_at") is not None:
        period["end"] = _instant(rec["discharged_at"])
    if deleted:
        status = "entered-in-error"
    else:
        status = "finished" if rec.get("discharged_at") is not None else "in-progress"
    resource: dict[str, Any] = {
        "resourceType": "Encounter",
        "extension": _source_extensions(event),
        "identifier": [ctx.identifier("encounter", str(rec["encounter_id"]))],
        "status": status,
        "class": {"system": _ACT_CODE, "code": code, "display": display},
        "subject": _reference(patient.key),
        "serviceProvider": _reference(facility.key),
        "period": period,
    }
    reasons = [{"coding": [{"system": _ICD10, "code": str(c)}]} for c in rec["diagnosis_codes"]]
    if reasons:
        resource["reasonCode"] = reasons
    if rec.get("outcome"):
        resource["hospitalization"] = {
            "dischargeDisposition": {
                "coding": [{"system": _EXT["treatment_outcome"], "code": str(rec["outcome"])}]
            }
        }
    key = ctx.key("Encounter", "encounter", str(rec["encounter_id"]))
    return Mapped(_create(key, resource), (patient, facility), source_order(event))


def _condition(
    ctx: _Ctx, event: Mapping[str, Any], rec: Mapping[str, Any], deleted: bool
) -> Mapped:
    case_id = str(rec["case_id"])
    citizen_id = rec.get("patient_citizen_id")
    if citizen_id:
        value = pseudonym(ctx.secret, str(citizen_id))
        patient = _patient(ctx, "patient_pseudonym", value, rec.get("sex"), None)
    else:
        value = pseudonym(ctx.secret, f"case:{case_id}")
        patient = _patient(ctx, "case_subject_pseudonym", value, rec.get("sex"), None)
    facility = _organization_stub(ctx, str(rec["reporting_facility_code"]))
    extensions: list[dict[str, Any]] = [
        *_source_extensions(event),
        {"url": _EXT["reporting_facility"], "valueReference": _reference(facility.key)},
        {"url": _EXT["commune"], "valueCode": str(rec["commune_code"])},
    ]
    if rec.get("disease_group"):
        extensions.append({"url": _EXT["disease_group"], "valueCode": str(rec["disease_group"])})
    if rec.get("outcome"):
        extensions.append({"url": _EXT["case_outcome"], "valueCode": str(rec["outcome"])})
    verification = (
        "entered-in-error" if deleted else _VERIFICATION_STATUS[str(rec["classification"])]
    )
    resource: dict[str, Any] = {
        "resourceType": "Condition",
        "extension": extensions,
        "identifier": [ctx.identifier("disease_case", case_id)],
        "verificationStatus": {"coding": [{"system": _VERIFICATION, "code": verification}]},
        "code": {
            "coding": [
                {"system": _ICD10, "code": str(rec["disease_code"]), "display": rec["disease_name"]}
            ]
        },
        "subject": _reference(patient.key),
        "recordedDate": _instant(rec["reported_at"]),
    }
    if not deleted:  # con-5: no clinical status on an entered-in-error condition
        clinical = "resolved" if rec.get("outcome") == "RECOVERED" else "active"
        resource["clinicalStatus"] = {"coding": [{"system": _CLINICAL, "code": clinical}]}
    if rec.get("onset_date") is not None:
        resource["onsetDateTime"] = _day(rec["onset_date"])
    else:
        resource["onsetAge"] = {
            "value": int(rec["age_years"]),
            "unit": "a",
            "system": _UCUM,
            "code": "a",
        }
    key = ctx.key("Condition", "disease_case", case_id)
    return Mapped(_create(key, resource), (patient, facility), source_order(event))


def _dataset(event: Mapping[str, Any]) -> str:
    source = event.get("source")
    return str(source.get("dataset", "")) if isinstance(source, Mapping) else ""


def entity_key(
    event: Mapping[str, Any], systems: Mapping[str, str] = LOCAL_SYSTEMS
) -> tuple[str, str]:
    """The identity of the resource an event writes (without mapping all of it)."""
    dataset = _dataset(event)
    rec = event.get("after") or event.get("before") or {}
    field, resource_type, kind = {
        "health.facilities": ("facility_code", "Organization", "facility"),
        "health.encounters": ("encounter_id", "Encounter", "encounter"),
        "health.disease_cases": ("case_id", "Condition", "disease_case"),
    }.get(dataset, ("", "", ""))
    if not field or field not in rec:
        raise MappingError(f"no FHIR mapping for dataset {dataset!r} or no record")
    return resource_type, f"{systems[kind]}|{rec[field]}"


def map_event(
    event: Mapping[str, Any], secret: bytes, systems: Mapping[str, str] = LOCAL_SYSTEMS
) -> Mapped:
    """The FHIR entries of one std event; ``secret`` keys the patient pseudonyms,
    ``systems`` names the identifier systems (kind -> URI, as the settings give them).

    The main entry is a conditional create; the sink turns it into a guarded update
    when the server already holds an older version (see the module doc).
    Raises :class:`MappingError` for an event no FHIR resource can represent.
    """
    dataset = _dataset(event)
    deleted = event.get("op") == "d"
    rec = event.get("before") if deleted else event.get("after")
    if not isinstance(rec, Mapping):
        raise MappingError(f"{dataset} event without a record (op {event.get('op')!r})")
    ctx = _Ctx(secret, systems)
    try:
        if dataset == "health.facilities":
            return _organization(ctx, event, rec, deleted)
        if dataset == "health.encounters":
            return _encounter(ctx, event, rec, deleted)
        if dataset == "health.disease_cases":
            return _condition(ctx, event, rec, deleted)
    except (KeyError, TypeError, ValueError) as exc:
        # a field name, never a value: values may be personal
        detail = f"missing field {exc}" if isinstance(exc, KeyError) else type(exc).__name__
        raise MappingError(f"{dataset} record cannot be mapped: {detail}") from None
    raise MappingError(f"no FHIR mapping for dataset {dataset!r}")


def bundle(entries: Sequence[Entry]) -> dict[str, Any]:
    """A transaction Bundle of the entries (each identity once, as given)."""
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [entry.as_json() for entry in entries],
    }
