"""FHIR R4 mapping of the health datasets: shapes, identifiers, references, no personal
data in clear, idempotent request forms. Every bundle the sink builds is validated with
``fhir.resources`` (its R4B models: R4's successor with the same resources here)."""

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
from fhir.resources.R4B.bundle import Bundle

from bus.settings import HealthIdentifierSystems
from sinks import fhir
from sinks.fhir import (
    LOCAL_SYSTEMS,
    Mapped,
    MappingError,
    Match,
    bundle,
    guarded_update,
    idempotency_key,
    map_event,
    search_bundle,
    search_results,
    stored_order,
)

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
    return {ext["url"]: ext for ext in resource["extension"]}


def _valid(doc: dict[str, Any]) -> Bundle:
    """The bundle, validated by the FHIR models for real (JSON first, as it is sent)."""
    return Bundle.model_validate(json.loads(json.dumps(doc)))


SYSTEMS = LOCAL_SYSTEMS
MINISTRY = {kind: f"https://ministry.example.org/sid/{kind}" for kind in LOCAL_SYSTEMS}


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
                assert ident["system"].startswith("urn:databus:local:") and ident["value"]
            # every reference resolves inside the bundle
            assert set(_references(resource)) <= full_urls
        main = mapped.main.resource
        assert main["resourceType"] == MAIN_TYPE[dataset_id]
        ext = _source_extension(main)
        assert ext[fhir.SOURCE_VERSION_URL]["valueDecimal"] == event["source"]["version"]
        assert ext[fhir.SOURCE_EVENT_URL]["valueString"] == str(event["event_id"])
        json.dumps(doc)  # plain JSON, nothing left as datetime or UUID
        _valid(doc)


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
    # a create when the axis holds none; the sink makes it a guarded update otherwise
    assert org.request == {
        "method": "POST",
        "url": "Organization",
        "ifNoneExist": f"identifier={SYSTEMS['facility']}|{rec['facility_code']}",
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
        {
            "system": SYSTEMS["patient_pseudonym"],
            "value": fhir.pseudonym(KEY, rec["patient_citizen_id"]),
        }
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
    # as mapped, an update is a conditional create too: only the read tells the sink
    # which version the axis holds (see test_guarded_update_*)
    assert mapped.main.request == {
        "method": "POST",
        "url": "Condition",
        "ifNoneExist": f"identifier={SYSTEMS['disease_case']}|{rec['case_id']}",
    }


def test_case_without_citizen_id_gets_its_own_pseudonymous_subject() -> None:
    event = _events("health.disease_cases")[0]
    anonymous = {**event, "after": {**_record(event), "patient_citizen_id": None}}
    patient = map_event(anonymous, KEY).helpers[0].resource
    assert patient["identifier"][0]["system"] == SYSTEMS["case_subject_pseudonym"]
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
    resource = mapped.main.resource
    assert stored_order(resource) == (event["source"]["version"], str(event["event_id"]))
    _valid(bundle([guarded_update(mapped.main, Match("x1", "4", None)), *mapped.helpers]))
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


def test_local_placeholders_are_marked_local_and_match_the_settings() -> None:
    assert dict(LOCAL_SYSTEMS) == HealthIdentifierSystems().as_dict()
    assert all(uri.startswith("urn:databus:local:") for uri in LOCAL_SYSTEMS.values())
    assert fhir.SOURCE_VERSION_URL.startswith("urn:databus:local:")


@pytest.mark.parametrize("dataset_id", sorted(MAIN_TYPE))
def test_configured_identifier_systems_are_used_everywhere(dataset_id: str) -> None:
    for event in _events(dataset_id)[:20]:
        mapped = map_event(event, KEY, MINISTRY)
        doc = _valid(bundle([mapped.main, *mapped.helpers]))
        # fhir.resources types an entry's resource as the base Resource (no identifier)
        systems = {i.system for e in doc.entry or () for i in e.resource.identifier or ()}  # type: ignore[union-attr]
        assert systems and systems <= set(MINISTRY.values())
        assert mapped.main.key == fhir.entity_key(event, MINISTRY)
        assert mapped.main.request["ifNoneExist"].startswith("identifier=https://ministry.")
        assert "urn:databus:local:fhir:id" not in json.dumps(doc.model_dump(mode="json"))


def test_guarded_update_puts_by_id_with_if_match() -> None:
    event = next(e for e in _events("health.encounters") if e["op"] == "u")
    mapped = map_event(event, KEY)
    update = guarded_update(mapped.main, Match("enc-17", "3", (0, "")))
    assert update.request == {"method": "PUT", "url": "Encounter/enc-17", "ifMatch": 'W/"3"'}
    assert update.resource["id"] == "enc-17"
    assert update.key == mapped.main.key and update.full_url == mapped.main.full_url
    _valid(bundle([update, *mapped.helpers]))


def test_search_bundle_and_its_results() -> None:
    events = [_events(d)[0] for d in sorted(MAIN_TYPE)]
    keys = [map_event(e, KEY).main.key for e in events]
    doc = search_bundle(keys)
    _valid(doc)
    assert doc["type"] == "batch"
    assert [e["request"]["method"] for e in doc["entry"]] == ["GET"] * 3
    assert doc["entry"][0]["request"]["url"] == f"{keys[0][0]}?identifier={keys[0][1]}"
    held = {**map_event(events[1], KEY).main.resource, "id": "e1", "meta": {"versionId": "7"}}
    response = {
        "resourceType": "Bundle",
        "type": "batch-response",
        "entry": [
            {
                "response": {"status": "200 OK"},
                "resource": {"resourceType": "Bundle", "type": "searchset"},
            },
            {
                "response": {"status": "200 OK"},
                "resource": {
                    "resourceType": "Bundle",
                    "type": "searchset",
                    "entry": [
                        {"resource": held},
                        {
                            "resource": {
                                "resourceType": "OperationOutcome",
                                "id": "o",
                                "issue": [{"severity": "warning", "code": "informational"}],
                            },
                            "search": {"mode": "outcome"},
                        },
                    ],
                },
            },
            {"response": {"status": "500 Internal Server Error"}},
        ],
    }
    _valid(response)
    empty, found, failed = search_results(keys, response)
    assert empty == [] and failed is None
    assert found == [Match("e1", "7", fhir.source_order(events[1]))]
    with pytest.raises(MappingError):
        search_results(keys[:2], response)


def test_stored_order_of_a_stub_or_foreign_resource_is_none() -> None:
    assert stored_order({"resourceType": "Organization"}) is None
    bad = {"extension": [{"url": fhir.SOURCE_VERSION_URL, "valueDecimal": "x"}]}
    assert stored_order(bad) is None
