"""DCAT-AP 3.0.1 metadata (JSON-LD) for the open-data portal.

Builds plain dicts that ``json.dumps`` writes as JSON-LD: one ``dcat:Catalog`` with a
``dcat:Dataset`` per exported dataset, each with its ``dcat:Distribution`` per file
(download URL, media type, format, byte size, SHA-256 checksum as ``spdx:checksum``
typed ``xsd:hexBinary``, licence, availability). Everything in it comes from the
catalog, the settings and the exported files, never from the clock, so the same
repository gives the same metadata byte for byte.

The document conforms to the DCAT-AP 3.0.1 SHACL shapes (mandatory, class ranges and
recommended); the tests hold it against them with pyshacl. Two consequences of the range
shapes: every node a property points to says what it is (``dct:LicenseDocument``,
``dct:MediaType``, ``skos:Concept`` with its ``skos:prefLabel``, ...), and the EU
vocabularies used are named with their authority URIs:

- themes: ``http://publications.europa.eu/resource/authority/data-theme/`` (:data:`THEMES`
  by catalog domain), in the ``dcat:themeTaxonomy`` of the catalogue;
- language: ``http://publications.europa.eu/resource/authority/language/VIE``;
- file types, access rights, the distribution's availability (``STABLE``), the
  publisher type (ADMS ``RegionalAuthority``) and the licence type (ADMS).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "CONTEXT",
    "DATA_THEME",
    "LANGUAGE",
    "LICENCE_TYPES",
    "MEDIA_TYPES",
    "THEMES",
    "DcatArea",
    "DcatCatalog",
    "DcatDataset",
    "DcatFile",
    "catalog_document",
    "dedupe_keywords",
    "theme_of",
    "xsd_datetime",
]

CONTEXT: dict[str, str] = {
    "adms": "http://www.w3.org/ns/adms#",
    "dcat": "http://www.w3.org/ns/dcat#",
    "dcatap": "http://data.europa.eu/r5r/",
    "dct": "http://purl.org/dc/terms/",
    "foaf": "http://xmlns.com/foaf/0.1/",
    "gsp": "http://www.opengis.net/ont/geosparql#",
    "skos": "http://www.w3.org/2004/02/skos/core#",
    "spdx": "http://spdx.org/rdf/terms#",
    "vcard": "http://www.w3.org/2006/vcard/ns#",
    "xsd": "http://www.w3.org/2001/XMLSchema#",
}

MEDIA_TYPES: dict[str, tuple[str, str]] = {
    # suffix: (IANA media type, EU file-type authority code)
    ".csv": ("text/csv", "CSV"),
    ".parquet": ("application/vnd.apache.parquet", "PARQUET"),
}
_IANA = "https://www.iana.org/assignments/media-types/"
_AUTHORITY = "http://publications.europa.eu/resource/authority/"
_FILE_TYPE = _AUTHORITY + "file-type/"
DATA_THEME = _AUTHORITY + "data-theme"
LANGUAGE = (_AUTHORITY + "language/VIE", "Vietnamese", "vi")
_PUBLIC_ACCESS = (_AUTHORITY + "access-right/PUBLIC", "public")
_AVAILABILITY_STABLE = (_AUTHORITY + "planned-availability/STABLE", "stable")
_REGIONAL_AUTHORITY = ("http://purl.org/adms/publishertype/RegionalAuthority", "Regional authority")
_ADMS_LICENCE_TYPE = "http://purl.org/adms/licencetype/"

# EU data themes (code, English label of the authority table; the Vietnamese keyword is
# ours) by the catalog domain (the first part of a dataset id).
THEMES: dict[str, tuple[str, str, str]] = {
    "documents": ("GOVE", "Government and public sector", "hành chính công"),
    "education": ("EDUC", "Education, culture and sport", "giáo dục"),
    "environment": ("ENVI", "Environment", "môi trường"),
    "feedback": ("GOVE", "Government and public sector", "hành chính công"),
    "health": ("HEAL", "Health", "y tế"),
    "land": ("REGI", "Regions and cities", "đất đai"),
    "publicservice": ("GOVE", "Government and public sector", "hành chính công"),
    "transport": ("TRAN", "Transport", "giao thông vận tải"),
}

# ADMS licence types of the licences a portal is likely to use; a licence not listed
# gets no dct:type (a recommended property, not a mandatory one).
LICENCE_TYPES: dict[str, tuple[str, ...]] = {
    "https://creativecommons.org/licenses/by/4.0/": ("Attribution",),
    "https://creativecommons.org/licenses/by-sa/4.0/": ("Attribution", "ShareAlike"),
    "https://creativecommons.org/publicdomain/zero/1.0/": ("PublicDomain",),
    "https://opendatacommons.org/licenses/odbl/1-0/": ("Attribution", "ShareAlike"),
}


@dataclass(frozen=True, slots=True)
class DcatFile:
    name: str
    byte_size: int
    sha256: str
    description_vi: str = ""
    description_en: str = ""


@dataclass(frozen=True, slots=True)
class DcatArea:
    """The spatial coverage: a ``dct:Location`` with its bounding box (WGS 84)."""

    code: str  # the administrative code, e.g. "75" for the province
    name: str
    min_lat: float
    max_lat: float
    min_lon: float
    max_lon: float

    def bbox_wkt(self) -> str:
        w, e, s, n = self.min_lon, self.max_lon, self.min_lat, self.max_lat
        return f"POLYGON(({w} {s},{e} {s},{e} {n},{w} {n},{w} {s}))"

    def centroid_wkt(self) -> str:
        lon = round((self.min_lon + self.max_lon) / 2, 6)
        lat = round((self.min_lat + self.max_lat) / 2, 6)
        return f"POINT({lon} {lat})"


@dataclass(frozen=True, slots=True)
class DcatCatalog:
    """What the catalogue says about itself and shares with every dataset."""

    base_uri: str
    publisher_name: str
    license_uri: str
    area: DcatArea
    homepage: str = ""  # empty: base_uri
    contact_name: str = ""  # empty: publisher_name
    contact_email: str = ""  # empty: no vcard:hasEmail
    contact_url: str = ""  # empty: the homepage
    title_vi: str = "Dữ liệu mở của tỉnh"
    title_en: str = "Open data of the province"


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
    keywords: Sequence[tuple[str, str]] = ()  # (language, keyword)
    derived_from: str | None = None
    theme: str | None = None  # EU data-theme code
    issued: datetime | None = None
    temporal: tuple[datetime, datetime] | None = None  # first and last change


def xsd_datetime(value: datetime) -> dict[str, str]:
    text = value.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return {"@value": text, "@type": "xsd:dateTime"}


def theme_of(dataset_id: str) -> str | None:
    """The EU data-theme code of a catalog dataset, by its domain."""
    found = THEMES.get(dataset_id.split(".", 1)[0])
    return found[0] if found is not None else None


def dedupe_keywords(keywords: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """Keywords in order, each (language, text) once, compared case-insensitively."""
    seen: set[tuple[str, str]] = set()
    out: list[tuple[str, str]] = []
    for lang, text in keywords:
        text = " ".join(text.split())
        key = (lang, text.casefold())
        if text and key not in seen:
            seen.add(key)
            out.append((lang, text))
    return out


def _lang(vi: str, en: str) -> list[dict[str, str]]:
    return [{"@language": "vi", "@value": vi}, {"@language": "en", "@value": en}]


def _concept(uri: str, label: str, scheme: str | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "@id": uri,
        "@type": "skos:Concept",
        "skos:prefLabel": {"@language": "en", "@value": label},
    }
    if scheme is not None:
        doc["skos:inScheme"] = {"@id": scheme}
    return doc


def _license(uri: str) -> dict[str, Any]:
    doc: dict[str, Any] = {"@id": uri, "@type": "dct:LicenseDocument"}
    kinds = LICENCE_TYPES.get(uri if uri.endswith("/") else uri + "/", ())
    if kinds:
        doc["dct:type"] = [
            _concept(_ADMS_LICENCE_TYPE + k, k, "http://purl.org/adms/licencetype/1.1")
            for k in kinds
        ]
    return doc


def _language() -> dict[str, Any]:
    uri, label, code = LANGUAGE
    return {
        "@id": uri,
        "@type": "dct:LinguisticSystem",
        "skos:prefLabel": {"@language": "en", "@value": label},
        "skos:notation": code,
    }


def _location(c: DcatCatalog) -> dict[str, Any]:
    a = c.area
    return {
        "@id": f"{c.base_uri}spatial/{a.code}",
        "@type": "dct:Location",
        "dct:identifier": a.code,
        "skos:prefLabel": {"@language": "vi", "@value": a.name},
        "dcat:bbox": {"@value": a.bbox_wkt(), "@type": "gsp:wktLiteral"},
        "dcat:centroid": {"@value": a.centroid_wkt(), "@type": "gsp:wktLiteral"},
    }


def _agent(uri: str, name: str) -> dict[str, Any]:
    kind, label = _REGIONAL_AUTHORITY
    return {
        "@id": uri,
        "@type": "foaf:Agent",
        "foaf:name": {"@language": "vi", "@value": name},
        "dct:type": _concept(kind, label, "http://purl.org/adms/publishertype/1.0"),
    }


def _contact(c: DcatCatalog) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "@id": f"{c.base_uri}contact",
        "@type": ["vcard:Kind", "vcard:Organization"],
        "vcard:fn": {"@language": "vi", "@value": c.contact_name or c.publisher_name},
        "vcard:hasURL": {"@id": c.contact_url or c.homepage or c.base_uri},
    }
    if c.contact_email:
        doc["vcard:hasEmail"] = {"@id": f"mailto:{c.contact_email}"}
    return doc


def _theme(code: str) -> dict[str, Any]:
    label = next(t[1] for t in THEMES.values() if t[0] == code)
    return _concept(f"{DATA_THEME}/{code}", label, DATA_THEME)


def _distribution(c: DcatCatalog, f: DcatFile) -> dict[str, Any]:
    suffix = "." + f.name.rsplit(".", 1)[-1]
    media, file_type = MEDIA_TYPES[suffix]
    availability, availability_label = _AVAILABILITY_STABLE
    url = f"{c.base_uri}{f.name}"
    return {
        "@id": f"{url}#distribution",
        "@type": "dcat:Distribution",
        "dct:title": f.name,
        "dct:description": _lang(
            f.description_vi or f"Tệp {file_type} {f.name}",
            f.description_en or f"{file_type} file {f.name}",
        ),
        "dcat:accessURL": {"@id": url},
        "dcat:downloadURL": {"@id": url},
        "dcat:mediaType": {"@id": _IANA + media, "@type": "dct:MediaType"},
        "dct:format": {"@id": _FILE_TYPE + file_type, "@type": "dct:MediaTypeOrExtent"},
        "dcat:byteSize": {"@value": str(f.byte_size), "@type": "xsd:nonNegativeInteger"},
        "spdx:checksum": {
            "@type": "spdx:Checksum",
            "spdx:algorithm": {"@id": "spdx:checksumAlgorithm_sha256"},
            "spdx:checksumValue": {"@value": f.sha256, "@type": "xsd:hexBinary"},
        },
        "dct:license": _license(c.license_uri),
        "dct:language": _language(),
        "dcatap:availability": _concept(availability, availability_label),
    }


def _dataset(c: DcatCatalog, d: DcatDataset) -> dict[str, Any]:
    access, access_label = _PUBLIC_ACCESS
    doc: dict[str, Any] = {
        "@id": f"{c.base_uri}datasets/{d.identifier}",
        "@type": "dcat:Dataset",
        "dct:identifier": d.identifier,
        "dct:title": _lang(d.title_vi, d.title_en),
        "dct:description": _lang(d.description_vi, d.description_en),
        "dct:publisher": _agent(d.publisher_id, d.publisher_name),
        "dcat:contactPoint": _contact(c),
        "dct:license": _license(c.license_uri),
        "dct:accessRights": {
            **_concept(access, access_label),
            "@type": ["dct:RightsStatement", "skos:Concept"],
        },
        "dct:language": _language(),
        "dct:spatial": _location(c),
        "dcat:keyword": [
            {"@language": lang, "@value": text} for lang, text in dedupe_keywords(d.keywords)
        ],
        "dcat:distribution": [_distribution(c, f) for f in d.files],
    }
    if d.theme is not None:
        doc["dcat:theme"] = _theme(d.theme)
    if d.issued is not None:
        doc["dct:issued"] = xsd_datetime(d.issued)
    if d.modified is not None:
        doc["dct:modified"] = xsd_datetime(d.modified)
    if d.temporal is not None:
        start, end = d.temporal
        doc["dct:temporal"] = {
            "@type": "dct:PeriodOfTime",
            "dcat:startDate": xsd_datetime(start),
            "dcat:endDate": xsd_datetime(end),
        }
    if d.derived_from is not None:
        doc["dct:source"] = {"@id": f"{c.base_uri}datasets/{d.derived_from}"}
    return doc


def catalog_document(datasets: Sequence[DcatDataset], catalog: DcatCatalog) -> dict[str, Any]:
    """The ``dcat:Catalog`` of the exported datasets, in the order given."""
    c = catalog
    modified = [d.modified for d in datasets if d.modified is not None]
    issued = [d.issued for d in datasets if d.issued is not None]
    doc: dict[str, Any] = {
        "@context": CONTEXT,
        "@id": f"{c.base_uri}catalog",
        "@type": "dcat:Catalog",
        "dct:title": _lang(c.title_vi, c.title_en),
        "dct:description": _lang(
            "Các bộ dữ liệu được phân loại công khai, xuất từ kho dữ liệu dùng chung.",
            "Datasets classified public, exported from the shared repository.",
        ),
        "dct:publisher": _agent(f"{c.base_uri}publisher", c.publisher_name),
        "foaf:homepage": {"@id": c.homepage or c.base_uri, "@type": "foaf:Document"},
        "dct:license": _license(c.license_uri),
        "dct:language": _language(),
        "dct:spatial": _location(c),
        "dcat:themeTaxonomy": {
            "@id": DATA_THEME,
            "@type": "skos:ConceptScheme",
            "dct:title": {"@language": "en", "@value": "Data theme"},
        },
        "dcat:dataset": [_dataset(c, d) for d in datasets],
    }
    if issued:
        doc["dct:issued"] = xsd_datetime(min(issued))
    if modified:
        doc["dct:modified"] = xsd_datetime(max(modified))
    return doc
