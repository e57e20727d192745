"""Reference data for standardization, loaded from the CSV files in ``schemas/data/``.

The files (UTF-8, one header line; see ``schemas/data/README.md``):

- ``cccd_province_codes.csv`` — ``code,name``: the 3-digit CCCD province codes;
- ``receiving_units.csv`` — ``code,name,sector,province_code``: units that receive
  dossiers. Codes are the project's sample short form, ``DNA.<department>`` (``DNA.SYT``,
  Sở Y tế) and ``DNA.UBND.<commune code>`` for commune/ward people's committees; a
  province may use its official electronic identifier codes instead, nothing here parses
  the code;
- ``admin_units_crosswalk.csv`` — ``old_code,new_code,name_new,effective_from``: a row
  with ``old_code == new_code`` declares a current commune/ward; any other row retires
  ``old_code`` in favour of ``new_code`` from ``effective_from`` (a local date).

Province data teams edit these files by hand, so a bad row stops start-up with a
``ConfigError`` naming the file, line and field rather than surfacing later as thousands
of rejected events.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from types import MappingProxyType

import schemas
from bus.errors import ConfigError
from schemas.domain.text import normalize_text
from schemas.domain.timeparse import LOCAL_TZ

__all__ = [
    "AdminUnitResolution",
    "CrosswalkEntry",
    "ReceivingUnit",
    "ReferenceData",
    "default_data_dir",
    "load_reference",
]

_CCCD_FILE = "cccd_province_codes.csv"
_UNITS_FILE = "receiving_units.csv"
_CROSSWALK_FILE = "admin_units_crosswalk.csv"

_COMMUNE_CODE = re.compile(r"\d{5}")
_CCCD_CODE = re.compile(r"\d{3}")
_PROVINCE_CODE = re.compile(r"\d{2}")
_UNIT_CODE = re.compile(r"[A-Za-z0-9._-]+")
_SECTOR = re.compile(r"[a-z][a-z0-9_]*")


@dataclass(frozen=True, slots=True)
class ReceivingUnit:
    code: str
    name: str
    sector: str
    province_code: str


@dataclass(frozen=True, slots=True)
class CrosswalkEntry:
    old_code: str
    new_code: str
    name_new: str
    effective_from: date | None  # None: valid with no known start


@dataclass(frozen=True, slots=True)
class AdminUnitResolution:
    code: str  # the current code
    source_code: str  # the code as given
    name: str
    remapped: bool  # code != source_code
    outdated: bool  # an old code used on or after its retirement date

    @property
    def flags(self) -> tuple[str, ...]:
        flags = ["admin_unit_remapped"] if self.remapped else []
        if self.outdated:
            flags.append("admin_unit_code_outdated")
        return tuple(flags)


@dataclass(frozen=True)
class ReferenceData:
    cccd_province_codes: Mapping[str, str]  # code -> province name
    receiving_units: Mapping[str, ReceivingUnit]
    crosswalk: Mapping[str, CrosswalkEntry]  # keyed by old_code

    def receiving_unit(self, code: str) -> ReceivingUnit | None:
        return self.receiving_units.get(code)

    def resolve_admin_unit(self, code: str, at: datetime) -> AdminUnitResolution | None:
        """The current unit for ``code`` used by an event that happened at ``at``.

        Judged by the event's own time: a 2024 dossier legitimately carries a pre-reform
        code, while the same code on a dossier received after the cut-over means the source
        system was not updated. A current code is accepted at any time, because portals
        back-fill old dossiers with today's codes after a reform.
        """
        first = self.crosswalk.get(code)
        if first is None:
            return None
        entry = first
        # load_reference guarantees chains end in a current unit and have no cycles.
        while entry.new_code != entry.old_code:
            entry = self.crosswalk[entry.new_code]
        outdated = False
        if first.new_code != first.old_code and first.effective_from is not None:
            # The reform took effect at local midnight, so compare local calendar dates.
            outdated = at.astimezone(LOCAL_TZ).date() >= first.effective_from
        return AdminUnitResolution(
            code=entry.new_code,
            source_code=code,
            name=entry.name_new,
            remapped=entry.new_code != code,
            outdated=outdated,
        )


def default_data_dir() -> Path:
    """``schemas/data/`` of the installed package."""
    return Path(schemas.__file__).resolve().parent / "data"


def _rows(path: Path, columns: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (line number, row) with every field present and stripped."""
    try:
        # utf-8-sig: files saved from Excel start with a BOM.
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            header = tuple(reader.fieldnames or ())
            if header != columns:
                raise ConfigError(
                    f"{path}:1: header must be {','.join(columns)!r}, found {','.join(header)!r}"
                )
            for row in reader:
                line = reader.line_num
                if None in row:
                    raise ConfigError(f"{path}:{line}: too many fields")
                for column in columns:
                    if row[column] is None:
                        raise ConfigError(f"{path}:{line}: field {column!r} is missing")
                yield line, {k: v.strip() for k, v in row.items()}
    except FileNotFoundError as exc:
        raise ConfigError(f"reference data file not found: {path}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid UTF-8: {exc}") from exc
    except csv.Error as exc:
        raise ConfigError(f"{path}: malformed CSV: {exc}") from exc


