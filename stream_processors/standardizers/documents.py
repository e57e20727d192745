"""Document management: official documents and their processing tasks."""

from __future__ import annotations

from stream_processors.standardizers.engine import (
    Code,
    DatasetRules,
    Date,
    Enum,
    Image,
    Int,
    Text,
    Timestamp,
    Unit,
)

__all__ = ["OFFICIAL_DOCUMENTS", "TASKS"]


def _not_confidential(img: Image) -> None:
    # Checked before anything else is read: a state-secret document must not be copied
    # anywhere, not even into a standardized record on its way to the DLQ.
    if img.raw.get("confidentiality") != "NORMAL":
        raise img.fail(
            "confidential_document", "confidentiality", "only NORMAL documents belong on the bus"
        )


def _document(img: Image) -> None:
    if img.out["direction"] == "OUTGOING" and img.out["received_at"] is not None:
        img.flag("received_at_on_outgoing")


OFFICIAL_DOCUMENTS = DatasetRules(
    dataset_id="documents.official_documents",
    record="OfficialDocument",
    doc="A standardized official document: NFC text, Decree 30/2020 type code, UTC times.",
    prechecks=(_not_confidential,),
    rules=(
        Text("document_id"),
        Enum("direction", frozenset({"INCOMING", "OUTGOING"})),
        Text("number_symbol"),
        Code("document_type", "document_types", keep_unknown=True, into="document_type_code"),
        Text("issuing_unit_name"),
        Unit("issuing_unit_code", required=False),
        Unit("receiving_unit_code"),
        Text("subject"),
        Date("issued_date"),
        Timestamp("received_at", required=False),
        Enum("urgency", frozenset({"NORMAL", "URGENT", "VERY_URGENT", "EXPRESS"})),
        Enum("confidentiality", frozenset({"NORMAL"})),
        Int("page_count", required=False, min=1, max=100_000),
    ),
    checks=(_document,),
)


def _task_times(img: Image) -> None:
    assigned, due, done = (img.out[k] for k in ("assigned_at", "due_at", "done_at"))
    if done is not None and done < assigned:
        raise img.fail("done_before_assigned", "done_at", "done_at < assigned_at")
    if due is not None and due < assigned:
        img.flag("due_before_assigned")


TASKS = DatasetRules(
    dataset_id="documents.tasks",
    record="DocumentTask",
    doc="A standardized document processing task: known units, UTC times in order.",
    rules=(
        Text("task_id"),
        Text("document_id"),
        Unit("assignee_unit_code"),
        Text("assignee_officer_id", required=False, case="upper"),
        Enum("role", frozenset({"LEAD", "COORDINATE", "FOR_INFORMATION"})),
        Text("instruction", required=False),
        Enum("status", frozenset({"PENDING", "IN_PROGRESS", "COMPLETED", "RETURNED", "CANCELLED"})),
        Timestamp("assigned_at"),
        Timestamp("due_at", required=False, deadline=True),
        Timestamp("done_at", required=False),
    ),
    checks=(_task_times,),
    event_time="assigned_at",
)
