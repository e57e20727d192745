"""Rule group ``aqi_station``: air monitoring stations (``environment.station_readings``).

Key: the station id. Payload (``alert_facts``): ``{"t": reading time ms, "aqi": VN_AQI}``
for an air reading that carries an AQI. The state keeps the station's newest
``keep_readings`` readings by reading time (``{"r": {t: aqi}, "wm": newest t}``), so it
is bounded whatever the station's history; a reading arriving up to
``max_lateness_minutes`` behind the newest takes its place in time order, an older one
is dropped. The kept set is the newest readings of all those seen, in whatever order
they came (a correction of a reading replaces it).

Rule ``air_quality_aqi``: firing when the ``consecutive`` newest readings are all above
``raise_above``; clear when the ``clear_consecutive`` newest are all at or below
``clear_at_or_below``, or when the station has sent nothing for ``stale_after_minutes``
(no evidence left: the dataset-silent rule reports the silence); holding in between.
CRITICAL when every one of the ``consecutive`` newest is above ``critical_above``.
"""

from __future__ import annotations

from typing import Any

from stream_processors.alerts.lifecycle import Condition, Severity, Status, disabled
from stream_processors.alerts.rules.config import RulesConfig

__all__ = ["GROUP", "RULE", "AirStationGroup"]

GROUP = "aqi_station"
DATASET = "environment.station_readings"
RULE = "air_quality_aqi"


class AirStationGroup:
    name = GROUP

    def apply(
        self, state: dict[str, Any] | None, deltas: list[dict[str, Any]], rules: RulesConfig
    ) -> dict[str, Any]:
        cfg = rules.air_quality_aqi
        readings: dict[str, int] = dict(state["r"]) if state else {}
        wm = int(state["wm"]) if state else 0
        for delta in deltas:
            wm = max(wm, int(delta["payload"]["t"]))
        horizon = wm - cfg.max_lateness_minutes * 60_000
        for delta in deltas:
            t = int(delta["payload"]["t"])
            aqi = int(delta["payload"]["aqi"])
            if t < horizon:
                continue
            if int(delta["sign"]) > 0:
                readings[str(t)] = aqi
            elif readings.get(str(t)) == aqi:
                del readings[str(t)]
        newest = sorted((int(t) for t in readings if int(t) >= horizon), reverse=True)
        kept = newest[: cfg.keep_readings]
        return {"r": {str(t): readings[str(t)] for t in sorted(kept)}, "wm": wm}

    def evaluate(
        self, key: str, state: dict[str, Any], now_ms: int, rules: RulesConfig
    ) -> list[Condition]:
        cfg = rules.air_quality_aqi
        if not cfg.enabled:
            return [disabled(RULE, DATASET, "station", key, key, now_ms)]
        series = sorted(((int(t), int(a)) for t, a in state["r"].items()), reverse=True)
        n = cfg.consecutive
        last = [a for _, a in series[:n]]
        latest_t = series[0][0] if series else 0
        latest = last[0] if last else 0
        run = 0
        for _, aqi in series:
            if aqi <= cfg.raise_above:
                break
            run += 1
        stale = not series or now_ms - latest_t > cfg.stale_after_minutes * 60_000
        calm = [a for _, a in series[: cfg.clear_consecutive]]
        status: Status
        if stale:
            status = "clear"
        elif len(last) == n and min(last) > cfg.raise_above:
            status = "firing"
        elif len(calm) == cfg.clear_consecutive and max(calm) <= cfg.clear_at_or_below:
            status = "clear"
        else:
            status = "holding"
        severity: Severity = (
            "CRITICAL" if len(last) == n and min(last) > cfg.critical_above else cfg.severity
        )
        if stale:
            vi = f"Trạm {key}: không có số liệu AQI mới, cảnh báo được đóng"
            en = f"Station {key}: no recent AQI readings, alert closed"
        elif status == "clear":
            vi = f"Trạm {key}: AQI đã giảm còn {latest}"
            en = f"Station {key}: AQI back to {latest}"
        else:
            vi = f"Trạm {key}: AQI {latest}, {run} lần đo liên tiếp trên {cfg.raise_above}"
            en = f"Station {key}: AQI {latest}, {run} consecutive readings above {cfg.raise_above}"
        window_start = series[len(last) - 1][0] if series else now_ms
        return [
            Condition(
                rule=RULE,
                status=status,
                severity=severity,
                dataset=DATASET,
                subject_kind="station",
                subject=key,
                unit_code=key,
                value=float(latest),
                threshold=float(cfg.raise_above),
                clear_threshold=float(cfg.clear_at_or_below),
                window=f"{n} readings",
                window_days=0,
                window_start_ms=window_start,
                window_end_ms=latest_t or now_ms,
                evidence={
                    "latest_aqi": latest,
                    "min_aqi_last_n": min(last) if last else 0,
                    "max_aqi_last_n": max(last) if last else 0,
                    "readings_above": run,
                    "consecutive_required": n,
                },
                message_vi=vi,
                message_en=en,
                material_change=cfg.update_step,
                min_update_interval_ms=cfg.min_update_interval_ms,
            )
        ]
