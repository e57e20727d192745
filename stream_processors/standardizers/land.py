"""Land and construction: parcels and construction permits."""

from __future__ import annotations

from stream_processors.standardizers.engine import (
    Code,
    Commune,
    DatasetRules,
    Date,
    Enum,
    Float,
    Image,
    Int,
    Text,
    Unit,
)

__all__ = ["CONSTRUCTION_PERMITS", "PARCELS"]


def _parcel(img: Image) -> None:
    valid_from, until = img.out["valid_from"], img.out["use_term_until"]
    if valid_from is not None and until is not None and until < valid_from:
        img.flag("use_term_before_valid_from")


PARCELS = DatasetRules(
    dataset_id="land.parcels",
    record="Parcel",
    doc="A standardized land parcel: current commune code, national land-use code.",
    rules=(
        Text("parcel_id"),
        Commune("commune_code"),
        Text("map_sheet", case="upper"),
        Text("parcel_number"),
        Float("area_m2", min=0.1, max=1e10),
        Code("land_use_purpose_code", "land_use"),
        Text("address", required=False),
        Text("owner_name", required=False),
        Text("certificate_number", required=False, case="upper"),
        Date("valid_from", required=False),
        Date("use_term_until", required=False, future="allow"),
    ),
    checks=(_parcel,),
)


def _permit(img: Image) -> None:
    if img.out["status"] == "ISSUED" and (
        img.out["permit_number"] is None or img.out["issued_date"] is None
    ):
        img.flag("issued_without_number")


CONSTRUCTION_PERMITS = DatasetRules(
    dataset_id="land.construction_permits",
    record="ConstructionPermit",
    doc="A standardized construction permit: known issuing unit, current commune code.",
    rules=(
        Text("permit_id"),
        Text("permit_number", required=False),
        Unit("issuing_unit_code"),
        Text("applicant_name"),
        Commune("commune_code"),
        Text("address"),
        Text("parcel_id", required=False),
        Enum(
            "permit_type",
            frozenset({"NEW_CONSTRUCTION", "REPAIR_RENOVATION", "RELOCATION", "FIXED_TERM"}),
        ),
        Date("issued_date", required=False),
        Int("floors", required=False, min=0, max=300),
        Float("gross_floor_area_m2", required=False, min=0, max=1e8),
        Enum("status", frozenset({"SUBMITTED", "ISSUED", "REJECTED", "REVOKED", "EXPIRED"})),
    ),
    checks=(_permit,),
)
