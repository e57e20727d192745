"""FHIR R4 mapping of the health datasets: shapes, identifiers, references, no personal
data in clear, idempotent request forms."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from sinks import fhir
from sinks.fhir import SYSTEMS, Mapped, MappingError, bundle, idempotency_key, map_event

sys.path.insert(0, str(Path(__file__).parents[2]))
from std_samples import std_events

KEY = b"pseudonym-key-for-unit-tests-0001"

MAIN_TYPE = {
    "health.facilities": "Organization",
    "health.encounters": "Encounter",
    "health.disease_cases": "Condition",
}


@cache
def _events(dataset_id: str) -> tuple[dict[str, Any], ...]:
    return tuple(std_events(dataset_id))


def _record(event: dict[str, Any]) -> dict[str, Any]:
    rec = event["after"] or event["before"]
    assert rec is not None
    return dict(rec)


def _references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference":
                yield value
            else:
                yield from _references(value)
    elif isinstance(node, list):
        for item in node:
            yield from _references(item)


def _event_bundle(mapped: Mapped) -> dict[str, Any]:
    return bundle([mapped.main, *mapped.helpers])


def _source_extension(resource: dict[str, Any]) -> dict[str, Any]:
    return {ext["url"]: ext for ext in resource["meta"]["extension"]}


@pytest.mark.parametrize("dataset_id", sorted(MAIN_TYPE))
def test_every_event_maps_to_a_valid_transaction(dataset_id: str) -> None:
    for event in _events(dataset_id):
        mapped = map_event(event, KEY)
        doc = _event_bundle(mapped)
        assert doc["resourceType"] == "Bundle" and doc["type"] == "transaction"
        full_urls = {entry["fullUrl"] for entry in doc["entry"]}
        assert len(full_urls) == len(doc["entry"])  # each identity once
        for entry in doc["entry"]:
            assert entry["fullUrl"].startswith("urn:uuid:")
            uuid.UUID(entry["fullUrl"].removeprefix("urn:uuid:"))
            resource = entry["resource"]
            assert resource["resourceType"] in {"Organization", "Encounter", "Condition", "Patient"}
            assert "id" not in resource  # the server assigns ids
            assert resource["identifier"], resource["resourceType"]
            for ident in resource["identifier"]:
                assert ident["system"].startswith("urn:") and ident["value"]
            # every reference resolves inside the bundle
            assert set(_references(resource)) <= full_urls
        main = mapped.main.resource
        assert main["resourceType"] == MAIN_TYPE[dataset_id]
        ext = _source_extension(main)
        assert ext[fhir.SOURCE_VERSION_URL]["valueDecimal"] == event["source"]["version"]
        assert ext[fhir.SOURCE_EVENT_URL]["valueString"] == str(event["event_id"])
        json.dumps(doc)  # plain JSON, nothing left as datetime or UUID


def test_organization_from_a_facility() -> None:
    event = _events("health.facilities")[0]
    rec = _record(event)
    org = map_event(event, KEY).main
    assert org.resource["identifier"][0] == {
        "system": SYSTEMS["facility"],
        "value": rec["facility_code"],
    }
    assert org.resource["name"] == rec["facility_name"]
    assert org.resource["active"] is (rec["status"] == "ACTIVE")
    # a facility always updates: an encounter may have left an identifier-only stub
    assert org.request == {
        "method": "PUT",
        "url": f"Organization?identifier={SYSTEMS['facility']}|{rec['facility_code']}",
    }
    assert map_event(event, KEY).helpers == ()


def test_encounter_references_its_patient_and_facility() -> None:
    event = next(e for e in _events("health.encounters") if e["op"] == "c")
    rec = _record(event)
    mapped = map_event(event, KEY)
    enc = mapped.main.resource
    patient, facility = mapped.helpers
    assert enc["identifier"][0]["value"] == rec["encounter_id"]
    assert enc["subject"] == {"reference": patient.full_url}
    assert enc["serviceProvider"] == {"reference": facility.full_url}
    assert enc["class"]["system"] == "http://terminology.hl7.org/CodeSystem/v3-ActCode"
    assert enc["status"] == ("finished" if rec["discharged_at"] else "in-progress")
    assert enc["period"]["start"].endswith("Z")
    assert [r["coding"][0]["code"] for r in enc["reasonCode"]] == rec["diagnosis_codes"]
    assert mapped.main.request["method"] == "POST"
    assert mapped.main.request["ifNoneExist"] == (
        f"identifier={SYSTEMS['encounter']}|{rec['encounter_id']}"
    )
    assert patient.resource["identifier"] == [
        {"system": SYSTEMS["patient"], "value": fhir.pseudonym(KEY, rec["patient_citizen_id"])}
    ]
    assert patient.resource["birthDate"] == str(rec["patient_birth_date"].year)
    assert patient.request["ifNoneExist"].startswith("identifier=")
    assert facility.resource == {
        "resourceType": "Organization",
        "identifier": [{"system": SYSTEMS["facility"], "value": rec["facility_code"]}],
    }


def test_condition_from_a_disease_case() -> None:
    event = next(e for e in _events("health.disease_cases") if e["op"] == "u")
    rec = _record(event)
    mapped = map_event(event, KEY)
    cond = mapped.main.resource
    assert cond["code"]["coding"][0] == {
        "system": "http://hl7.org/fhir/sid/icd-10",
        "code": rec["disease_code"],
        "display": rec["disease_name"],
    }
    assert cond["subject"] == {"reference": mapped.helpers[0].full_url}
    assert cond["verificationStatus"]["coding"][0]["code"] in {
        "unconfirmed",
        "provisional",
        "confirmed",
    }
    assert "clinicalStatus" in cond
    assert ("onsetDateTime" in cond) != ("onsetAge" in cond)
    # an update is a conditional PUT on the business identifier
    assert mapped.main.request == {
        "method": "PUT",
        "url": f"Condition?identifier={SYSTEMS['case']}|{rec['case_id']}",
    }


def test_case_without_citizen_id_gets_its_own_pseudonymous_subject() -> None:
    event = _events("health.disease_cases")[0]
    anonymous = {**event, "after": {**_record(event), "patient_citizen_id": None}}
    patient = map_event(anonymous, KEY).helpers[0].resource
    assert patient["identifier"][0]["system"] == SYSTEMS["case_subject"]
    other = {**anonymous, "after": {**anonymous["after"], "case_id": "CB-OTHER"}}
    assert map_event(other, KEY).helpers[0].resource["identifier"] != patient["identifier"]


def test_same_person_same_pseudonym_across_datasets_and_key_dependent() -> None:
    enc_event = _events("health.encounters")[0]
    citizen_id = _record(enc_event)["patient_citizen_id"]
    case_event = _events("health.disease_cases")[0]
    case_event = {**case_event, "after": {**_record(case_event), "patient_citizen_id": citizen_id}}
    from_encounter = map_event(enc_event, KEY).helpers[0]
    from_case = map_event(case_event, KEY).helpers[0]
    assert from_encounter.key == from_case.key
    assert from_encounter.full_url == from_case.full_url
    other_key = map_event(enc_event, b"another-pseudonym-key-0000000000").helpers[0]
    assert other_key.key != from_encounter.key


@pytest.mark.parametrize("dataset_id", sorted(MAIN_TYPE))
def test_delete_is_a_versioned_tombstone(dataset_id: str) -> None:
    event = _events(dataset_id)[0]
    deleted = {**event, "op": "d", "before": event["after"], "after": None}
    mapped = map_event(deleted, KEY)
    assert mapped.main.request["method"] == "PUT"
    resource = mapped.main.resource
    if dataset_id == "health.facilities":
        assert resource["active"] is False
    elif dataset_id == "health.encounters":
        assert resource["status"] == "entered-in-error"
    else:
        assert resource["verificationStatus"]["coding"][0]["code"] == "entered-in-error"
        assert "clinicalStatus" not in resource  # con-5


def test_no_citizen_id_name_or_card_number_in_clear() -> None:
    personal: set[str] = set()
    documents = []
    for dataset_id in ("health.encounters", "health.disease_cases"):
        for event in _events(dataset_id):
            rec = _record(event)
            for field in ("patient_citizen_id", "patient_name", "insurance_number"):
                if rec.get(field):
                    personal.add(str(rec[field]))
            if rec.get("patient_birth_date"):
                personal.add(rec["patient_birth_date"].isoformat())
            documents.append(_event_bundle(map_event(event, KEY)))
    assert len(personal) > 100
    text = json.dumps(documents, ensure_ascii=False)
    leaked = sorted(value for value in personal if value in text)
    assert not leaked, f"{len(leaked)} personal values in the FHIR output"


def test_unmappable_events_raise_mapping_error() -> None:
    event = _events("health.facilities")[0]
    with pytest.raises(MappingError, match="no FHIR mapping"):
        map_event({**event, "source": {**event["source"], "dataset": "land.parcels"}}, KEY)
    with pytest.raises(MappingError, match="without a record"):
        map_event({**event, "after": None}, KEY)
    broken = {**event, "after": {k: v for k, v in _record(event).items() if k != "facility_name"}}
    with pytest.raises(MappingError, match="facility_name"):
        map_event(broken, KEY)


def test_idempotency_key_depends_on_the_events_not_their_order() -> None:
    ids = [str(uuid.uuid4()) for _ in range(5)]
    assert idempotency_key(ids) == idempotency_key(reversed(ids))
    assert idempotency_key(ids) != idempotency_key(ids[:4])
    assert len(idempotency_key(ids)) == 64


def test_times_are_utc_instants() -> None:
    event = next(e for e in _events("health.encounters") if _record(e)["discharged_at"])
    period = map_event(event, KEY).main.resource["period"]
    start = datetime.fromisoformat(period["start"].replace("Z", "+00:00"))
    assert start == _record(event)["admitted_at"].astimezone(UTC)
    assert period["end"] >= period["start"]
