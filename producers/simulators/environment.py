"""Automatic monitoring stations: air (AQI, PM2.5, PM10, gases) and surface water.

Stations sit in Biên Hòa, Long Khánh, Trảng Bom, Đồng Xoài and along the Đồng Nai and
Bé rivers. Air readings follow a daily cycle (worse in the morning and evening rush);
PM10 is larger than PM2.5 and the VN_AQI is computed from both with the breakpoints of
Decision 1459/QĐ-TCMT. Water readings keep pH 6–9, DO 4–8 mg/L. ``reading_time`` is
the datalogger's local ``yyyyMMddHHmmss`` (a few stations send naive ISO 8601).

Defects (the model accepts them, the domain does not): PM2.5 above PM10 — PM2.5 is a
part of PM10 — and dissolved oxygen far above saturation (``impossible_measurement``);
a reading timed in the far future. Negative concentrations and pH above 14 are refused
by the model itself, so they never reach the bus.
"""

from __future__ import annotations

from datetime import timedelta

from producers.simulators._common import (
    LOCAL,
    History,
    Sim,
    SimRecord,
    SimSpec,
    State,
    emit,
    local_compact,
)
from schemas.domain.reference import ReferenceData
from schemas.models.environment import StationReading, StationType

__all__ = ["simulate_station_readings", "vn_aqi"]

# (station id, type, lat, lon)
STATIONS = [
    ("KK-BH-01", StationType.AIR, 10.9570, 106.8430),  # Biên Hòa, Sở NN&MT
    ("KK-BH-02", StationType.AIR, 10.9280, 106.8810),  # KCN Biên Hòa 2
    ("KK-TB-01", StationType.AIR, 10.9510, 106.9950),  # Trảng Bom
    ("KK-LK-01", StationType.AIR, 10.9330, 107.2440),  # Long Khánh
    ("KK-DX-01", StationType.AIR, 11.5350, 106.8840),  # Đồng Xoài
    ("KK-CT-01", StationType.AIR, 11.4300, 106.6600),  # Chơn Thành
    ("NM-DN-01", StationType.WATER, 10.9410, 106.8030),  # sông Đồng Nai, Hóa An
    ("NM-TA-01", StationType.WATER, 11.1040, 107.0320),  # hồ Trị An
    ("NM-SB-01", StationType.WATER, 11.3680, 106.7300),  # sông Bé, Phước Hòa
    ("NM-TM-01", StationType.WATER, 11.8480, 106.9980),  # hồ Thác Mơ
]

# VN_AQI breakpoints (Decision 1459/QĐ-TCMT, 2019): index → 24 h concentration, µg/m³.
_I = [0, 50, 100, 150, 200, 300, 400, 500]
_PM25 = [0, 25, 50, 80, 150, 250, 350, 500]
_PM10 = [0, 50, 150, 250, 350, 420, 500, 600]


def _sub_index(conc: float, bps: list[int]) -> float:
    for k in range(1, len(bps)):
        if conc <= bps[k]:
            lo, hi = bps[k - 1], bps[k]
            return _I[k - 1] + (_I[k] - _I[k - 1]) * (conc - lo) / (hi - lo)
    return 500.0


def vn_aqi(pm25: float, pm10: float) -> int:
    """The VN_AQI of a PM2.5/PM10 pair (the larger sub-index, capped at 500)."""
    return min(500, round(max(_sub_index(pm25, _PM25), _sub_index(pm10, _PM10))))


def simulate_station_readings(spec: SimSpec, ref: ReferenceData) -> list[SimRecord]:
    sim = Sim("environment.station_readings", spec, ref)
    n = sim.count
    defects = sim.defects(n, ("impossible_measurement", "far_future_timestamp"))
    per_station = max(1, -(-n // len(STATIONS)))
    step = timedelta(seconds=spec.days * 86400 // per_station)
    # Each station's own level: industrial sites are dustier.
    base = {s[0]: sim.rng.uniform(18, 45) for s in STATIONS}
    histories: list[History] = []
    slot = 0
    for k in range(per_station):
        for station_id, kind, lat, lon in STATIONS:
            if slot >= n:
                break
            reason = defects[slot]
            slot += 1
            at = sim.end - step * k - timedelta(seconds=sim.rng.randint(0, 59))
            local = at.astimezone(LOCAL)
            shown = sim.far_future() if reason == "far_future_timestamp" else at
            if station_id.endswith("-02") and sim.rng.random() < 0.3:
                reading_time = shown.astimezone(LOCAL).strftime("%Y-%m-%dT%H:%M:%S")
            else:
                reading_time = local_compact(shown, "%Y%m%d%H%M%S")
            values: dict[str, object] = {
                "station_id": station_id,
                "station_type": kind,
                "reading_time": reading_time,
                "latitude": lat,
                "longitude": lon,
            }
            if kind is StationType.AIR:
                rush = 1.6 if local.hour in (6, 7, 8, 17, 18, 19) else 1.0
                dry = 1.3 if local.month in (12, 1, 2, 3) else 1.0
                pm25 = round(max(3.0, sim.rng.gauss(base[station_id] * rush * dry, 8)), 1)
                pm10 = round(pm25 / sim.rng.uniform(0.55, 0.8), 1)
                if reason == "impossible_measurement":
                    pm25, pm10 = round(pm10 * 1.8, 1), pm25
                values.update(
                    aqi=vn_aqi(pm25, pm10),
                    pm25=pm25,
                    pm10=pm10,
                    co=round(sim.rng.uniform(800, 4000) * rush, 0),
                    no2=round(sim.rng.uniform(10, 60) * rush, 1),
                    so2=round(sim.rng.uniform(5, 40), 1),
                    o3=round(sim.rng.uniform(20, 120), 1),
                )
            else:
                do = round(sim.rng.uniform(4.0, 7.5), 2)
                if reason == "impossible_measurement":
                    do = round(sim.rng.uniform(40, 90), 1)
                values.update(
                    ph=round(sim.rng.uniform(6.3, 8.2), 2),
                    do=do,
                    cod=round(sim.rng.uniform(5, 25), 1),
                    bod5=round(sim.rng.uniform(2, 12), 1),
                    tss=round(sim.rng.uniform(10, 80), 1),
                )
            record = StationReading.model_validate(values)
            histories.append(History([State(at, record)], reason))
    return emit(sim, histories)
