"""DCAT-AP JSON-LD documents of the open-data export."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

from sinks.dcat import DcatDataset, DcatFile, catalog_document, xsd_datetime

BASE = "https://data.example.gov.vn/open/"


def dataset(ident: str, modified: datetime | None) -> DcatDataset:
    return DcatDataset(
        identifier=ident,
        title_vi="Trường học",
        title_en="Schools",
        description_vi="Mô tả",
        description_en="Description",
        publisher_id="urn:databus:unit:DNA.SGDDT",
        publisher_name="Sở Giáo dục và Đào tạo",
        modified=modified,
        files=[
            DcatFile(f"{ident}.csv", 12, "ab" * 32),
            DcatFile(f"{ident}.parquet", 34, "cd" * 32),
        ],
    )


def test_catalog_has_datasets_and_distributions() -> None:
    t1 = datetime(2025, 10, 9, 16, 0, tzinfo=UTC)
    t2 = datetime(2025, 10, 10, 8, 0, tzinfo=timezone(timedelta(hours=7)))
    doc = catalog_document(
        [dataset("a.b", t1), dataset("c.d", t2), dataset("e.f", None)],
        base_uri=BASE,
        publisher_name="UBND tỉnh",
        license_uri="https://creativecommons.org/licenses/by/4.0/",
    )
    json.loads(json.dumps(doc))
    assert doc["@type"] == "dcat:Catalog"
    assert doc["dct:modified"] == {"@value": "2025-10-10T01:00:00Z", "@type": "xsd:dateTime"}
    first = doc["dcat:dataset"][0]
    assert first["@type"] == "dcat:Dataset" and first["dct:identifier"] == "a.b"
    assert "dct:modified" not in doc["dcat:dataset"][2]
    csv, parquet = first["dcat:distribution"]
    assert csv["dcat:downloadURL"] == {"@id": BASE + "a.b.csv"}
    assert csv["dcat:mediaType"]["@id"].endswith("/text/csv")
    assert parquet["dcat:mediaType"]["@id"].endswith("/application/vnd.apache.parquet")
    assert csv["dcat:byteSize"] == {"@value": "12", "@type": "xsd:nonNegativeInteger"}
    assert csv["spdx:checksum"]["spdx:checksumValue"] == "ab" * 32
    assert csv["spdx:checksum"]["spdx:algorithm"] == {"@id": "spdx:checksumAlgorithm_sha256"}


def test_xsd_datetime_is_utc() -> None:
    local = datetime(2025, 1, 1, 7, 0, tzinfo=timezone(timedelta(hours=7)))
    assert xsd_datetime(local)["@value"] == "2025-01-01T00:00:00Z"
