"""DCAT-AP metadata (JSON-LD) for the open-data portal.

Builds plain dicts that ``json.dumps`` writes as JSON-LD: one ``dcat:Catalog`` with a
``dcat:Dataset`` per exported dataset, each with its ``dcat:Distribution`` per file
(download URL, media type, byte size, SHA-256 checksum as ``spdx:checksum``, licence).
Everything in it comes from the catalog and the exported files, never from the clock,
so the same repository gives the same metadata byte for byte.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "CONTEXT",
    "MEDIA_TYPES",
    "DcatDataset",
    "DcatFile",
    "catalog_document",
    "xsd_datetime",
]

CONTEXT: dict[str, str] = {
    "dcat": "http://www.w3.org/ns/dcat#",
    "dct": "http://purl.org/dc/terms/",
    "foaf": "http://xmlns.com/foaf/0.1/",
    "spdx": "http://spdx.org/rdf/terms#",
    "xsd": "http://www.w3.org/2001/XMLSchema#",
}

MEDIA_TYPES: dict[str, tuple[str, str]] = {
    # suffix: (IANA media type, EU file-type authority code)
    ".csv": ("text/csv", "CSV"),
    ".parquet": ("application/vnd.apache.parquet", "PARQUET"),
}
_IANA = "https://www.iana.org/assignments/media-types/"
_FILE_TYPE = "http://publications.europa.eu/resource/authority/file-type/"


@dataclass(frozen=True, slots=True)
class DcatFile:
    name: str
    byte_size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class DcatDataset:
    identifier: str
    title_vi: str
    title_en: str
    description_vi: str
    description_en: str
    publisher_id: str
    publisher_name: str
    modified: datetime | None
    files: Sequence[DcatFile]
    keywords: Sequence[str] = ()
    derived_from: str | None = None


def xsd_datetime(value: datetime) -> dict[str, str]:
    text = value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return {"@value": text, "@type": "xsd:dateTime"}


def _lang(vi: str, en: str) -> list[dict[str, str]]:
    return [{"@language": "vi", "@value": vi}, {"@language": "en", "@value": en}]


def _distribution(base_uri: str, f: DcatFile, license_uri: str) -> dict[str, Any]:
    suffix = "." + f.name.rsplit(".", 1)[-1]
    media, file_type = MEDIA_TYPES[suffix]
    return {
        "@id": f"{base_uri}{f.name}#distribution",
        "@type": "dcat:Distribution",
        "dct:title": f.name,
        "dcat:accessURL": {"@id": f"{base_uri}{f.name}"},
        "dcat:downloadURL": {"@id": f"{base_uri}{f.name}"},
        "dcat:mediaType": {"@id": _IANA + media},
        "dct:format": {"@id": _FILE_TYPE + file_type},
        "dcat:byteSize": {"@value": str(f.byte_size), "@type": "xsd:nonNegativeInteger"},
        "spdx:checksum": {
            "@type": "spdx:Checksum",
            "spdx:algorithm": {"@id": "spdx:checksumAlgorithm_sha256"},
            "spdx:checksumValue": f.sha256,
        },
        "dct:license": {"@id": license_uri},
    }


def _dataset(base_uri: str, d: DcatDataset, license_uri: str) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "@id": f"{base_uri}datasets/{d.identifier}",
        "@type": "dcat:Dataset",
        "dct:identifier": d.identifier,
        "dct:title": _lang(d.title_vi, d.title_en),
        "dct:description": _lang(d.description_vi, d.description_en),
        "dct:publisher": {
            "@id": d.publisher_id,
            "@type": "foaf:Agent",
            "foaf:name": d.publisher_name,
        },
        "dct:license": {"@id": license_uri},
        "dct:accessRights": {
            "@id": "http://publications.europa.eu/resource/authority/access-right/PUBLIC"
        },
        "dcat:keyword": list(d.keywords),
        "dcat:distribution": [_distribution(base_uri, f, license_uri) for f in d.files],
    }
    if d.modified is not None:
        doc["dct:modified"] = xsd_datetime(d.modified)
    if d.derived_from is not None:
        doc["dct:source"] = {"@id": f"{base_uri}datasets/{d.derived_from}"}
    return doc


def catalog_document(
    datasets: Sequence[DcatDataset],
    *,
    base_uri: str,
    publisher_name: str,
    license_uri: str,
    title_vi: str = "Dữ liệu mở của tỉnh",
    title_en: str = "Open data of the province",
) -> dict[str, Any]:
    """The ``dcat:Catalog`` of the exported datasets, in the order given."""
    modified = [d.modified for d in datasets if d.modified is not None]
    doc: dict[str, Any] = {
        "@context": CONTEXT,
        "@id": f"{base_uri}catalog",
        "@type": "dcat:Catalog",
        "dct:title": _lang(title_vi, title_en),
        "dct:description": _lang(
            "Các bộ dữ liệu được phân loại công khai, xuất từ kho dữ liệu dùng chung.",
            "Datasets classified public, exported from the shared repository.",
        ),
        "dct:publisher": {
            "@id": f"{base_uri}publisher",
            "@type": "foaf:Agent",
            "foaf:name": publisher_name,
        },
        "dct:license": {"@id": license_uri},
        "dcat:dataset": [_dataset(base_uri, d, license_uri) for d in datasets],
    }
    if modified:
        doc["dct:modified"] = xsd_datetime(max(modified))
    return doc
