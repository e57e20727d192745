"""Pydantic models of the transport datasets, as the construction department's systems send them.

Each model is the record inside the Debezium-style envelope of
``schemas/avro/transport/<dataset>.raw.v1.avsc``; field names match the Avro record
exactly. Personal fields are kept out of ``repr`` so they never reach a log line.
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum

from pydantic import AwareDatetime, BaseModel, Field

from schemas.models.common import RECORD_CONFIG

__all__ = [
    "BusPosition",
    "OwnerKind",
    "RegistrationStatus",
    "VehicleRegistration",
    "VehicleType",
]

_Plate = Field(min_length=1, max_length=20, description="e.g. 60A-123.45")


class VehicleType(StrEnum):
    CAR = "CAR"
    PICKUP = "PICKUP"
    TRUCK = "TRUCK"
    BUS = "BUS"
    TRACTOR_TRAILER = "TRACTOR_TRAILER"
    SPECIALIZED = "SPECIALIZED"
    MOTORCYCLE = "MOTORCYCLE"
    OTHER = "OTHER"


class OwnerKind(StrEnum):
    INDIVIDUAL = "INDIVIDUAL"
    ORGANIZATION = "ORGANIZATION"


class RegistrationStatus(StrEnum):
    ACTIVE = "ACTIVE"
    SUSPENDED = "SUSPENDED"
    REVOKED = "REVOKED"
    DEREGISTERED = "DEREGISTERED"


class VehicleRegistration(BaseModel):
    """A registered vehicle with its periodic-inspection status.

    ``owner_name`` is marked personal even for organizations: one field cannot be
    masked for some records only.
    """

    model_config = RECORD_CONFIG

    plate: str = _Plate
    vehicle_type: VehicleType
    brand: str | None = Field(default=None, max_length=100)
    model: str | None = Field(default=None, max_length=100)
    owner_kind: OwnerKind
    owner_citizen_id: str | None = Field(default=None, min_length=1, max_length=20, repr=False)
    owner_name: str = Field(min_length=1, max_length=300, repr=False)
    registration_date: date
    inspection_expiry_date: date | None = None
    inspection_station_code: str | None = Field(default=None, min_length=1, max_length=16)
    status: RegistrationStatus


class BusPosition(BaseModel):
    """One GPS fix of a bus on a public route; ``position_time`` is the device's clock."""

    model_config = RECORD_CONFIG

    vehicle_plate: str = _Plate
    route_id: str = Field(min_length=1, max_length=32)
    trip_id: str | None = Field(default=None, min_length=1, max_length=64)
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)
    speed_kmh: float = Field(ge=0, le=200)
    heading: float | None = Field(default=None, ge=0, lt=360)
    position_time: AwareDatetime
