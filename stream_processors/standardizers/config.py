"""The data files standardization reads besides ``ReferenceData``: code lists, province area.

``schemas/data/province_area.csv`` (``name,min_lat,max_lat,min_lon,max_lon``) is the
bounding box positions are checked against; SAMPLE values for Đồng Nai after the 2025
merger. Both are loaded once per process: they are immutable.
"""

from __future__ import annotations

import csv
import math
from functools import cache
from pathlib import Path

from bus.errors import ConfigError
from schemas.domain.code_lists import default_code_lists
from schemas.domain.reference import ReferenceData, default_data_dir
from stream_processors.standardizers.engine import Area, Context

__all__ = ["context_for", "default_area", "load_area"]

_AREA_FILE = "province_area.csv"
_COLUMNS = ("name", "min_lat", "max_lat", "min_lon", "max_lon")


def load_area(data_dir: Path | None = None) -> Area:
    path = (data_dir if data_dir is not None else default_data_dir()) / _AREA_FILE
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            if tuple(reader.fieldnames or ()) != _COLUMNS:
                raise ConfigError(f"{path}:1: header must be {','.join(_COLUMNS)!r}")
            rows = list(reader)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    if len(rows) != 1:
        raise ConfigError(f"{path}: expected exactly one row, found {len(rows)}")
    try:
        values = [float(rows[0][c]) for c in _COLUMNS[1:]]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}:2: bounds must be decimal degrees: {exc}") from exc
    min_lat, max_lat, min_lon, max_lon = values
    if not all(math.isfinite(v) for v in values) or min_lat >= max_lat or min_lon >= max_lon:
        raise ConfigError(f"{path}:2: expected min_lat < max_lat and min_lon < max_lon")
    return Area(min_lat, max_lat, min_lon, max_lon)


@cache
def default_area() -> Area:
    return load_area()


# The context of the last few ReferenceData objects, by identity: a processor holds one
# for its whole life, and a Context caches what it derives from it (province codes).
# The ref is kept with its context so that a recycled id() is never mistaken for it.
_CONTEXTS: dict[int, tuple[ReferenceData, Context]] = {}
_MAX_CONTEXTS = 8


def context_for(ref: ReferenceData) -> Context:
    """The standardization context of ``ref`` with the packaged code lists and area."""
    cached = _CONTEXTS.get(id(ref))
    if cached is not None and cached[0] is ref:
        return cached[1]
    context = Context(ref=ref, codes=default_code_lists(), area=default_area())
    if len(_CONTEXTS) >= _MAX_CONTEXTS:
        _CONTEXTS.clear()
    _CONTEXTS[id(ref)] = (ref, context)
    return context
