"""Land and construction systems: parcels and construction permits.

Parcels carry a map sheet and parcel number, an area plausible for the land-use
purpose (urban residential tens to hundreds of m², rice and perennial crops thousands),
and a land-use-rights certificate once one is issued (a later update). Permits go
SUBMITTED → ISSUED (or REJECTED) within the legal 15–20 days.

Defects: unknown commune code; a certificate valid from the far future.
"""

from __future__ import annotations

from datetime import date, timedelta

from producers.simulators._common import (
    LOCAL,
    UNKNOWN_COMMUNE,
    History,
    Sim,
    SimRecord,
    SimSpec,
    State,
    emit,
    working_days_after,
)
from schemas.domain.reference import ReferenceData
from schemas.models.land import ConstructionPermit, Parcel, PermitStatus, PermitType

__all__ = ["simulate_construction_permits", "simulate_parcels"]

# code → (min m², max m², term years or None for long-term)
PURPOSES: dict[str, tuple[float, float, int | None]] = {
    "ODT": (40, 300, None),  # đất ở tại đô thị
    "ONT": (100, 1000, None),  # đất ở tại nông thôn
    "CLN": (1000, 30000, 50),  # đất trồng cây lâu năm
    "LUC": (500, 8000, 50),  # đất chuyên trồng lúa nước
    "HNK": (300, 5000, 50),  # đất trồng cây hằng năm khác
    "RSX": (5000, 100000, 50),  # đất rừng sản xuất
    "SKC": (2000, 50000, 50),  # đất cơ sở sản xuất phi nông nghiệp
    "TMD": (100, 5000, 50),  # đất thương mại, dịch vụ
}
PURPOSE_WEIGHTS = [30, 25, 18, 6, 8, 5, 4, 4]
STREETS = ["Phạm Văn Thuận", "Đồng Khởi", "Võ Thị Sáu", "Nguyễn Ái Quốc", "Phú Riềng Đỏ", "ĐT768"]


def _address(sim: Sim, commune: str) -> str:
    return (
        f"Tổ {sim.rng.randint(1, 30)}, khu phố {sim.rng.randint(1, 12)}, "
        f"đường {sim.pick(STREETS)}, {sim.commune_name(commune)}"
    )


def simulate_parcels(spec: SimSpec, ref: ReferenceData) -> list[SimRecord]:
    sim = Sim("land.parcels", spec, ref)
    defects = sim.defects(sim.count, ("unknown_admin_unit", "far_future_timestamp"))
    codes = list(PURPOSES)
    histories: list[History] = []
    used: set[str] = set()
    for reason in defects:
        commune = sim.commune()
        sheet = str(sim.rng.randint(1, 120))
        number = str(sim.rng.randint(1, 900)) + ("a" if sim.rng.random() < 0.05 else "")
        parcel_id = f"{commune}-{sheet}-{number}"
        while parcel_id in used:
            number = str(sim.rng.randint(1, 900))
            parcel_id = f"{commune}-{sheet}-{number}"
        used.add(parcel_id)
        purpose = sim.rng.choices(codes, PURPOSE_WEIGHTS)[0]
        low, high, term = PURPOSES[purpose]
        area = round(sim.rng.uniform(low, high), 1)
        first = sim.moment(working_hours=True)
        day = first.astimezone(LOCAL).date()
        issued = day - timedelta(days=sim.rng.randint(30, 365 * 20))
        if reason == "far_future_timestamp":
            issued = sim.far_future().astimezone(LOCAL).date()
        until = date(issued.year + term, issued.month, 1) if term else None
        owner = sim.person(25, 80).full_name
        certificate = f"{sim.pick(('CS', 'DA', 'DB', 'CT'))} {sim.rng.randint(0, 999_999):06d}"

        def make(
            with_certificate: bool,
            parcel_id: str = parcel_id,
            commune: str = UNKNOWN_COMMUNE if reason == "unknown_admin_unit" else commune,
            sheet: str = sheet,
            number: str = number,
            area: float = area,
            purpose: str = purpose,
            address: str = _address(sim, commune),
            owner: str = owner,
            certificate: str = certificate,
            issued: date = issued,
            until: date | None = until,
        ) -> Parcel:
            return Parcel(
                parcel_id=parcel_id,
                commune_code=commune,
                map_sheet=sheet,
                parcel_number=number,
                area_m2=area,
                land_use_purpose_code=purpose,
                address=address,
                owner_name=owner,
                certificate_number=certificate if with_certificate else None,
                valid_from=issued if with_certificate else None,
                use_term_until=until if with_certificate else None,
            )

        history = History(reason=reason)
        pending = reason is None and sim.rng.random() < 0.2
        history.states.append(State(first, make(not pending)))
        if pending:
            later = first + sim.days(1, max(1.5, spec.days))
            history.states.append(State(later, make(True, issued=later.astimezone(LOCAL).date())))
        histories.append(history)
    return emit(sim, histories)


