"""Source code lists mapped to national catalogs, loaded from ``schemas/data/codes_*.csv``.

Each file is one list, ``codes_<list>.csv`` (UTF-8, header
``source_code,code,name,category``): a row whose ``source_code`` equals ``code`` declares
a national code; any other row maps a spelling a source system uses (an alias, an old
code, a Vietnamese name) to the national code. Lookups ignore case, surrounding and
repeated spaces and Unicode composition, so ``"công văn"`` finds the row written
``Công văn``. ``category`` is an optional grouping (e.g. the A/B/C group of a notifiable
disease). Lines starting with ``#`` before the header are comments (a file says there
that it is sample data). The shipped lists are SAMPLE data (see
``schemas/data/CODE_LISTS.md``).

As with the other reference files, a malformed row stops start-up with a
``ConfigError`` naming the file, line and field.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import MappingProxyType

from bus.errors import ConfigError
from schemas.domain.reference import default_data_dir
from schemas.domain.text import normalize_text

__all__ = [
    "CodeEntry",
    "CodeList",
    "CodeMatch",
    "default_code_lists",
    "fold_code",
    "load_code_lists",
]

_COLUMNS = ("source_code", "code", "name", "category")
_FILE = re.compile(r"codes_(?P<name>[a-z0-9_]+)\.csv")


@dataclass(frozen=True, slots=True)
class CodeEntry:
    code: str
    name: str
    category: str  # "" when the list has no grouping


@dataclass(frozen=True, slots=True)
class CodeMatch:
    entry: CodeEntry
    mapped: bool  # the value was an alias, not the national code itself


def fold_code(value: str) -> str:
    """The form codes are compared in: NFC, single spaces, case-folded."""
    return normalize_text(value).text.casefold()


@dataclass(frozen=True)
class CodeList:
    name: str
    entries: Mapping[str, CodeEntry]  # by national code
    aliases: Mapping[str, str]  # folded source spelling -> national code

    def lookup(self, value: str) -> CodeMatch | None:
        text = normalize_text(value).text  # fold_code, with the text kept for ``mapped``
        code = self.aliases.get(text.casefold())
        if code is None:
            return None
        return CodeMatch(self.entries[code], mapped=code != text)


def _load_list(path: Path, name: str) -> CodeList:
    entries: dict[str, CodeEntry] = {}
    aliases: dict[str, str] = {}
    pending: list[tuple[int, str, str]] = []
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            lines = handle.readlines()
            comments = 0
            while comments < len(lines) and lines[comments].startswith("#"):
                comments += 1
            reader = csv.DictReader(lines[comments:])
            if tuple(reader.fieldnames or ()) != _COLUMNS:
                raise ConfigError(f"{path}:{comments + 1}: header must be {','.join(_COLUMNS)!r}")
            for row in reader:
                line = comments + reader.line_num
                if None in row or any(row.get(c) is None for c in _COLUMNS):
                    raise ConfigError(f"{path}:{line}: expected {len(_COLUMNS)} fields")
                source = normalize_text(row["source_code"]).text
                code = normalize_text(row["code"]).text
                if not source or not code:
                    raise ConfigError(f"{path}:{line}: source_code and code must not be empty")
                folded = fold_code(source)
                if folded in aliases:
                    raise ConfigError(
                        f"{path}:{line}: field 'source_code' = {source!r} is duplicated"
                    )
                aliases[folded] = code
                if source == code:
                    if not row["name"].strip():
                        raise ConfigError(f"{path}:{line}: field 'name' is empty")
                    entries[code] = CodeEntry(
                        code, normalize_text(row["name"]).text, row["category"].strip()
                    )
                else:
                    pending.append((line, source, code))
    except FileNotFoundError as exc:
        raise ConfigError(f"code list not found: {path}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid UTF-8: {exc}") from exc
    except csv.Error as exc:
        raise ConfigError(f"{path}: malformed CSV: {exc}") from exc
    for line, source, code in pending:
        if code not in entries:
            raise ConfigError(
                f"{path}:{line}: field 'code' = {code!r} (for {source!r}) "
                "has no row declaring it (source_code == code)"
            )
    return CodeList(name, MappingProxyType(entries), MappingProxyType(aliases))


def load_code_lists(data_dir: Path | None = None) -> Mapping[str, CodeList]:
    """Every ``codes_<list>.csv`` of ``data_dir`` (default ``schemas/data``), by list name."""
    directory = data_dir if data_dir is not None else default_data_dir()
    lists: dict[str, CodeList] = {}
    for path in sorted(directory.glob("codes_*.csv")):
        match = _FILE.fullmatch(path.name)
        if match is None:
            raise ConfigError(f"{path}: code list files are named codes_<a-z0-9_>.csv")
        lists[match["name"]] = _load_list(path, match["name"])
    return MappingProxyType(lists)


@cache
def default_code_lists() -> Mapping[str, CodeList]:
    """The packaged lists, loaded once per process (they are immutable)."""
    return load_code_lists()
