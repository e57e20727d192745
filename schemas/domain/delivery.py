"""Who delivers what: reconciliation rows and the per-unit delivery ledger, as pure data.

- **Reconciliation**: what each source declared it sent, per (dataset, unit, local
  day), set against what the raw topics received (``reconcile``).
- **The delivery ledger**: per owner unit, what the catalog assigns it and what it
  delivers — assigned, delivering (at least one event), live (newest *event time*
  within the catalog's update obligation; a source sending week-old records is
  delivering but late), quality (weighted by what each source unit sent) and the
  declared / received / missing totals (``build_ledger``).

The IOC sink and the operator commands compute the same figures with these functions;
reading the topics is theirs (``databus.reconcile``, ``databus.ledger``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from schemas.catalog import Dataset, UpdateObligation
from schemas.domain.freshness import is_live

__all__ = [
    "LOCAL",
    "DatasetDelivery",
    "DeliveryState",
    "Key",
    "ReconRow",
    "Status",
    "UnitLedger",
    "build_ledger",
    "dataset_live",
    "delivery_state",
    "epoch_ms",
    "latest_declarations",
    "latest_quality_rows",
    "local_day",
    "reconcile",
]


LOCAL = ZoneInfo("Asia/Ho_Chi_Minh")


Key = tuple[str, str, date]
"""(dataset id, sending unit, local day)."""


Status = Literal["ok", "missing", "extra", "undeclared"]


@dataclass(frozen=True, order=True)
class ReconRow:
    dataset: str
    unit: str
    day: date
    declared: int | None
    received: int
    dead_lettered: int
    missing: int | None  # declared - received; negative when more arrived than declared
    status: Status


def _status(declared: int | None, received: int) -> Status:
    if declared is None:
        return "undeclared"
    if received == declared:
        return "ok"
    return "missing" if received < declared else "extra"


def reconcile(
    declared: Mapping[Key, int],
    received: Mapping[Key, int],
    dead_lettered: Mapping[Key, int],
) -> list[ReconRow]:
    """One row per key seen anywhere, sorted by dataset, unit and day."""
    rows = []
    for key in sorted({*declared, *received, *dead_lettered}):
        dataset, unit, day = key
        want = declared.get(key)
        got = received.get(key, 0)
        rows.append(
            ReconRow(
                dataset=dataset,
                unit=unit,
                day=day,
                declared=want,
                received=got,
                dead_lettered=dead_lettered.get(key, 0),
                missing=None if want is None else want - got,
                status=_status(want, got),
            )
        )
    return rows


def local_day(ts: datetime) -> date:
    """The Asia/Ho_Chi_Minh day of an aware timestamp (naive ones are taken as UTC)."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=ZoneInfo("UTC"))
    return ts.astimezone(LOCAL).date()


def latest_declarations(records: Iterable[Mapping[str, Any]]) -> dict[Key, int]:
    """Decoded declarations in topic order -> the latest count per key."""
    latest: dict[Key, int] = {}
    for rec in records:
        latest[(str(rec["dataset"]), str(rec["unit"]), rec["day"])] = int(rec["count"])
    return latest


DeliveryState = Literal["live", "late", "silent"]


def dataset_live(update: UpdateObligation, last_event_ms: int, now_ms: int) -> bool:
    """THE definition of "live", used by the ledger, ``databus catalog status`` and the
    `databus up` summary alike: the newest *event time* a dataset's sources sent lies
    within the catalog's update obligation at ``now_ms``. A source re-sending week-old
    records (a backfill, the simulator's history) is delivering but late; when that
    arrived is not the question. ``last_event_ms`` 0: nothing was sent, not live."""
    return is_live(update, last_event_ms, now_ms)


def delivery_state(delivering: bool, live: bool) -> DeliveryState:
    """One word for a dataset: ``live`` (see ``dataset_live``), ``late`` (delivering,
    but its newest event is older than the obligation allows) or ``silent``."""
    if live:
        return "live"
    return "late" if delivering else "silent"


@dataclass(frozen=True)
class DatasetDelivery:
    dataset: str
    owner_unit: str
    obligation: str
    delivering: bool
    live: bool
    late: bool
    source_units: int  # source units that sent at least one event
    last_event: datetime | None
    quality: float | None
    declared: int | None
    received: int
    missing: int

    @property
    def state(self) -> DeliveryState:
        return delivery_state(self.delivering, self.live)