def simulate_construction_permits(spec: SimSpec, ref: ReferenceData) -> list[SimRecord]:
    sim = Sim("land.construction_permits", spec, ref)
    defects = sim.defects(sim.count, ("unknown_admin_unit", "unknown_receiving_unit"))
    histories: list[History] = []
    for i, reason in enumerate(defects):
        commune = sim.commune(old_share=0.0)
        submitted = sim.moment(working_hours=True)
        day = submitted.astimezone(LOCAL).date()
        kind = sim.rng.choices(list(PermitType), [70, 22, 2, 6])[0]
        big = sim.rng.random() < 0.1
        commune_unit = f"DNA.UBND.{commune}"
        if big:
            issuer = "DNA.SXD"
        elif commune_unit in ref.receiving_units:
            issuer = commune_unit
        else:
            issuer = "DNA.SXD"
        if reason == "unknown_receiving_unit":
            issuer = "DNA.UBND.99999"
        floors = sim.rng.randint(5, 25) if big else sim.rng.randint(1, 4)
        footprint = sim.rng.uniform(300, 2000) if big else sim.rng.uniform(50, 150)
        decision = working_days_after(day, sim.rng.randint(10, 20))
        issued_at = submitted + timedelta(days=(decision - day).days) + sim.hours(-2, 2)
        rejected = sim.rng.random() < 0.08
        suffix = "SXD" if issuer == "DNA.SXD" else "UBND"

        def make(
            status: PermitStatus,
            permit_id: str = f"GPXD-{day:%Y}-{i + 1:06d}",
            number: str = f"{sim.rng.randint(1, 2500)}/GPXD-{suffix}",
            issuer: str = issuer,
            applicant: str = sim.person(25, 70).full_name
            if not big
            else "Công ty Cổ phần Đầu tư Xây dựng Đồng Nai",
            commune: str = UNKNOWN_COMMUNE if reason == "unknown_admin_unit" else commune,
            address: str = _address(sim, commune),
            parcel: str = f"{commune}-{sim.rng.randint(1, 120)}-{sim.rng.randint(1, 900)}",
            kind: PermitType = kind,
            floors: int = floors,
            gfa: float = round(footprint * max(floors, 1), 1),
            decided: date = decision,
        ) -> ConstructionPermit:
            issued = status is PermitStatus.ISSUED
            return ConstructionPermit(
                permit_id=permit_id,
                permit_number=number if issued else None,
                issuing_unit_code=issuer,
                applicant_name=applicant,
                commune_code=commune,
                address=address,
                parcel_id=parcel,
                permit_type=kind,
                issued_date=decided if issued else None,
                floors=floors,
                gross_floor_area_m2=gfa,
                status=status,
            )

        history = History(reason=reason)
        history.states.append(State(submitted, make(PermitStatus.SUBMITTED)))
        final = PermitStatus.REJECTED if rejected else PermitStatus.ISSUED
        history.states.append(State(max(issued_at, submitted), make(final)))
        histories.append(history)
    return emit(sim, histories)
