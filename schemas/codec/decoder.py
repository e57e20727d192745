"""Compile an Avro schema into a strict Python function that decodes one record body.

``fastavro.schemaless_reader`` interprets the schema for every record (~25 µs a
dossier event). ``compile_decoder`` writes the Python source of a decoder
specialised to one writer schema (and, optionally, one reader schema), ``exec``s
it once, and returns a function that reads the body straight from ``bytes`` with
an index. Generated source beat closures (one call per field) when measured; the
source is kept on the function as ``__avro_source__`` for reading.

The value it returns equals ``fastavro.schemaless_reader(io.BytesIO(body), writer,
reader)`` with fastavro's default options (checked with Hypothesis on every schema
under ``schemas/avro`` in ``tests/unit/schemas/test_avro_decode.py``): records as
dicts in the writer's field order, enums as their symbol, unions as the value,
``timestamp-*`` as aware UTC datetimes, ``date`` as a date, ``uuid`` as a
``uuid.UUID`` (what fastavro returns), reader-only fields as the reader's default.

Stricter than fastavro: every problem is a ``CodecError`` with the reason code the
dead-letter topic uses, never another exception, and the body must be consumed
exactly. ``truncated_payload`` when the body ends early (inside a varint too, or a
length or count that runs past the end), ``trailing_bytes`` when bytes are left,
``invalid_utf8`` for a string that is not UTF-8, ``invalid_avro`` for the rest: a
union or enum index out of range, a negative length, a varint longer than 10 bytes
or past 64 bits, an ``int`` past 32 bits, a boolean byte other than 0 or 1, a
logical value out of range (fastavro accepts the first four and guesses).

Only fastavro's public API is used: ``fastavro.parse_schema``, and
``fastavro.read.LOGICAL_READERS`` for the rarer logical types. Schema resolution
(writer != reader) follows fastavro's rules, written out in
``schemas/codec/resolution.py`` to pick branches as fastavro does: reader fields added with a
default, writer fields the reader dropped (read and discarded), renamed-namespace
records, enums (a writer symbol the reader lacks takes the reader's default),
unions on either side, and the numeric/string/bytes promotions. Anything else
raises ``UnsupportedSchemaError`` from ``compile_decoder`` so the caller falls back
to fastavro: the ``decimal`` logical type, a reader field without a default the
writer lacks, arrays of zero-width items, resolutions fastavro itself refuses.
"""

from __future__ import annotations

import copy
import datetime as _dt
import struct
import uuid
from typing import Any, Protocol

import fastavro
from fastavro.read import LOGICAL_READERS

from bus.errors import CodecError
from schemas.codec.compiler import CodeWriter, UnsupportedSchemaError, compile_function
from schemas.codec.resolution import SchemaResolutionError, match_schemas, match_types

__all__ = ["AvroDecoder", "UnsupportedSchemaError", "compile_decoder"]

_PRIMITIVES = frozenset(("null", "boolean", "int", "long", "float", "double", "bytes", "string"))
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_DAYS_SHIFT = _dt.date(1970, 1, 1).toordinal()
# Logical types fastavro converts on reading (keyed as fastavro keys them).
_INLINE_LOGICAL = {
    # timedelta(0, 0, us) is fastavro's timedelta(microseconds=...), 30% faster.
    "long-timestamp-millis": "{v} = _EPOCH + _td(0, 0, {v} * 1000)",
    "long-timestamp-micros": "{v} = _EPOCH + _td(0, 0, {v})",
    "int-date": "{v} = _fromordinal({v} + _DAYS_SHIFT)",
    "string-uuid": "{v} = _uuid({v})",
}
_CALLED_LOGICAL = (
    "long-local-timestamp-millis",
    "long-local-timestamp-micros",
    "int-time-millis",
    "long-time-micros",
)


class AvroDecoder(Protocol):
    """``decode(body, start=0)``: the datum in ``body[start:]``, which it must fill."""

    def __call__(self, data: bytes | bytearray | memoryview, start: int = 0, /) -> Any: ...


