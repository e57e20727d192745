"""The construction department's transport systems: vehicle registrations, bus positions.

Registrations: cars, trucks, buses and motorcycles with Đồng Nai (60) and former Bình
Phước (93) plates, owned by people (CCCD consistent with birth date and sex) or firms;
a registration is published, and updated when the vehicle passes its periodic
inspection. Bus positions: a few buses run back and forth along real corridors of the
province (Biên Hòa – Long Khánh, Đồng Xoài – Chơn Thành, …) from 05:00 to 19:00 local;
each fix moves along the route, with a speed and heading to match.

Defects: a malformed owner CCCD; a registration dated in the far future; a GPS fix
outside the province (0, 0 — a device without a fix) or timed in the far future.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from datetime import date, timedelta

from producers.simulators._common import (
    LOCAL,
    History,
    Sim,
    SimRecord,
    SimSpec,
    State,
    emit,
)
from schemas.domain.reference import ReferenceData
from schemas.models.common import Op
from schemas.models.transport import (
    BusPosition,
    OwnerKind,
    RegistrationStatus,
    VehicleRegistration,
    VehicleType,
)

__all__ = ["ROUTES", "simulate_bus_positions", "simulate_vehicle_registrations"]

# route id → waypoints (lat, lon), all inside the province's box (lat 10.9–11.9, lon 106.6–107.6)
ROUTES: dict[str, list[tuple[float, float]]] = {
    "DN01": [(10.9574, 106.8426), (10.9452, 106.9120), (10.9500, 107.0000), (10.9340, 107.2430)],
    "DN05": [(11.5349, 106.8832), (11.4900, 106.7800), (11.4290, 106.6580)],
    "DN09": [(11.5349, 106.8832), (11.6500, 106.9200), (11.8370, 106.9730)],
    "DN12": [(10.9574, 106.8426), (11.0200, 106.9300), (11.1000, 107.0300)],
}
BRANDS = {
    VehicleType.CAR: [("Toyota", "Vios"), ("Hyundai", "Accent"), ("VinFast", "VF 5")],
    VehicleType.PICKUP: [("Ford", "Ranger"), ("Toyota", "Hilux")],
    VehicleType.TRUCK: [("Thaco", "Ollin 720"), ("Hino", "FC9JL"), ("Isuzu", "NQR75")],
    VehicleType.BUS: [("Thaco", "TB79S"), ("Hyundai", "County"), ("Samco", "Felix")],
    VehicleType.MOTORCYCLE: [("Honda", "Wave Alpha"), ("Yamaha", "Exciter"), ("Honda", "Vision")],
    VehicleType.TRACTOR_TRAILER: [("Howo", "A7"), ("Hyundai", "HD1000")],
    VehicleType.SPECIALIZED: [("Hyundai", "Xe cứu thương H350")],
    VehicleType.OTHER: [("Dongfeng", "Xe chuyên dùng")],
}  # fmt: skip
SERIES = {
    VehicleType.CAR: "A",
    VehicleType.PICKUP: "C",
    VehicleType.TRUCK: "C",
    VehicleType.BUS: "B",
    VehicleType.TRACTOR_TRAILER: "H",
    VehicleType.SPECIALIZED: "LD",
    VehicleType.OTHER: "LD",
}
FIRMS = [
    "Công ty TNHH Vận tải Hoàng Long Đồng Nai",
    "Công ty Cổ phần Xe khách Đồng Nai",
    "Công ty TNHH Logistics Tân Cảng Long Bình",
    "Hợp tác xã Vận tải Bình Phước",
    "Công ty Cổ phần Cao su Đồng Phú",
]
INSPECTION_STATIONS = ["6001S", "6002S", "6003D", "6005D", "9301S", "9302D"]


def _plate(sim: Sim, kind: VehicleType) -> str:
    province = "60" if sim.rng.random() < 0.75 else "93"
    number = f"{sim.rng.randint(0, 999):03d}.{sim.rng.randint(0, 99):02d}"
    if kind is VehicleType.MOTORCYCLE:
        return f"{province}-{sim.pick('BCDEFGHKLMNPSTUVXYZ')}{sim.rng.randint(1, 9)} {number}"
    return f"{province}{SERIES[kind]}-{number}"


def simulate_vehicle_registrations(spec: SimSpec, ref: ReferenceData) -> list[SimRecord]:
    sim = Sim("transport.vehicle_registrations", spec, ref)
    defects = sim.defects(sim.count, ("invalid_citizen_id", "far_future_timestamp"))
    kinds = list(BRANDS)
    weights = [35, 8, 10, 2, 40, 2, 1, 2]
    histories: list[History] = []
    used: set[str] = set()
    for reason in defects:
        kind = sim.rng.choices(kinds, weights)[0]
        plate = _plate(sim, kind)
        while plate in used:
            plate = _plate(sim, kind)
        used.add(plate)
        brand, model = sim.pick(BRANDS[kind])
        firm = kind in (VehicleType.BUS, VehicleType.TRACTOR_TRAILER) or sim.rng.random() < 0.1
        if reason == "invalid_citizen_id":
            firm = False
        person = sim.person(18, 75, bad_id=reason)
        registered_at = sim.moment(working_hours=True)
        day = registered_at.astimezone(LOCAL).date()
        age_years = 0 if sim.rng.random() < 0.4 else sim.rng.randint(1, 12)
        registered = day - timedelta(days=365 * age_years + sim.rng.randint(0, 364))
        if reason == "far_future_timestamp":
            registered = sim.far_future().astimezone(LOCAL).date()
        cycle = 12 if kind is VehicleType.BUS else 24
        expiry = None if kind is VehicleType.MOTORCYCLE else day + timedelta(days=30 * cycle)

        def make(
            expiry: date | None,
            status: RegistrationStatus,
            plate: str = plate,
            kind: VehicleType = kind,
            brand: str = brand,
            model: str = model,
            firm: bool = firm,
            owner_id: str = person.citizen_id,
            owner_name: str = sim.pick(FIRMS) if firm else person.full_name,
            registered: date = registered,
            station: str | None = None
            if kind is VehicleType.MOTORCYCLE
            else sim.pick(INSPECTION_STATIONS),
        ) -> VehicleRegistration:
            return VehicleRegistration(
                plate=plate,
                vehicle_type=kind,
                brand=brand,
                model=model,
                owner_kind=OwnerKind.ORGANIZATION if firm else OwnerKind.INDIVIDUAL,
                owner_citizen_id=None if firm else owner_id,
                owner_name=owner_name,
                registration_date=registered,
                inspection_expiry_date=expiry,
                inspection_station_code=station,
                status=status,
            )

        history = History(reason=reason)
        history.states.append(State(registered_at, make(expiry, RegistrationStatus.ACTIVE)))
        if expiry is not None and sim.rng.random() < 0.25:
            later = registered_at + sim.days(0.5, spec.days)
            renewed = expiry + timedelta(days=30 * cycle)
            history.states.append(State(later, make(renewed, RegistrationStatus.ACTIVE)))
        elif sim.rng.random() < 0.03:
            later = registered_at + sim.days(0.5, spec.days)
            history.states.append(State(later, make(expiry, RegistrationStatus.DEREGISTERED)))
        histories.append(history)
    return emit(sim, histories)


@dataclass(frozen=True)
class _Leg:
    start: tuple[float, float]
    end: tuple[float, float]
    km: float


def _km(a: tuple[float, float], b: tuple[float, float]) -> float:
    dlat = (b[0] - a[0]) * 111.0
    dlon = (b[1] - a[1]) * 111.0 * math.cos(math.radians((a[0] + b[0]) / 2))
    return math.hypot(dlat, dlon)


def _bearing(a: tuple[float, float], b: tuple[float, float]) -> float:
    dlat = b[0] - a[0]
    dlon = (b[1] - a[1]) * math.cos(math.radians((a[0] + b[0]) / 2))
    return round(math.degrees(math.atan2(dlon, dlat)) % 360, 1) % 360


def _along(points: list[tuple[float, float]], fraction: float) -> tuple[float, float, float]:
    """The point at ``fraction`` of the route's length, and the heading there."""
    legs = [_Leg(a, b, _km(a, b)) for a, b in itertools.pairwise(points)]
    total = sum(leg.km for leg in legs)
    target = fraction * total
    for leg in legs:
        if target <= leg.km or leg is legs[-1]:
            f = min(1.0, target / leg.km) if leg.km else 0.0
            lat = leg.start[0] + (leg.end[0] - leg.start[0]) * f
            lon = leg.start[1] + (leg.end[1] - leg.start[1]) * f
            return lat, lon, _bearing(leg.start, leg.end)
        target -= leg.km
    raise AssertionError("unreachable")


