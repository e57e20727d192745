"""Avro schema resolution: which reader type reads what a writer type wrote.

The compiled decoder (``schemas/codec/decoder.py``) must pick the reader's branch
exactly as ``fastavro.schemaless_reader`` does, or it would return something else for
the same bytes. These are fastavro's rules (1.x, its ``match_schemas`` and
``match_types``), written here on its public schema format (what
``fastavro.parse_schema`` returns) so the decoder needs nothing private of fastavro:

- a writer union is resolved later, branch by branch (the reader is kept as is);
- a reader union takes its first branch the writer's type matches;
- maps and arrays match when their values or items do; named types (record, enum,
  fixed) match by unqualified name or a reader alias, fixed also by size; a name on
  one side is looked up among that side's named types;
- primitives match when equal or promoted (int to long/float/double, long to
  float/double, float to double, string to and from bytes).

Only called when a decoder is compiled (once per writer schema), never per record.
``tests/unit/schemas/test_avro_decode.py`` checks the decoder, and so these rules,
against fastavro with and without resolution.
"""

from __future__ import annotations

from typing import Any

from fastavro.read import SchemaResolutionError

__all__ = ["SchemaResolutionError", "match_schemas", "match_types"]

_NAMED_TYPES = frozenset(("record", "enum", "fixed", "error"))
_AVRO_TYPES = frozenset(
    (
        *("boolean", "bytes", "double", "float", "int", "long", "null", "string"),
        *("fixed", "enum", "record", "error", "array", "map", "union"),
        *("request", "error_union"),
    )
)
# writer primitive -> the reader primitives it is promoted to
_PROMOTIONS = {
    "int": frozenset(("long", "float", "double")),
    "long": frozenset(("float", "double")),
    "float": frozenset(("double",)),
    "string": frozenset(("bytes",)),
    "bytes": frozenset(("string",)),
}

# {"writer": {name: schema}, "reader": {name: schema}}
NamedSchemas = dict[str, dict[str, Any]]


def match_types(writer_type: Any, reader_type: Any, named: NamedSchemas) -> bool:
    """Whether a value of ``writer_type`` can be read as ``reader_type``."""
    if isinstance(writer_type, list) or isinstance(reader_type, list):
        return True
    if isinstance(writer_type, dict) or isinstance(reader_type, dict):
        return _match(writer_type, reader_type, named) is not None
    if writer_type == reader_type or reader_type in _PROMOTIONS.get(writer_type, ()):
        return True
    writer_schema = named["writer"].get(writer_type)
    reader_schema = named["reader"].get(reader_type)
    if writer_schema is not None and reader_schema is not None:
        return match_types(writer_schema, reader_schema, named)
    return False


def match_schemas(writer: Any, reader: Any, named: NamedSchemas) -> Any:
    """The reader schema (or reader branch) that reads ``writer``'s values.

    Raises ``fastavro.read.SchemaResolutionError`` when there is none, as fastavro
    does when it reads such a record.
    """
    found = _match(writer, reader, named)
    if found is None:
        raise SchemaResolutionError(f"Schema mismatch: {writer} is not {reader}")
    return found


def _match(writer: Any, reader: Any, named: NamedSchemas) -> Any:
    if isinstance(writer, list):
        return reader  # resolved per branch once the writer's branch is known
    if isinstance(reader, list):
        return next((branch for branch in reader if match_types(writer, branch, named)), None)
    w_type = writer["type"] if isinstance(writer, dict) else writer
    r_type = reader["type"] if isinstance(reader, dict) else reader
    if w_type == r_type == "map":
        return reader if match_types(writer["values"], reader["values"], named) else None
    if w_type == r_type == "array":
        return reader if match_types(writer["items"], reader["items"], named) else None
    if w_type in _NAMED_TYPES and r_type in _NAMED_TYPES:
        if w_type == r_type == "fixed" and writer["size"] != reader["size"]:
            return None
        w_name = writer["name"].split(".")[-1]
        aliases = reader.get("aliases", [])
        if w_name == reader["name"].split(".")[-1] or writer["name"] in aliases:
            return reader
        if w_name in aliases:
            return reader
        return None
    if w_type not in _AVRO_TYPES and r_type in _NAMED_TYPES:
        return reader["name"] if match_types(w_type, reader["name"], named) else None
    if w_type in _NAMED_TYPES and r_type not in _AVRO_TYPES:
        r_named = named.get("reader", {}).get(r_type)
        if r_named is not None and match_types(writer, r_named, named):
            return r_named
        return None
    return reader if match_types(w_type, r_type, named) else None
