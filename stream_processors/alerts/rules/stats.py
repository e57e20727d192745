"""Rule group ``dataset_unit`` (``STATS_GROUP``): per-batch counts of a dataset from a unit.

Key: ``batch_stats.stats_key(dataset, unit)`` = ``"<dataset>|<unit>"``. Deltas carry
``UnitStats.to_json()`` (sign +1). State: the newest receive and event times, and
(received, dead-lettered) per receive hour over the dead-letter window —
``{"last_seen_ms", "last_event_ms", "hours": {hour: [received, dead]}, "wm"}``.

Rules (evaluated at wall-clock ``now_ms`` on periodic ticks, as well as after deltas):
- ``dataset_silent`` — nothing received from the unit for longer than the dataset's
  catalog obligation allows (``freshness.silence_allowed_ms``) plus ``grace_minutes``;
  CRITICAL after ``critical_after_hours``. Only datasets of the catalog, only known
  units (``unknown`` is not a unit anyone can be asked about), and only once something
  was received (the delivery ledger reports datasets never delivered).
- ``dead_letter_share`` — dead-lettered / received over the last ``window_hours``
  receive hours; raises only with ``min_received`` or more, clears below
  ``clear_below`` or when nothing was received in the window.
"""

from __future__ import annotations

from typing import Any

from schemas.catalog import DATASETS
from schemas.domain.freshness import silence_allowed_ms
from stream_processors.alerts.lifecycle import Condition, Severity, Status, disabled
from stream_processors.alerts.rules.config import RulesConfig
from stream_processors.alerts.rules.window import HOUR_MS

__all__ = ["DEAD_LETTER", "GROUP", "SILENT", "StatsGroup"]

GROUP = "dataset_unit"
SILENT = "dataset_silent"
DEAD_LETTER = "dead_letter_share"
_UNKNOWN_UNIT = "unknown"