def _require(path: Path, line: int, column: str, value: str, pattern: re.Pattern[str]) -> str:
    if not pattern.fullmatch(value):
        raise ConfigError(
            f"{path}:{line}: field {column!r} = {value!r} does not match {pattern.pattern!r}"
        )
    return value


def _name(path: Path, line: int, column: str, value: str) -> str:
    if not value:
        raise ConfigError(f"{path}:{line}: field {column!r} is empty")
    return normalize_text(value).text


def _unique(path: Path, line: int, column: str, value: str, seen: Mapping[str, object]) -> None:
    if value in seen:
        raise ConfigError(f"{path}:{line}: field {column!r} = {value!r} is duplicated")


def _load_cccd(path: Path) -> dict[str, str]:
    codes: dict[str, str] = {}
    for line, row in _rows(path, ("code", "name")):
        code = _require(path, line, "code", row["code"], _CCCD_CODE)
        _unique(path, line, "code", code, codes)
        codes[code] = _name(path, line, "name", row["name"])
    return codes


def _load_units(path: Path) -> dict[str, ReceivingUnit]:
    units: dict[str, ReceivingUnit] = {}
    for line, row in _rows(path, ("code", "name", "sector", "province_code")):
        code = _require(path, line, "code", row["code"], _UNIT_CODE)
        _unique(path, line, "code", code, units)
        units[code] = ReceivingUnit(
            code=code,
            name=_name(path, line, "name", row["name"]),
            sector=_require(path, line, "sector", row["sector"], _SECTOR),
            province_code=_require(
                path, line, "province_code", row["province_code"], _PROVINCE_CODE
            ),
        )
    return units


def _load_crosswalk(path: Path) -> dict[str, CrosswalkEntry]:
    entries: dict[str, CrosswalkEntry] = {}
    lines: dict[str, int] = {}
    columns = ("old_code", "new_code", "name_new", "effective_from")
    for line, row in _rows(path, columns):
        old = _require(path, line, "old_code", row["old_code"], _COMMUNE_CODE)
        _unique(path, line, "old_code", old, entries)
        new = _require(path, line, "new_code", row["new_code"], _COMMUNE_CODE)
        effective: date | None = None
        if row["effective_from"]:
            try:
                effective = date.fromisoformat(row["effective_from"])
            except ValueError as exc:
                raise ConfigError(
                    f"{path}:{line}: field 'effective_from' = {row['effective_from']!r} "
                    "is not a yyyy-mm-dd date"
                ) from exc
        if old != new and effective is None:
            raise ConfigError(
                f"{path}:{line}: field 'effective_from' is required when old_code != new_code"
            )
        entries[old] = CrosswalkEntry(
            old, new, _name(path, line, "name_new", row["name_new"]), effective
        )
        lines[old] = line
    for old, entry in entries.items():
        seen = {old}
        current = entry
        while current.new_code != current.old_code:
            successor = entries.get(current.new_code)
            if successor is None:
                raise ConfigError(
                    f"{path}:{lines[old]}: field 'new_code' = {current.new_code!r} "
                    "has no row declaring it (old_code == new_code)"
                )
            if successor.old_code in seen:
                raise ConfigError(f"{path}:{lines[old]}: field 'new_code' forms a cycle")
            seen.add(successor.old_code)
            current = successor
    return entries


def load_reference(data_dir: Path | None = None) -> ReferenceData:
    """Load and check all reference files; raises ``ConfigError`` on the first bad row."""
    directory = data_dir if data_dir is not None else default_data_dir()
    return ReferenceData(
        cccd_province_codes=MappingProxyType(_load_cccd(directory / _CCCD_FILE)),
        receiving_units=MappingProxyType(_load_units(directory / _UNITS_FILE)),
        crosswalk=MappingProxyType(_load_crosswalk(directory / _CROSSWALK_FILE)),
    )
