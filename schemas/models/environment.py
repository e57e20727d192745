"""Pydantic models of the environment datasets, as the automatic monitoring stations send them.

Each model is the record inside the Debezium-style envelope of
``schemas/avro/environment/<dataset>.raw.v1.avsc``; field names match the Avro record
exactly. ``reading_time`` is text because station dataloggers send local times
(``yyyyMMddHHmmss`` or ISO 8601, naive = Asia/Ho_Chi_Minh); the standardizer parses it.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field

from schemas.models.common import RECORD_CONFIG

__all__ = ["StationReading", "StationType"]

_Conc = Field(default=None, ge=0)


class StationType(StrEnum):
    AIR = "AIR"
    WATER = "WATER"


class StationReading(BaseModel):
    """One reading of an automatic air or water monitoring station.

    Air parameters (µg/m³, VN_AQI) are null for water stations, water parameters
    (pH, mg/L) for air stations; a parameter the station does not measure is null.
    """

    model_config = RECORD_CONFIG

    station_id: str = Field(min_length=1, max_length=64)
    station_type: StationType
    reading_time: str = Field(min_length=1, max_length=40)
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)
    aqi: int | None = Field(default=None, ge=0, le=500)
    pm25: float | None = _Conc
    pm10: float | None = _Conc
    co: float | None = _Conc
    no2: float | None = _Conc
    so2: float | None = _Conc
    o3: float | None = _Conc
    ph: float | None = Field(default=None, ge=0, le=14)
    do: float | None = _Conc
    cod: float | None = _Conc
    bod5: float | None = _Conc
    tss: float | None = _Conc
