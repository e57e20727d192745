"""Automatic monitoring station readings (air and water)."""

from __future__ import annotations

from stream_processors.standardizers.engine import (
    Coordinates,
    DatasetRules,
    Enum,
    Float,
    Image,
    Int,
    Text,
    Timestamp,
)

__all__ = ["STATION_READINGS"]

# Dissolved oxygen saturates at about 14.6 mg/L in fresh water at 0 °C; algal blooms
# push it above saturation, but not past this.
_MAX_DISSOLVED_OXYGEN = 20.0
_AIR = ("aqi", "pm25", "pm10", "co", "no2", "so2", "o3")
_WATER = ("ph", "do", "cod", "bod5", "tss")


def _measurement(name: str, high: float | None = None) -> Float:
    return Float(name, required=False, min=0, max=high, reason="impossible_measurement")


def _consistent(img: Image) -> None:
    pm25, pm10 = img.out["pm25"], img.out["pm10"]
    # PM2.5 is a part of PM10: it cannot be the larger.
    if pm25 is not None and pm10 is not None and pm25 > pm10:
        raise img.fail("impossible_measurement", "pm25", "PM2.5 above PM10")
    other = _WATER if img.out["station_type"] == "AIR" else _AIR
    if any(img.out[name] is not None for name in other):
        img.flag("parameter_of_other_station_type")


STATION_READINGS = DatasetRules(
    dataset_id="environment.station_readings",
    record="StationReading",
    doc="A standardized station reading: UTC time, physically possible values.",
    rules=(
        Text("station_id"),
        Enum("station_type", frozenset({"AIR", "WATER"})),
        Timestamp("reading_time", compact=True),
        Coordinates("latitude", "longitude", required=True),
        Int("aqi", required=False, min=0, max=500, reason="impossible_measurement"),
        _measurement("pm25"),
        _measurement("pm10"),
        _measurement("co"),
        _measurement("no2"),
        _measurement("so2"),
        _measurement("o3"),
        _measurement("ph", 14),
        _measurement("do", _MAX_DISSOLVED_OXYGEN),
        _measurement("cod"),
        _measurement("bod5"),
        _measurement("tss"),
    ),
    checks=(_consistent,),
    event_time="reading_time",
)
