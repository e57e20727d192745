"""The ``.std.v1.avsc`` of a dataset, generated from its rules and its raw schema.

The files under ``schemas/avro/<domain>/`` are checked in (the registry and reviewers
read them); a unit test asserts each equals what ``std_schema_document`` generates, so a
rule change that alters the output must come with its schema. A schema written by hand
(``DatasetRules.schema_generated`` false: the dossiers') is left alone; the test asserts
its structure (parsing canonical form) is the generated one. Regenerate with
``python -m stream_processors.standardizers.schema``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from schemas.catalog import avro_root, get_dataset, read_schema
from schemas.catalog_check import envelope_record
from stream_processors.standardizers import RULES
from stream_processors.standardizers.engine import DatasetRules

__all__ = ["std_schema_document", "std_schema_path", "std_schema_text"]


def std_schema_path(rules: DatasetRules) -> str:
    """``<domain>/<name>.std.v1.avsc``, relative to ``schemas/avro``."""
    domain, name = rules.dataset_id.split(".")
    return f"{domain}/{name}.std.v1.avsc"


def std_schema_document(rules: DatasetRules) -> dict[str, Any]:
    dataset = get_dataset(rules.dataset_id)
    raw = json.loads(read_schema(dataset.raw_schema))
    raw_fields = {f["name"]: f for f in envelope_record(raw)["fields"]}
    fields: list[dict[str, Any]] = []
    for rule in rules.rules:
        fields += rule.avro(raw_fields)
    if rules.fields:
        by_name = {f["name"]: f for f in fields}
        fields = [by_name[name] for name in rules.fields]
    fields.append(
        {
            "name": "quality_flags",
            "type": {"type": "array", "items": "string"},
            "default": [],
            "doc": "What standardization changed or assumed, e.g. naive_time_assumed_local.",
        }
    )
    domain = rules.dataset_id.split(".")[0]
    millis = {"type": "long", "logicalType": "timestamp-millis"}
    return {
        "type": "record",
        "name": f"{rules.record}StdEvent",
        "namespace": f"vn.gov.databus.{domain}.std",
        "doc": f"{rules.doc} Written by stream_processors.standardizers; do not edit by hand.",
        "fields": [
            {"name": "event_id", "type": {"type": "string", "logicalType": "uuid"}},
            {"name": "op", "type": {"type": "enum", "name": "Op", "symbols": ["c", "u", "d", "r"]}},
            {"name": "ts_ms", "type": millis},
            {
                "name": "source",
                "type": {
                    "type": "record",
                    "name": "Source",
                    "fields": [
                        {"name": "system", "type": "string"},
                        {"name": "unit", "type": "string"},
                        {"name": "dataset", "type": "string"},
                        {"name": "ts_ms", "type": millis},
                        {"name": "version", "type": "long"},
                    ],
                },
            },
            {
                "name": "before",
                "type": ["null", {"type": "record", "name": rules.record, "fields": fields}],
                "default": None,
            },
            {"name": "after", "type": ["null", rules.record], "default": None},
        ],
    }


def std_schema_text(rules: DatasetRules) -> str:
    return json.dumps(std_schema_document(rules), ensure_ascii=False, indent=2) + "\n"


def main(argv: list[str]) -> int:
    root = Path(str(avro_root()))
    for rules in RULES.values():
        if not rules.schema_generated:
            continue
        path = root / std_schema_path(rules)
        path.write_text(std_schema_text(rules), encoding="utf-8")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
