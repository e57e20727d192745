"""Transport: vehicle registrations and bus positions."""

from __future__ import annotations

from stream_processors.standardizers.engine import (
    CitizenId,
    Coordinates,
    DatasetRules,
    Date,
    Enum,
    Float,
    Image,
    Text,
    Timestamp,
)

__all__ = ["BUS_POSITIONS", "VEHICLE_REGISTRATIONS"]

_MAX_BUS_SPEED_KMH = 200.0


def _registration(img: Image) -> None:
    individual = img.out["owner_kind"] == "INDIVIDUAL"
    has_id = img.out["owner_citizen_id"] is not None
    if individual and not has_id:
        img.flag("owner_citizen_id_missing")
    if not individual and has_id:
        img.flag("organization_with_citizen_id")
    expiry = img.out["inspection_expiry_date"]
    if expiry is not None and expiry < img.out["registration_date"]:
        img.flag("inspection_expiry_before_registration")


VEHICLE_REGISTRATIONS = DatasetRules(
    dataset_id="transport.vehicle_registrations",
    record="VehicleRegistration",
    doc="A standardized vehicle registration: upper-case plate, owner CCCD checked.",
    rules=(
        Text("plate"),
        Enum(
            "vehicle_type",
            frozenset(
                {
                    "CAR",
                    "PICKUP",
                    "TRUCK",
                    "BUS",
                    "TRACTOR_TRAILER",
                    "SPECIALIZED",
                    "MOTORCYCLE",
                    "OTHER",
                }
            ),
        ),
        Text("brand", required=False),
        Text("model", required=False),
        Enum("owner_kind", frozenset({"INDIVIDUAL", "ORGANIZATION"})),
        CitizenId("owner_citizen_id", required=False),
        Text("owner_name"),
        Date("registration_date"),
        Date("inspection_expiry_date", required=False, future="allow"),
        Text("inspection_station_code", required=False, case="upper"),
        Enum("status", frozenset({"ACTIVE", "SUSPENDED", "REVOKED", "DEREGISTERED"})),
    ),
    checks=(_registration,),
)


BUS_POSITIONS = DatasetRules(
    dataset_id="transport.bus_positions",
    record="BusPosition",
    doc="A standardized bus GPS fix: inside the province, UTC time, plausible speed.",
    rules=(
        Text("vehicle_plate"),
        Text("route_id", case="upper"),
        Text("trip_id", required=False),
        # (0, 0) is what a device without a fix sends: dead-lettered, never plotted.
        Coordinates("latitude", "longitude", required=True, reject_outside=True),
        Float("speed_kmh", min=0, max=_MAX_BUS_SPEED_KMH, reason="impossible_measurement"),
        Float("heading", required=False, min=0, max=360, reason="impossible_measurement"),
        Timestamp("position_time"),
    ),
    event_time="position_time",
)
