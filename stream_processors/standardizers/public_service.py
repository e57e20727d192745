"""publicservice.dossier_steps (the dossiers keep ``stream_processors.standardize``)."""

from __future__ import annotations

from stream_processors.standardizers.engine import (
    Code,
    DatasetRules,
    Enum,
    Image,
    Int,
    Text,
    Timestamp,
    Unit,
)

__all__ = ["DOSSIER_STEPS"]


def _step_times(img: Image) -> None:
    started, due, finished = (img.out[k] for k in ("started_at", "due_at", "finished_at"))
    if finished is not None and finished < started:
        raise img.fail("finished_before_started", "finished_at", "finished_at < started_at")
    if due is not None and due < started:
        img.flag("due_before_started")


DOSSIER_STEPS = DatasetRules(
    dataset_id="publicservice.dossier_steps",
    record="DossierStep",
    doc="A standardized dossier processing step: NFC text, UTC times, national step codes.",
    rules=(
        Text("step_id"),
        Text("dossier_id"),
        Int("step_order", min=1, max=1000),
        Code("step_code", "dossier_steps", keep_unknown=True),
        Text("step_name"),
        Unit("handling_unit_code"),
        Text("handler_officer_id", required=False, case="upper"),
        Enum("status", frozenset({"WAITING", "IN_PROGRESS", "COMPLETED", "RETURNED", "CANCELLED"})),
        Timestamp("started_at"),
        Timestamp("due_at", required=False, deadline=True),
        Timestamp("finished_at", required=False),
        Text("note", required=False),
    ),
    checks=(_step_times,),
    event_time="started_at",
)