class StatsGroup:
    name = GROUP

    def apply(
        self, state: dict[str, Any] | None, deltas: list[dict[str, Any]], rules: RulesConfig
    ) -> dict[str, Any]:
        base = state or {"last_seen_ms": 0, "last_event_ms": 0, "hours": {}, "wm": 0}
        hours: dict[str, list[int]] = {h: list(v) for h, v in base["hours"].items()}
        last_seen = int(base["last_seen_ms"])
        last_event = int(base["last_event_ms"])
        wm = int(base["wm"])
        for delta in deltas:
            p = delta["payload"]
            seen = int(p.get("last_seen_ms") or 0)
            wm = max(wm, seen, int(delta.get("event_ms") or 0))
        oldest = wm // HOUR_MS - rules.dead_letter_share.window_hours + 1
        for delta in deltas:
            p = delta["payload"]
            sign = int(delta["sign"])
            seen = int(p.get("last_seen_ms") or 0)
            last_seen = max(last_seen, seen)
            last_event = max(last_event, int(p.get("last_event_ms") or 0))
            hour = (seen or int(delta.get("event_ms") or 0)) // HOUR_MS
            if hour < oldest:
                continue
            pair = hours.setdefault(str(hour), [0, 0])
            pair[0] += sign * int(p.get("received") or 0)
            pair[1] += sign * int(p.get("dead_lettered") or 0)
            if pair == [0, 0]:
                del hours[str(hour)]
        return {
            "last_seen_ms": last_seen,
            "last_event_ms": last_event,
            "hours": {h: v for h, v in hours.items() if int(h) >= oldest},
            "wm": wm,
        }

    def evaluate(
        self, key: str, state: dict[str, Any], now_ms: int, rules: RulesConfig
    ) -> list[Condition]:
        dataset, _, unit = key.partition("|")
        found = [self._dead_letter(key, dataset, unit, state, now_ms, rules)]
        silent = self._silent(key, dataset, unit, state, now_ms, rules)
        if silent is not None:
            found.append(silent)
        return found

    def _silent(
        self,
        key: str,
        dataset: str,
        unit: str,
        state: dict[str, Any],
        now_ms: int,
        rules: RulesConfig,
    ) -> Condition | None:
        cfg = rules.dataset_silent
        entry = DATASETS.get(dataset)
        if entry is None or unit == _UNKNOWN_UNIT:
            return None
        if not cfg.enabled:
            return disabled(SILENT, dataset, "dataset_unit", key, unit, now_ms)
        last_seen = int(state["last_seen_ms"])
        if last_seen <= 0:
            return None
        allowed = silence_allowed_ms(entry.update, now_ms) + round(cfg.grace_minutes * 60_000)
        silent_for = max(0, now_ms - last_seen)
        status: Status = "firing" if silent_for > allowed else "clear"
        severity: Severity = (
            "CRITICAL" if silent_for >= cfg.critical_after_hours * HOUR_MS else cfg.severity
        )
        minutes = silent_for // 60_000
        obligation = entry.update.describe()
        if status == "clear":
            vi = f"{dataset} ({unit}): đã nhận lại dữ liệu"
            en = f"{dataset} ({unit}): data received again"
        else:
            vi = (
                f"{dataset} ({unit}): không nhận được dữ liệu {minutes} phút "
                f"(yêu cầu: {obligation})"
            )
            en = (
                f"{dataset} ({unit}): nothing received for {minutes} min (obligation: {obligation})"
            )
        return Condition(
            rule=SILENT,
            status=status,
            severity=severity,
            dataset=dataset,
            subject_kind="dataset_unit",
            subject=key,
            unit_code=unit,
            value=float(minutes),
            threshold=float(allowed // 60_000),
            clear_threshold=None,
            window=obligation,
            window_days=0,
            window_start_ms=last_seen,
            window_end_ms=now_ms,
            evidence={
                "silent_minutes": minutes,
                "allowed_minutes": allowed // 60_000,
                "last_seen_ms": last_seen,
                "last_event_ms": int(state["last_event_ms"]),
            },
            message_vi=vi,
            message_en=en,
            material_change=cfg.update_step,
            min_update_interval_ms=cfg.min_update_interval_ms,
        )

    def _dead_letter(
        self,
        key: str,
        dataset: str,
        unit: str,
        state: dict[str, Any],
        now_ms: int,
        rules: RulesConfig,
    ) -> Condition:
        cfg = rules.dead_letter_share
        if not cfg.enabled:
            return disabled(DEAD_LETTER, dataset, "dataset_unit", key, unit, now_ms)
        last_hour = now_ms // HOUR_MS
        first_hour = last_hour - cfg.window_hours + 1
        received = dead = 0
        for hour, (rec, dl) in state["hours"].items():
            if first_hour <= int(hour) <= last_hour:
                received += rec
                dead += dl
        share = dead / received if received > 0 else 0.0
        status: Status
        if received <= 0 or share < cfg.clear_below:
            status = "clear"
        elif received >= cfg.min_received and share > cfg.raise_above:
            status = "firing"
        else:
            status = "holding"
        severity: Severity = "CRITICAL" if share >= cfg.critical_at else cfg.severity
        h = cfg.window_hours
        return Condition(
            rule=DEAD_LETTER,
            status=status,
            severity=severity,
            dataset=dataset,
            subject_kind="dataset_unit",
            subject=key,
            unit_code=unit,
            value=round(share, 4),
            threshold=cfg.raise_above,
            clear_threshold=cfg.clear_below,
            window=f"{h}h",
            window_days=h // 24,
            window_start_ms=first_hour * HOUR_MS,
            window_end_ms=now_ms,
            evidence={
                "received": received,
                "dead_lettered": dead,
                "min_received": cfg.min_received,
            },
            message_vi=(
                f"{dataset} ({unit}): {share:.1%} sự kiện bị chuyển vào hàng lỗi trong {h} giờ "
                f"({dead}/{received}, ngưỡng {cfg.raise_above:.0%})"
            ),
            message_en=(
                f"{dataset} ({unit}): {share:.1%} of events dead-lettered over {h} h "
                f"({dead} of {received}, threshold {cfg.raise_above:.0%})"
            ),
            material_change=cfg.update_step,
            min_update_interval_ms=cfg.min_update_interval_ms,
        )
