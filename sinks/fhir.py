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

Idempotence — a retry or a replay never creates a second record
----------------------------------------------------------------
- op ``c`` of an Encounter or a Condition: ``POST`` with ``ifNoneExist`` on the
  business identifier; helpers (Patient, Organization stub) likewise;
- ops ``u``/``r`` and every facility event: conditional ``PUT Type?identifier=...``
  (create when absent). Facility events always update, because an encounter that
  arrived first may have left an identifier-only Organization stub;
- op ``d``: a conditional ``PUT`` of the resource marked ``entered-in-error``
  (Organization: ``active: false``), not a DELETE: the tombstone keeps its version,
  so a replayed, older create finds it and changes nothing;
- every main resource carries the source version and event id in ``meta.extension``
  (:data:`SOURCE_VERSION_URL`, :data:`SOURCE_EVENT_URL`): the receiver applies a
  ``PUT`` only when (version, event id) is greater than what it holds, so an older
  event replayed later never overwrites a newer one;
- each request carries an ``Idempotency-Key`` (:func:`idempotency_key`) derived from
  the event ids it holds.

The identifier systems below are the bus's own placeholders: before production they
must be replaced by the NamingSystem URIs the ministry registers.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

__all__ = [
    "DATASETS",
    "SOURCE_EVENT_URL",
    "SOURCE_VERSION_URL",
    "SYSTEMS",
    "Entry",
    "Mapped",
    "MappingError",
    "bundle",
    "entity_key",
    "idempotency_key",
    "map_event",
    "pseudonym",
    "source_order",
]

_BASE = "urn:databus:fhir"
SYSTEMS = {
    "facility": f"{_BASE}:id:facility-code",
    "licence": f"{_BASE}:id:facility-licence",
    "encounter": f"{_BASE}:id:encounter",
    "case": f"{_BASE}:id:disease-case",
    "patient": f"{_BASE}:id:patient-pseudonym",
    "case_subject": f"{_BASE}:id:case-subject-pseudonym",
}
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
    """One key per set of events: the same events always give the same key."""
    digest = hashlib.sha256()
    for event_id in sorted(set(event_ids)):
        digest.update(event_id.encode("ascii", "replace") + b"\n")
    return digest.hexdigest()


def source_order(event: Mapping[str, Any]) -> tuple[int, str]:
    return int(event["source"]["version"]), str(event["event_id"])


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


def _identifier(kind: str, value: str) -> dict[str, str]:
    return {"system": SYSTEMS[kind], "value": value}


def _key(resource_type: str, kind: str, value: str) -> tuple[str, str]:
    return resource_type, f"{SYSTEMS[kind]}|{value}"


def _reference(key: tuple[str, str]) -> dict[str, str]:
    return {"reference": _full_url(key)}


def _meta(event: Mapping[str, Any]) -> dict[str, Any]:
    version, event_id = source_order(event)
    return {
        "extension": [
            {"url": SOURCE_VERSION_URL, "valueDecimal": version},
            {"url": SOURCE_EVENT_URL, "valueString": event_id},
        ]
    }


def _search(key: tuple[str, str]) -> str:
    return f"identifier={key[1]}"


def _create(key: tuple[str, str], resource: dict[str, Any], *, helper: bool = False) -> Entry:
    request = {"method": "POST", "url": key[0], "ifNoneExist": _search(key)}
    return Entry(key, resource, request, helper)


def _upsert(key: tuple[str, str], resource: dict[str, Any]) -> Entry:
    return Entry(key, resource, {"method": "PUT", "url": f"{key[0]}?{_search(key)}"})


def _organization_stub(code: str) -> Entry:
    key = _key("Organization", "facility", code)
    resource = {"resourceType": "Organization", "identifier": [_identifier("facility", code)]}
    return _create(key, resource, helper=True)


def _patient(kind: str, value: str, sex: str | None, birth_year: int | None) -> Entry:
    key = _key("Patient", kind, value)
    resource: dict[str, Any] = {"resourceType": "Patient", "identifier": [_identifier(kind, value)]}
    if sex in _GENDER:
        resource["gender"] = _GENDER[sex]
    if birth_year is not None:
        resource["birthDate"] = f"{birth_year:04d}"
    return _create(key, resource, helper=True)


