"""Citizen reports from the citizen app."""

from __future__ import annotations

from stream_processors.standardizers.engine import (
    Commune,
    Coordinates,
    DatasetRules,
    Enum,
    Image,
    Phone,
    Text,
    Timestamp,
    Unit,
)

__all__ = ["REPORTS"]


def _report_times(img: Image) -> None:
    received, deadline, responded = (
        img.out[k] for k in ("received_at", "response_deadline", "responded_at")
    )
    if responded is not None and responded < received:
        raise img.fail("responded_before_received", "responded_at", "responded < received")
    if deadline is not None and deadline < received:
        img.flag("due_before_received")


REPORTS = DatasetRules(
    dataset_id="feedback.reports",
    record="FeedbackReport",
    doc="A standardized citizen report: NFC text, current commune code, E.164 phone.",
    rules=(
        Text("report_id"),
        Enum(
            "category",
            frozenset(
                {
                    "TRAFFIC",
                    "URBAN_ORDER",
                    "ENVIRONMENT",
                    "INFRASTRUCTURE",
                    "ELECTRICITY_WATER",
                    "SECURITY_ORDER",
                    "HEALTH",
                    "EDUCATION",
                    "ADMINISTRATIVE_PROCEDURE",
                    "OTHER",
                }
            ),
        ),
        Text("description"),
        Timestamp("received_at"),
        Commune("commune_code", required=False),
        Coordinates("latitude", "longitude"),
        # A report must not be lost for a mistyped phone: the number is dropped instead.
        Phone("reporter_phone", drop_invalid=True),
        Unit("handling_unit_code", required=False),
        Enum(
            "status",
            frozenset({"RECEIVED", "ASSIGNED", "IN_PROGRESS", "RESPONDED", "CLOSED", "REJECTED"}),
        ),
        Timestamp("response_deadline", required=False, deadline=True),
        Timestamp("responded_at", required=False),
    ),
    checks=(_report_times,),
    event_time="received_at",
)
