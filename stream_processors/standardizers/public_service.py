"""Public-service datasets: dossiers (``dossiers.raw.v1``) and their processing steps.

The dossier contract predates the engine and words its problems its own way; what is
specific to it is declared here:

- every text field is checked (a string, not blank) before any other field is read
  (``require_text``), so a text problem is the one reported;
- a null status or channel is an invalid value, not a missing one (``null_is_invalid``);
- times and the birth date must be strings: received/due are parsed as sent (stripped,
  not normalized), completed_at and the birth date normalized, none of them flagged
  ``text_normalized`` (``_PortalTime``, ``_PortalDate``); a far-future time is worded by
  ``parse_timestamp``; the citizen id is checked in its normalized form
  (``_PortalCitizenId``);
- the std record keeps its field order (``fields``) and its hand-written, registered
  schema (``schema_generated=False``); ``unknown_receiving_unit`` keeps its wording;
- a procedure code the procedures code list lacks is kept and flagged
  ``procedure_not_in_list``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from schemas.domain.timeparse import TimeRejection, parse_timestamp, parse_timestamp_text
from stream_processors.standardizers.engine import (
    CitizenId,
    Code,
    Commune,
    DatasetRules,
    Date,
    Enum,
    Image,
    Int,
    Text,
    Timestamp,
    Unit,
    require_text,
)
from stream_processors.standardizers.result import Invalid

__all__ = ["DOSSIERS", "DOSSIER_STEPS"]

# The text fields of a dossier image, in the order their problems are reported.
_TEXT_FIELDS = (
    "dossier_id",
    "dossier_code",
    "procedure_code",
    "procedure_name",
    "receiving_unit_code",
    "admin_unit_code",
    "applicant_citizen_id",
    "applicant_name",
)


@dataclass(frozen=True)
class _PortalTime(Timestamp):
    """A portal time: a string; a required one is parsed as sent, an optional one
    normalized (blank as null)."""

    def _text(self, img: Image) -> str | None:
        return img.sent_text(self.name, self.required, normalize=not self.required)

    def read(self, img: Image) -> datetime | None:
        text = self._text(img)
        if text is None:
            return None
        parsed = parse_timestamp_text(text, self.deadline)
        if isinstance(parsed, TimeRejection):
            raise img.fail(parsed.reason, self.name, parsed.detail)
        img.flag(*parsed.flags)
        return parsed.value

    def too_far(self, img: Image, moment: datetime) -> Invalid:
        text = self._text(img)
        rejection = None if text is None else parse_timestamp(text, now=img.now)
        if isinstance(rejection, TimeRejection):
            return img.fail(rejection.reason, self.name, rejection.detail)
        return super().too_far(img, moment)


@dataclass(frozen=True)
class _PortalDate(Date):
    """A portal date: a string, normalized, blank as null."""

    def read(self, img: Image) -> date | None:
        text = img.sent_text(self.name, self.required, normalize=True)
        return None if text is None else self.parse(img, text)


@dataclass(frozen=True)
class _PortalCitizenId(CitizenId):
    """The citizen id in its normalized form (``require_text`` has checked it)."""

    def read(self, img: Image) -> str | None:
        return img.string(self.name, self.required)


def _dossier_times(img: Image) -> None:
    # Suspicious but usable: flagged for quality scores rather than dead-lettered, so the
    # dossier still counts in the unit's KPIs.
    out = img.out
    received, completed = out["received_at"], out["completed_at"]
    if out["due_at"] < received:
        img.flag("due_before_received")
    if completed is not None and completed < received:
        img.flag("completed_before_received")
    if out["status"] == "COMPLETED" and completed is None:
        img.flag("completed_at_missing")


def _procedure_listed(img: Image) -> None:
    procedures = img.ctx.codes.get("procedures")
    # The code is normalized text already: its case-fold is the list's lookup form
    # (CodeList.lookup would normalize it again, ~10 µs).
    if procedures is not None and img.out["procedure_code"].casefold() not in procedures.aliases:
        img.flag("procedure_not_in_list")


DOSSIERS = DatasetRules(
    dataset_id="publicservice.dossiers",
    record="Dossier",
    doc="A standardized dossier change: NFC text, UTC timestamps, post-2025 "
    "administrative-unit codes.",
    prechecks=(require_text(*_TEXT_FIELDS),),
    # In the order the portal contract reports problems; the record's order is ``fields``.
    rules=(
        Text("dossier_id"),
        Text("dossier_code"),
        Text("procedure_code"),
        Text("procedure_name"),
        Text("applicant_name"),
        Enum("applicant_sex", frozenset({"MALE", "FEMALE"}), required=False),
        Enum(
            "status",
            frozenset(
                {
                    "RECEIVED",
                    "IN_PROGRESS",
                    "SUPPLEMENT_REQUESTED",
                    "COMPLETED",
                    "RETURNED",
                    "CANCELLED",
                }
            ),
            null_is_invalid=True,
        ),
        Enum("channel", frozenset({"ONLINE", "IN_PERSON"}), null_is_invalid=True),
        _PortalTime("received_at"),
        _PortalTime("due_at", deadline=True),
        _PortalTime("completed_at", required=False),
        _PortalDate("applicant_birth_date", required=False, birth=True, event_name="received_at"),
        _PortalCitizenId(
            "applicant_citizen_id", birth_date="applicant_birth_date", sex="applicant_sex"
        ),
        Unit("receiving_unit_code"),
        Commune("admin_unit_code"),
    ),
    checks=(_dossier_times, _procedure_listed),
    event_time="received_at",
    fields=(
        *_TEXT_FIELDS[:6],  # the text fields up to admin_unit_code, in the record's order
        "admin_unit_code_source",
        *_TEXT_FIELDS[6:],
        "applicant_birth_date",
        "applicant_sex",
        "status",
        "channel",
        "received_at",
        "due_at",
        "completed_at",
    ),
    reasons={
        "unknown_receiving_unit": (
            "receiving unit code is not in the list of units",
            "Mã đơn vị tiếp nhận không có trong danh mục",
        ),
    },
    schema_generated=False,
)


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