def _organization(event: Mapping[str, Any], rec: Mapping[str, Any], deleted: bool) -> Mapped:
    code = str(rec["facility_code"])
    identifiers = [_identifier("facility", code)]
    if rec.get("license_number"):
        identifiers.append(_identifier("licence", str(rec["license_number"])))
    resource: dict[str, Any] = {
        "resourceType": "Organization",
        "meta": _meta(event),
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
        "extension": [{"url": _EXT["commune"], "valueCode": str(rec["commune_code"])}],
    }
    if rec.get("address"):
        resource["address"] = [{"text": rec["address"], "country": "VN"}]
    key = _key("Organization", "facility", code)
    return Mapped(_upsert(key, resource), (), source_order(event))


def _encounter(
    event: Mapping[str, Any], rec: Mapping[str, Any], deleted: bool, secret: bytes
) -> Mapped:
    birth = rec.get("patient_birth_date")
    birth_year = int(_day(birth)[:4]) if birth is not None else None
    patient = _patient(
        "patient",
        pseudonym(secret, str(rec["patient_citizen_id"])),
        rec.get("patient_sex"),
        birth_year,
    )
    facility = _organization_stub(str(rec["facility_code"]))
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
        "meta": _meta(event),
        "identifier": [_identifier("encounter", str(rec["encounter_id"]))],
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
    key = _key("Encounter", "encounter", str(rec["encounter_id"]))
    main = _upsert(key, resource) if deleted or event["op"] != "c" else _create(key, resource)
    return Mapped(main, (patient, facility), source_order(event))


def _condition(
    event: Mapping[str, Any], rec: Mapping[str, Any], deleted: bool, secret: bytes
) -> Mapped:
    case_id = str(rec["case_id"])
    citizen_id = rec.get("patient_citizen_id")
    if citizen_id:
        patient = _patient("patient", pseudonym(secret, str(citizen_id)), rec.get("sex"), None)
    else:
        patient = _patient(
            "case_subject", pseudonym(secret, f"case:{case_id}"), rec.get("sex"), None
        )
    facility = _organization_stub(str(rec["reporting_facility_code"]))
    extensions: list[dict[str, Any]] = [
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
        "meta": _meta(event),
        "extension": extensions,
        "identifier": [_identifier("case", case_id)],
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
    key = _key("Condition", "case", case_id)
    main = _upsert(key, resource) if deleted or event["op"] != "c" else _create(key, resource)
    return Mapped(main, (patient, facility), source_order(event))


def _dataset(event: Mapping[str, Any]) -> str:
    source = event.get("source")
    return str(source.get("dataset", "")) if isinstance(source, Mapping) else ""


def entity_key(event: Mapping[str, Any]) -> tuple[str, str]:
    """The identity of the resource an event writes (without mapping all of it)."""
    dataset = _dataset(event)
    rec = event.get("after") or event.get("before") or {}
    field, resource_type, kind = {
        "health.facilities": ("facility_code", "Organization", "facility"),
        "health.encounters": ("encounter_id", "Encounter", "encounter"),
        "health.disease_cases": ("case_id", "Condition", "case"),
    }.get(dataset, ("", "", ""))
    if not field or field not in rec:
        raise MappingError(f"no FHIR mapping for dataset {dataset!r} or no record")
    return _key(resource_type, kind, str(rec[field]))


def map_event(event: Mapping[str, Any], secret: bytes) -> Mapped:
    """The FHIR entries of one std event; ``secret`` keys the patient pseudonyms.

    Raises :class:`MappingError` for an event no FHIR resource can represent.
    """
    dataset = _dataset(event)
    deleted = event.get("op") == "d"
    rec = event.get("before") if deleted else event.get("after")
    if not isinstance(rec, Mapping):
        raise MappingError(f"{dataset} event without a record (op {event.get('op')!r})")
    try:
        if dataset == "health.facilities":
            return _organization(event, rec, deleted)
        if dataset == "health.encounters":
            return _encounter(event, rec, deleted, secret)
        if dataset == "health.disease_cases":
            return _condition(event, rec, deleted, secret)
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