@dataclass(frozen=True)
class UnitLedger:
    unit: str
    name: str
    assigned: int
    delivering: int
    live: int
    late: int
    quality: float | None
    declared: int | None
    received: int
    missing: int
    datasets: list[DatasetDelivery] = field(default_factory=list)

    def summary(self) -> str:
        """``Sở Y tế: 3/3 delivering, 2 live``."""
        return f"{self.name}: {self.delivering}/{self.assigned} delivering, {self.live} live"

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        for ds in out["datasets"]:
            last = ds["last_event"]
            ds["last_event"] = last.isoformat() if last is not None else None
        return out


def epoch_ms(value: object) -> int:
    """Epoch milliseconds of a decoded timestamp (aware or UTC-naive datetime, a number,
    or digits as text); 0 when there is none."""
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return int(moment.timestamp() * 1000)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return 0


def latest_quality_rows(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Decoded ``quality.v1`` records in topic order -> the latest per (dataset, unit)."""
    latest: dict[tuple[str, str], Mapping[str, Any]] = {}
    for rec in records:
        key = (str(rec["dataset"]), str(rec["unit_code"]))
        if key not in latest or epoch_ms(rec.get("ts_ms")) >= epoch_ms(latest[key].get("ts_ms")):
            latest[key] = rec
    return list(latest.values())


def _mean(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(sum(known) / len(known), 4) if known else None


def _delivery(
    ds: Dataset,
    rows: list[Mapping[str, Any]],
    recon: list[ReconRow],
    now_ms: int,
) -> DatasetDelivery:
    sending = [
        r for r in rows if epoch_ms(r.get("last_seen_ts")) > 0 or int(r.get("received") or 0)
    ]
    last_event_ms = max((epoch_ms(r.get("last_event_ts")) for r in sending), default=0)
    delivering = bool(sending)
    live = delivering and dataset_live(ds.update, last_event_ms, now_ms)
    # Weighted by what each source unit sent: a unit with one record does not weigh
    # as much as one with thousands.
    weighted = [
        (float(r["overall"]), int(r.get("received") or 0))
        for r in sending
        if r.get("overall") is not None
    ]
    weight = sum(n for _s, n in weighted)
    quality = (
        round(sum(s * n for s, n in weighted) / weight, 4)
        if weight
        else _mean(s for s, _n in weighted)
    )
    declared_rows = [r for r in recon if r.declared is not None]
    return DatasetDelivery(
        dataset=ds.id,
        owner_unit=ds.owner_unit,
        obligation=ds.update.describe(),
        delivering=delivering,
        live=live,
        late=delivering and not live,
        source_units=len(sending),
        last_event=datetime.fromtimestamp(last_event_ms / 1000, UTC) if last_event_ms else None,
        quality=quality,
        declared=sum(r.declared or 0 for r in declared_rows) if declared_rows else None,
        received=sum(r.received for r in recon),
        missing=sum(max(0, r.missing or 0) for r in declared_rows),
    )


def build_ledger(
    datasets: Iterable[Dataset],
    quality_rows: Iterable[Mapping[str, Any]],
    now: datetime,
    *,
    recon: Iterable[ReconRow] = (),
    unit_names: Mapping[str, str] | None = None,
) -> list[UnitLedger]:
    """One ledger row per owner unit of ``datasets``, sorted by unit code."""
    now_ms = epoch_ms(now)
    rows_by_ds: dict[str, list[Mapping[str, Any]]] = {}
    for row in quality_rows:
        rows_by_ds.setdefault(str(row["dataset"]), []).append(row)
    recon_by_ds: dict[str, list[ReconRow]] = {}
    for r in recon:
        recon_by_ds.setdefault(r.dataset, []).append(r)
    by_unit: dict[str, list[DatasetDelivery]] = {}
    for ds in datasets:
        delivery = _delivery(ds, rows_by_ds.get(ds.id, []), recon_by_ds.get(ds.id, []), now_ms)
        by_unit.setdefault(ds.owner_unit, []).append(delivery)
    names = unit_names or {}
    ledger = []
    for unit in sorted(by_unit):
        items = sorted(by_unit[unit], key=lambda d: d.dataset)
        declared = [d.declared for d in items if d.declared is not None]
        ledger.append(
            UnitLedger(
                unit=unit,
                name=names.get(unit, unit),
                assigned=len(items),
                delivering=sum(d.delivering for d in items),
                live=sum(d.live for d in items),
                late=sum(d.late for d in items),
                quality=_mean(d.quality for d in items if d.delivering),
                declared=sum(declared) if declared else None,
                received=sum(d.received for d in items),
                missing=sum(d.missing for d in items),
                datasets=items,
            )
        )
    return ledger