def _short() -> CodecError:
    return CodecError("truncated_payload", "the Avro body ends early")


def _invalid(problem: str) -> CodecError:
    return CodecError("invalid_avro", problem)


def _uvarint(b: bytes, i: int) -> tuple[int, int]:
    """The unsigned varint at ``b[i]`` (at most 10 bytes, below 2**64), and the next index.

    ``IndexError`` when the body ends inside it (the caller reports a truncation).
    Unrolled: a millisecond timestamp is six bytes, and a loop costs a third more.
    """
    x = b[i]
    n = x & 0x7F
    if x < 0x80:
        return n, i + 1
    x = b[i + 1]
    n |= (x & 0x7F) << 7
    if x < 0x80:
        return n, i + 2
    x = b[i + 2]
    n |= (x & 0x7F) << 14
    if x < 0x80:
        return n, i + 3
    x = b[i + 3]
    n |= (x & 0x7F) << 21
    if x < 0x80:
        return n, i + 4
    x = b[i + 4]
    n |= (x & 0x7F) << 28
    if x < 0x80:
        return n, i + 5
    x = b[i + 5]
    n |= (x & 0x7F) << 35
    if x < 0x80:
        return n, i + 6
    x = b[i + 6]
    n |= (x & 0x7F) << 42
    if x < 0x80:
        return n, i + 7
    x = b[i + 7]
    n |= (x & 0x7F) << 49
    if x < 0x80:
        return n, i + 8
    x = b[i + 8]
    n |= (x & 0x7F) << 56
    if x < 0x80:
        return n, i + 9
    x = b[i + 9]  # the tenth byte holds the 64th bit only
    if x > 1:
        raise _invalid("a varint longer than 10 bytes or past 64 bits")
    return n | (x << 63), i + 10


_new = object.__new__
_set = object.__setattr__
_UNKNOWN = uuid.SafeUUID.unknown


def _uuid(text: str) -> uuid.UUID:
    """``uuid.UUID(text)``, twice as fast for the usual spelling.

    ``UUID.__init__`` strips ``urn:``/``uuid:``/braces/hyphens and reads 32 hex
    digits with ``int(_, 16)``; a text that reads that way with only the hyphens
    removed (none of the stripped characters can be in it then) is the same UUID.
    Any other spelling goes to ``uuid.UUID``, which accepts or refuses it.
    """
    digits = text.replace("-", "")
    if len(digits) == 32:
        try:
            value = int(digits, 16)
        except ValueError:
            pass
        else:
            made: uuid.UUID = _new(uuid.UUID)
            _set(made, "int", value)
            _set(made, "is_safe", _UNKNOWN)
            return made
    return uuid.UUID(text)


_BASE_NAMESPACE: dict[str, Any] = {
    "_uv": _uvarint,
    "_short": _short,
    "_inv": _invalid,
    "_uf": struct.Struct("<f").unpack_from,
    "_ud": struct.Struct("<d").unpack_from,
    "_EPOCH": _EPOCH,
    "_DAYS_SHIFT": _DAYS_SHIFT,
    "_td": _dt.timedelta,
    "_fromordinal": _dt.date.fromordinal,
    "_uuid": _uuid,
    "_deepcopy": copy.deepcopy,
    "_float": float,
    "_range": range,
    "_len": len,
    "_bytes": bytes,
    "_CodecError": CodecError,
    "_UnicodeDecodeError": UnicodeDecodeError,
}