def simulate_bus_positions(spec: SimSpec, ref: ReferenceData) -> list[SimRecord]:
    sim = Sim("transport.bus_positions", spec, ref)
    n = sim.count
    defects = sim.defects(n, ("position_out_of_area", "far_future_timestamp"))
    routes = sorted(ROUTES)
    buses = [
        (f"60B-{sim.rng.randint(100, 999):03d}.{sim.rng.randint(10, 99):02d}", routes[i % 4])
        for i in range(max(2, min(12, spec.per_day // 10)))
    ]
    trip_minutes = {r: _km_total(ROUTES[r]) / 30 * 60 for r in routes}  # ~30 km/h average
    fixes = [n // len(buses) + (1 if i < n % len(buses) else 0) for i in range(len(buses))]
    histories: list[History] = []
    slot = 0
    for (plate, route), count in zip(buses, fixes, strict=True):
        history = History()
        times = sorted(sim.moment_between(5.0, 19.0, working_days=False) for _ in range(count))
        for at in times:
            reason = defects[slot]
            slot += 1
            local = at.astimezone(LOCAL)
            since = (local - local.replace(hour=5, minute=0, second=0)).total_seconds() / 60
            trip_no, into = divmod(since, trip_minutes[route])
            fraction = into / trip_minutes[route]
            points = ROUTES[route] if int(trip_no) % 2 == 0 else ROUTES[route][::-1]
            lat, lon, heading = _along(points, fraction)
            lat += sim.rng.uniform(-0.0003, 0.0003)
            lon += sim.rng.uniform(-0.0003, 0.0003)
            stopped = sim.rng.random() < 0.15
            speed = 0.0 if stopped else round(sim.rng.uniform(15, 55), 1)
            shown = sim.far_future() if reason == "far_future_timestamp" else at
            if reason == "position_out_of_area":
                lat, lon = 0.0, 0.0
            record = BusPosition(
                vehicle_plate=plate,
                route_id=route,
                trip_id=f"{route}-{local:%Y%m%d}-{int(trip_no) + 1:02d}",
                latitude=round(lat, 6),
                longitude=round(lon, 6),
                speed_kmh=speed,
                heading=heading,
                position_time=shown,
            )
            history.states.append(State(at, record))
        # A defect is per fix, not per bus: each fix is a one-state history here, and
        # emit_per_key numbers the versions per plate.
        histories.extend(_split_reasons(history, defects[slot - count : slot]))
    return emit_per_key(sim, histories)


def _km_total(points: list[tuple[float, float]]) -> float:
    return sum(_km(a, b) for a, b in itertools.pairwise(points))


def _split_reasons(history: History, reasons: list[str | None]) -> list[History]:
    return [History([state], reason) for state, reason in zip(history.states, reasons, strict=True)]


def emit_per_key(sim: Sim, histories: list[History]) -> list[SimRecord]:
    """Like ``emit`` but numbering versions per bus plate across one-fix histories."""
    flat = emit(sim, histories)
    counters: dict[str, int] = {}
    out: list[SimRecord] = []
    for rec in flat:
        assert isinstance(rec.record, BusPosition)
        plate = rec.record.vehicle_plate
        counters[plate] = counters.get(plate, 0) + 1
        version = counters[plate]
        out.append(
            SimRecord(
                dataset_id=rec.dataset_id,
                record=rec.record,
                version=version,
                op=Op.CREATE if version == 1 else Op.UPDATE,
                at=rec.at,
                event_id=rec.event_id,
                expect_reason=rec.expect_reason,
            )
        )
    return out
