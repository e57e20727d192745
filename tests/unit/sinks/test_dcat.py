"""DCAT-AP JSON-LD documents of the open-data export, held against the DCAT-AP 3.0.1
SHACL shapes with pyshacl (skipped, saying where it looked, without ../shared/standards)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from rdflib import Literal, URIRef
from rdflib.namespace import XSD
from standards import (
    DCAT_AP,
    DCAT_AP_MANDATORY,
    DCAT_AP_RECOMMENDED,
    jsonld_graph,
    shacl_results,
)

from schemas.catalog import DATASETS
from sinks.dcat import (
    THEMES,
    DcatArea,
    DcatCatalog,
    DcatDataset,
    DcatFile,
    catalog_document,
    dedupe_keywords,
    theme_of,
    xsd_datetime,
)

BASE = "https://data.example.gov.vn/open/"
AREA = DcatArea("75", "Đồng Nai", 10.45, 12.30, 106.35, 107.65)
META = DcatCatalog(
    base_uri=BASE,
    publisher_name="UBND tỉnh",
    license_uri="https://creativecommons.org/licenses/by/4.0/",
    area=AREA,
    contact_email="opendata@example.gov.vn",
)
T1 = datetime(2025, 10, 9, 16, 0, tzinfo=UTC)
T2 = datetime(2025, 10, 10, 8, 0, tzinfo=timezone(timedelta(hours=7)))

needs_dcat_ap = pytest.mark.skipif(
    not all((DCAT_AP / f).is_file() for f in (*DCAT_AP_MANDATORY, *DCAT_AP_RECOMMENDED)),
    reason=f"DCAT-AP 3.0.1 SHACL shapes not found in {DCAT_AP} (../shared/standards)",
)


def dataset(ident: str, modified: datetime | None) -> DcatDataset:
    return DcatDataset(
        identifier=ident,
        title_vi="Trường học",
        title_en="Schools",
        description_vi="Mô tả",
        description_en="Description",
        publisher_id=BASE + "publishers/DNA.SGDDT",
        publisher_name="Sở Giáo dục và Đào tạo",
        modified=modified,
        files=[
            DcatFile(f"{ident}.csv", 12, "ab" * 32),
            DcatFile(f"{ident}.parquet", 34, "cd" * 32),
        ],
        keywords=[("vi", "giáo dục"), ("en", "education"), ("en", "Education")],
        theme=theme_of(ident),
        issued=T1 if modified is not None else None,
        temporal=(T1, modified) if modified is not None else None,
    )


def document() -> dict[str, object]:
    return catalog_document(
        [dataset("education.a", T1), dataset("health.b", T2), dataset("education.c", None)],
        META,
    )


def test_catalog_has_datasets_and_distributions() -> None:
    doc = json.loads(json.dumps(document()))
    assert doc["@type"] == "dcat:Catalog"
    assert doc["dct:modified"] == {"@value": "2025-10-10T01:00:00Z", "@type": "xsd:dateTime"}
    assert doc["dct:issued"] == {"@value": "2025-10-09T16:00:00Z", "@type": "xsd:dateTime"}
    first = doc["dcat:dataset"][0]
    assert first["@type"] == "dcat:Dataset" and first["dct:identifier"] == "education.a"
    assert "dct:modified" not in doc["dcat:dataset"][2]
    csv, parquet = first["dcat:distribution"]
    assert csv["dcat:downloadURL"] == {"@id": BASE + "education.a.csv"}
    assert csv["dcat:mediaType"]["@id"].endswith("/text/csv")
    assert parquet["dcat:mediaType"]["@id"].endswith("/application/vnd.apache.parquet")
    assert csv["dcat:byteSize"] == {"@value": "12", "@type": "xsd:nonNegativeInteger"}
    assert csv["spdx:checksum"]["spdx:checksumValue"] == {
        "@value": "ab" * 32,
        "@type": "xsd:hexBinary",
    }
    assert csv["spdx:checksum"]["spdx:algorithm"] == {"@id": "spdx:checksumAlgorithm_sha256"}


def test_recommended_properties_the_catalogue_knows() -> None:
    g = jsonld_graph(json.dumps(document()))
    dcat = "http://www.w3.org/ns/dcat#"
    dct = "http://purl.org/dc/terms/"
    catalog = URIRef(BASE + "catalog")
    ds = URIRef(BASE + "datasets/health.b")
    vie = URIRef("http://publications.europa.eu/resource/authority/language/VIE")
    assert g.value(catalog, URIRef(dct + "language")) == vie
    assert g.value(ds, URIRef(dct + "language")) == vie
    assert g.value(catalog, URIRef("http://xmlns.com/foaf/0.1/homepage")) == URIRef(BASE)
    assert g.value(ds, URIRef(dcat + "theme")) == URIRef(
        "http://publications.europa.eu/resource/authority/data-theme/HEAL"
    )
    assert g.value(ds, URIRef(dct + "spatial")) == URIRef(BASE + "spatial/75")
    bbox = g.value(URIRef(BASE + "spatial/75"), URIRef(dcat + "bbox"))
    assert str(bbox).startswith("POLYGON((106.35 10.45,")
    period = g.value(ds, URIRef(dct + "temporal"))
    assert g.value(period, URIRef(dcat + "startDate")) == Literal(
        "2025-10-09T16:00:00Z", datatype=XSD.dateTime
    )
    contact = g.value(ds, URIRef(dcat + "contactPoint"))
    email = g.value(contact, URIRef("http://www.w3.org/2006/vcard/ns#hasEmail"))
    assert email == URIRef("mailto:opendata@example.gov.vn")
    # keywords once each, whatever their case
    keywords = sorted(str(k) for k in g.objects(ds, URIRef(dcat + "keyword")))
    assert keywords == ["education", "giáo dục"]


def test_keywords_are_deduplicated_in_order() -> None:
    assert dedupe_keywords([("en", "a  b"), ("en", "A b"), ("vi", "a b"), ("en", " ")]) == [
        ("en", "a b"),
        ("vi", "a b"),
    ]


def test_every_catalog_domain_has_an_eu_data_theme() -> None:
    domains = {d.id.split(".", 1)[0] for d in DATASETS.values()}
    assert domains <= set(THEMES)
    assert all(theme_of(d.id) is not None for d in DATASETS.values())


def test_xsd_datetime_is_utc() -> None:
    local = datetime(2025, 1, 1, 7, 0, tzinfo=timezone(timedelta(hours=7)))
    assert xsd_datetime(local)["@value"] == "2025-01-01T00:00:00Z"


@needs_dcat_ap
def test_conforms_to_the_mandatory_and_range_shapes() -> None:
    results = shacl_results(jsonld_graph(json.dumps(document())), DCAT_AP_MANDATORY)
    assert results == [], "\n".join(map(str, results))


@needs_dcat_ap
def test_carries_every_recommended_property() -> None:
    """All of them; but a dataset with no rows yet has no time coverage to state."""
    results = shacl_results(jsonld_graph(json.dumps(document())), DCAT_AP_RECOMMENDED)
    assert [(r.focus.removeprefix(BASE), r.path.rsplit("/", 1)[-1]) for r in results] == [
        ("datasets/education.c", "temporal")
    ], "\n".join(map(str, results))


@needs_dcat_ap
def test_the_validator_sees_what_the_issue_saw() -> None:
    """The shapes are really applied: a checksum as a plain string is a violation."""
    doc = json.loads(json.dumps(document()))
    dist = doc["dcat:dataset"][0]["dcat:distribution"][0]
    dist["spdx:checksum"]["spdx:checksumValue"] = "ab" * 32
    results = shacl_results(jsonld_graph(json.dumps(doc)), DCAT_AP_MANDATORY)
    assert [(r.severity, r.path.rsplit("#", 1)[-1]) for r in results] == [
        ("Violation", "checksumValue")
    ]