def compile_decoder(writer_schema: Any, reader_schema: Any = None) -> AvroDecoder:
    """A decoder of bodies written with ``writer_schema``, read as ``reader_schema``.

    Schemas parsed by fastavro or not. Raises ``UnsupportedSchemaError`` for what it
    does not compile (use ``fastavro.schemaless_reader`` then).
    """
    writer_named: dict[str, Any] = {}
    reader_named: dict[str, Any] = {}
    writer = fastavro.parse_schema(writer_schema, named_schemas=writer_named)
    reader = (
        None
        if reader_schema is None
        else fastavro.parse_schema(reader_schema, named_schemas=reader_named)
    )
    if reader is not None and reader == writer:
        reader = None  # fastavro skips resolution for the same schema, and so do we
    gen = _Generator(writer_named, reader_named)
    top = gen.function_of(writer, reader)
    gen.lines.extend(
        [
            "def decode(b, i=0, /):",
            "    if b.__class__ is not _bytes: b = _bytes(b)",
            "    L = _len(b)",
            "    try:",
            f"        v, i = {top}(b, i, L)",
            "    except IndexError: raise _short() from None",
            "    except _UnicodeDecodeError as exc:",
            "        raise _CodecError('invalid_utf8', f'a string is not UTF-8: {exc.reason}') "
            "from exc",
            # A logical value out of range (a date past 9999, a malformed UUID...).
            "    except (ValueError, OverflowError) as exc:",
            "        raise _inv(f'{exc.__class__.__name__}: {exc}') from exc",
            "    except RecursionError as exc: raise _inv('nested too deeply') from exc",
            "    if i != L: raise _CodecError('trailing_bytes', "
            "f'{L - i} bytes left after the record')",
            "    return v",
        ]
    )
    decode: AvroDecoder = compile_function(
        gen.lines, {**_BASE_NAMESPACE, **gen.consts}, "decode", "<avro-decoder>"
    )
    return decode


def _kind(schema: Any) -> str:
    """The Avro type of a resolved schema ("error" reads as a record)."""
    if isinstance(schema, list):
        return "union"
    kind = schema if isinstance(schema, str) else schema["type"]
    if not isinstance(kind, str):
        raise UnsupportedSchemaError("a nested type declaration")
    return "record" if kind == "error" else kind


def _logical(schema: Any) -> str | None:
    """fastavro's key of the writer's logical type (``long-timestamp-millis``) or None."""
    if isinstance(schema, dict) and schema.get("logicalType"):
        return f"{schema['type']}-{schema['logicalType']}"
    return None


