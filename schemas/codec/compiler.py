"""Generated-source machinery shared by the Avro encoder and decoder.

``schemas/codec/encoder.py`` and ``schemas/codec/decoder.py`` each write the Python
source of a function specialised to one schema (every field, branch and symbol known
in advance) and ``exec`` it once: generated source beat closures (one call per
field) by ~2x when measured. This module holds what both use to do so: a
``CodeWriter`` (the lines and the constants they name), ``compile_function`` (the
``exec``, keeping the source on the function as ``__avro_source__``), and
``UnsupportedSchemaError``, which either raises for a schema it does not compile so
the caller falls back to fastavro. Nothing here encodes or decodes.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CodeWriter", "UnsupportedSchemaError", "compile_function"]


class UnsupportedSchemaError(ValueError):
    """The schema uses something the compiler does not handle; use fastavro for it."""


def compile_function(lines: list[str], namespace: dict[str, Any], name: str, filename: str) -> Any:
    """Compile generated source lines and return the function ``name`` they define; the
    source stays on it as ``__avro_source__`` for whoever debugs it."""
    source = "\n".join(lines) + "\n"
    scope = dict(namespace)
    exec(compile(source, filename, "exec"), scope)
    function = scope[name]
    function.__avro_source__ = source
    return function


class CodeWriter:
    """Generated source lines and the constants they refer to by name."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.consts: dict[str, Any] = {}
        self._counter = 0

    def _fresh(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}{self._counter}"

    def const(self, value: Any, prefix: str = "_c") -> str:
        name = self._fresh(prefix)
        self.consts[name] = value
        return name
