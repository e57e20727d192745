"""What the sector models share: the envelope's operation and the enums several sectors use.

``Op`` is the ``op`` of every dataset's Debezium-style envelope (every raw schema has
the same ``Op`` enum); ``Sex`` is the applicant's, patient's, student's or teacher's sex
wherever a record carries one. The sector modules (``schemas.models.<sector>``) hold
only what is their own.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import ConfigDict

__all__ = ["RECORD_CONFIG", "Op", "Sex"]

# Every source record: immutable, no unknown fields, text kept exactly as sent (the
# standardizer normalizes it and flags what it changed).
RECORD_CONFIG = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=False)


class Op(StrEnum):
    CREATE = "c"
    UPDATE = "u"
    DELETE = "d"
    READ = "r"


class Sex(StrEnum):
    MALE = "MALE"
    FEMALE = "FEMALE"