class _Generator(CodeWriter):
    """One function per record, array and map (per writer/reader pair); leaves inline.

    Every function has the signature ``f(b, i, L) -> (value, next index)``: ``b`` the
    body as ``bytes``, ``L`` its length. Leaf reads use the locals ``x`` (the varint
    just read) and ``j`` (the end of a string) and assign to the variable given.
    """

    def __init__(self, writer_named: dict[str, Any], reader_named: dict[str, Any]) -> None:
        super().__init__()
        self.writer_named = writer_named
        self.reader_named = reader_named
        self.named = {"writer": writer_named, "reader": reader_named}
        self._functions: dict[tuple[str, str, str, bool], str] = {}
        self._inlining: list[str] = []  # records being inlined in the current function

    # -- resolution --------------------------------------------------------------------

    def _resolve(self, writer: Any, reader: Any) -> tuple[Any, Any]:
        """(writer definition, reader definition or None) the way fastavro's read_data
        pairs them: the reader matched to the writer, named references looked up."""
        while True:
            if reader is not None:
                try:
                    reader = match_schemas(writer, reader, self.named)
                except SchemaResolutionError as exc:
                    raise UnsupportedSchemaError(f"fastavro refuses: {exc}") from exc
            if isinstance(writer, str) and writer not in _PRIMITIVES:
                if writer not in self.writer_named:
                    raise UnsupportedSchemaError(f"unknown type {writer!r}")
                if reader is not None and not isinstance(reader, str):
                    raise UnsupportedSchemaError(f"a reference to {writer!r} read as a union")
                writer = self.writer_named[writer]
                reader = None if reader is None else self.reader_named.get(reader)
                continue
            return writer, reader

    def _min_width(self, schema: Any, seen: frozenset[str] = frozenset()) -> int:
        """The fewest bytes a value of the writer's ``schema`` takes."""
        schema, _ = self._resolve(schema, None)
        kind = _kind(schema)
        if kind == "null":
            return 0
        if kind == "fixed":
            return int(schema["size"])
        if kind == "record":
            name = str(schema["name"])
            if name in seen:
                return 0
            return sum(self._min_width(f["type"], seen | {name}) for f in schema["fields"])
        return {"float": 4, "double": 8}.get(kind, 1)

    # -- functions ---------------------------------------------------------------------

    def function_of(self, writer: Any, reader: Any, skip: bool = False) -> str:
        """The name of a function reading ``writer`` as ``reader`` (made on demand)."""
        writer, reader = self._resolve(writer, reader)
        kind = _kind(writer)
        key: tuple[str, str, str, bool] | None = None
        if kind == "record":
            rname = "" if reader is None else str(reader["name"])
            key = (str(writer["name"]), rname, str(kind), skip)
            if key in self._functions:
                return self._functions[key]
        name = self._fresh(f"_{kind[0]}")
        if key is not None:
            self._functions[key] = name  # before the body: a record may refer to itself
        saved, self._inlining = self._inlining, []
        body: list[str] = []
        if kind == "record":
            self._inlining.append(str(writer["name"]))
            value = self._record_fields(body, writer, reader, "    ", skip)
            body.append(f"    return {value}, i")
        elif kind in ("array", "map"):
            getattr(self, f"_function_{kind}")(body, writer, reader, skip)
        else:
            self.emit(body, writer, reader, "v", "    ", skip)
            body.append("    return v, i")
        self._inlining = saved
        self.lines.append(f"def {name}(b, i, L):")
        self.lines.extend(body)
        self.lines.append("")
        return name

    def _record_fields(self, out: list[str], w: Any, r: Any, ind: str, skip: bool) -> str:
        """Append code reading the fields; return the expression of the record."""
        entries: list[str] = []
        if r is None:
            for field in w["fields"]:
                var = "_s" if skip else self._fresh("f")
                self.emit(out, field["type"], None, var, ind, skip)
                entries.append(f"{field['name']!r}: {var}")
        else:
            by_name = {f["name"]: f for f in r["fields"]}
            by_alias = {a: f for f in r["fields"] for a in f.get("aliases", ())}
            for field in w["fields"]:
                target = by_name.get(field["name"], by_alias.get(field["name"]))
                if target is None or skip:
                    # fastavro reads what the reader dropped only to step over it.
                    self.emit(out, field["type"], None, "_s", ind, True)
                    continue
                var = self._fresh("f")
                self.emit(out, field["type"], target["type"], var, ind, False)
                entries.append(f"{target['name']!r}: {var}")
                del by_name[target["name"]]
            for field in by_name.values():
                if "default" not in field:
                    raise UnsupportedSchemaError(
                        f"{r['name']}.{field['name']} has no default and the writer lacks it"
                    )
                default = field["default"]
                const = self.const(default, "_d")
                value = f"_deepcopy({const})" if isinstance(default, dict | list) else const
                entries.append(f"{field['name']!r}: {value}")
        return "None" if skip else f"{{{', '.join(entries)}}}"

    def _blocks(self, out: list[str]) -> None:
        """The block loop head shared by arrays and maps (count in ``c``)."""
        out.append("    while True:")
        self._varint(out, "        ")
        out.append("        if not x: return out, i")
        out.append("        c = (x >> 1) ^ -(x & 1)")
        out.append("        if c < 0:")
        out.append("            c = -c")
        self._varint(out, "            ")  # the block's size in bytes, unused (as fastavro)
        # Each item takes a byte or more, so a count past the end is a truncation;
        # without this a garbage count would loop (or allocate) for a long time.
        out.append("        if c > L - i: raise _short()")
        out.append("        for _k in _range(c):")

    def _function_array(self, out: list[str], w: Any, r: Any, skip: bool) -> None:
        if self._min_width(w["items"]) == 0:
            raise UnsupportedSchemaError("an array of items that take no bytes")
        out.append("    out = []")
        out.append("    ap = out.append")
        self._blocks(out)
        self.emit(out, w["items"], None if r is None else r["items"], "v", " " * 12, skip)
        out.append("            ap(v)")

    def _function_map(self, out: list[str], w: Any, r: Any, skip: bool) -> None:
        out.append("    out = {}")
        self._blocks(out)
        self._emit_string(out, "string", None, "k", " " * 12, False)
        self.emit(out, w["values"], None if r is None else r["values"], "v", " " * 12, skip)
        out.append("            out[k] = v")

    # -- inline reads ------------------------------------------------------------------

    def _varint(self, out: list[str], ind: str, int32: bool = False) -> None:
        """Read an unsigned varint into ``x`` (one byte inline, longer ones by call)."""
        out.append(f"{ind}x = b[i]")
        out.append(f"{ind}i += 1")
        out.append(f"{ind}if x > 127:")
        out.append(f"{ind}    x, i = _uv(b, i - 1)")
        if int32:
            out.append(f"{ind}    if x > 4294967295: raise _inv('an int past 32 bits')")

    def emit(
        self, out: list[str], writer: Any, reader: Any, var: str, ind: str, skip: bool
    ) -> None:
        """Append code reading ``writer`` (as ``reader``) into ``var``, advancing ``i``.

        ``skip``: the value is thrown away (fastavro does not convert logical types then).
        """
        writer, reader = self._resolve(writer, reader)
        kind = _kind(writer)
        if kind == "union":
            self._emit_union(out, writer, reader, var, ind, skip)
            return
        if kind == "record" and writer["name"] not in self._inlining:
            # Inline (a call and a tuple less per record), except inside itself.
            self._inlining.append(str(writer["name"]))
            value = self._record_fields(out, writer, reader, ind, skip)
            self._inlining.pop()
            out.append(f"{ind}{var} = {value}")
            return
        if kind in ("record", "array", "map"):
            out.append(f"{ind}{var}, i = {self.function_of(writer, reader, skip)}(b, i, L)")
            return
        emitter = getattr(self, f"_emit_{kind}", None)
        if emitter is None:
            raise UnsupportedSchemaError(f"type {kind!r} is not compiled")
        emitter(out, writer, reader, var, ind, skip)
        if skip:
            return
        logical = _logical(writer)
        if logical in _INLINE_LOGICAL:
            out.append(ind + _INLINE_LOGICAL[logical].format(v=var))
            return
        if logical in _CALLED_LOGICAL:
            fn = self.const(LOGICAL_READERS[logical], "_lr")
            out.append(f"{ind}{var} = {fn}({var})")
            return
        if logical in ("bytes-decimal", "fixed-decimal"):
            raise UnsupportedSchemaError("the decimal logical type is not compiled")
        if reader is not None:
            # fastavro's maybe_promote (only when no logical type converted the value).
            rkind = _kind(reader)
            if kind in ("int", "long") and rkind in ("float", "double"):
                out.append(f"{ind}{var} = _float({var})")
            elif kind == "string" and rkind == "bytes":
                out.append(f"{ind}{var} = {var}.encode()")
            elif kind == "bytes" and rkind == "string":
                out.append(f"{ind}{var} = {var}.decode()")

    def _emit_null(self, out: list[str], w: Any, r: Any, var: str, ind: str, skip: bool) -> None:
        out.append(f"{ind}{var} = None")

    def _emit_boolean(self, out: list[str], w: Any, r: Any, var: str, ind: str, skip: bool) -> None:
        out.append(f"{ind}x = b[i]")
        out.append(f"{ind}i += 1")
        out.append(f"{ind}if x == 1: {var} = True")
        out.append(f"{ind}elif x == 0: {var} = False")
        out.append(f"{ind}else: raise _inv('a boolean byte other than 0 or 1')")

    def _emit_int(self, out: list[str], w: Any, r: Any, var: str, ind: str, skip: bool) -> None:
        self._varint(out, ind, int32=True)
        out.append(f"{ind}{var} = (x >> 1) ^ -(x & 1)")

    def _emit_long(self, out: list[str], w: Any, r: Any, var: str, ind: str, skip: bool) -> None:
        self._varint(out, ind)
        out.append(f"{ind}{var} = (x >> 1) ^ -(x & 1)")

    def _emit_float(self, out: list[str], w: Any, r: Any, var: str, ind: str, skip: bool) -> None:
        out.append(f"{ind}if i + 4 > L: raise _short()")
        out.append(f"{ind}{var} = _uf(b, i)[0]")
        out.append(f"{ind}i += 4")

    def _emit_double(self, out: list[str], w: Any, r: Any, var: str, ind: str, skip: bool) -> None:
        out.append(f"{ind}if i + 8 > L: raise _short()")
        out.append(f"{ind}{var} = _ud(b, i)[0]")
        out.append(f"{ind}i += 8")

    def _length(self, out: list[str], ind: str) -> None:
        """Read a length and set ``j`` to the end of the bytes it counts."""
        self._varint(out, ind)
        out.append(f"{ind}if x & 1: raise _inv('a negative length')")
        out.append(f"{ind}j = i + (x >> 1)")
        out.append(f"{ind}if j > L: raise _short()")

    def _emit_bytes(self, out: list[str], w: Any, r: Any, var: str, ind: str, skip: bool) -> None:
        self._length(out, ind)
        out.append(f"{ind}{var} = b[i:j]")
        out.append(f"{ind}i = j")

    def _emit_string(self, out: list[str], w: Any, r: Any, var: str, ind: str, skip: bool) -> None:
        self._length(out, ind)
        # Decoded even when skipped: fastavro's skip reads the string as text too.
        out.append(f"{ind}{var} = b[i:j].decode()")
        out.append(f"{ind}i = j")

    def _emit_fixed(self, out: list[str], w: Any, r: Any, var: str, ind: str, skip: bool) -> None:
        size = int(w["size"])
        out.append(f"{ind}j = i + {size}")
        out.append(f"{ind}if j > L: raise _short()")
        out.append(f"{ind}{var} = b[i:j]")
        out.append(f"{ind}i = j")

    def _emit_enum(self, out: list[str], w: Any, r: Any, var: str, ind: str, skip: bool) -> None:
        symbols: list[str | None] = list(w["symbols"])
        if r is not None:
            known = set(r["symbols"])
            default = r.get("default")
            # fastavro: a symbol the reader lacks takes the reader's default, if truthy.
            symbols = [s if s in known else (default or None) for s in symbols]
        table = self.const(tuple(symbols), "_S")
        count = len(symbols)
        self._varint(out, ind)
        out.append(
            f"{ind}if x & 1 or x >= {2 * count}: "
            f"raise _inv(f'enum index {{(x >> 1) ^ -(x & 1)}} of {count} symbols')"
        )
        out.append(f"{ind}{var} = {table}[x >> 1]")
        if None in symbols:
            out.append(
                f"{ind}if {var} is None: raise _inv('an enum symbol the reader schema lacks')"
            )

    def _emit_union(
        self, out: list[str], w: list[Any], r: Any, var: str, ind: str, skip: bool
    ) -> None:
        self._varint(out, ind)
        word = "if"
        for index, branch in enumerate(w):
            out.append(f"{ind}{word} x == {2 * index}:")
            word = "elif"
            target: Any = None
            matched = True
            if r is not None:
                candidates = r if isinstance(r, list) else [r]
                found = [c for c in candidates if match_types(branch, c, self.named)]
                matched = bool(found)
                target = found[0] if found else None
            if matched:
                self.emit(out, branch, target, var, ind + "    ", skip)
            else:
                # fastavro refuses such a record when it reads it (SchemaResolutionError).
                out.append(
                    f"{ind}    raise _inv('union branch {index} of the writer has no match "
                    "in the reader schema')"
                )
        out.append(
            f"{ind}else: raise _inv(f'union index {{(x >> 1) ^ -(x & 1)}} of {len(w)} branches')"
        )
