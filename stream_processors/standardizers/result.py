"""What a standardizer returns: ``Standardized`` or ``Rejected``; defined once for every dataset.

``Invalid`` is the engine's internal early exit (a rule raises it, ``run`` turns it into
``Rejected`` with ``rejected``); it never escapes a standardizer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Invalid", "Rejected", "Standardized", "rejected"]


@dataclass(frozen=True, slots=True)
class Standardized:
    event: dict[str, Any]  # ready for the dataset's .std.v1 writer
    flags: tuple[str, ...]  # union of both images' quality_flags, for metrics


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str
    field: str
    message_en: str
    message_vi: str


class Invalid(Exception):
    """A reason code, the field it concerns and a detail without personal data."""

    def __init__(self, reason: str, field: str, detail: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field
        self.detail = detail


def rejected(problem: Invalid, reasons: Mapping[str, tuple[str, str]]) -> Rejected:
    """``problem`` worded with ``reasons`` (reason -> (English, Vietnamese) base message)."""
    english, vietnamese = reasons[problem.reason]
    return Rejected(
        reason=problem.reason,
        field=problem.field,
        message_en=f"{problem.field}: {english}: {problem.detail}",
        message_vi=f"{vietnamese} (trường {problem.field})",
    )
