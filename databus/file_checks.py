"""Checks a file drop runs beyond the model, per dataset, so a unit learns at once
what the stream processor would otherwise dead-letter later."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from pydantic import BaseModel

from producers.file_drop import RowCheck
from schemas.catalog import DOSSIERS, Dataset
from schemas.domain.reference import load_reference
from stream_processors.standardizers import STANDARDIZERS, Rejected

__all__ = ["row_check_for"]


def _dossier_check() -> RowCheck:
    reference = load_reference()
    standardize = STANDARDIZERS[DOSSIERS.id]

    def check(record: BaseModel) -> tuple[str, str, str] | None:
        now = datetime.now(UTC)
        raw = {
            "event_id": str(uuid.uuid4()),
            "op": "r",
            "ts_ms": now,
            "source": {
                "system": "file",
                "unit": DOSSIERS.owner_unit,  # what the Publisher sends by default
                "dataset": DOSSIERS.id,
                "ts_ms": now,
                "version": 1,
            },
            "before": None,
            "after": record.model_dump(mode="json"),
        }
        result = standardize(raw, reference, now)
        if isinstance(result, Rejected):
            return result.field.removeprefix("after."), result.message_en, result.message_vi
        return None

    return check


def row_check_for(dataset: Dataset) -> RowCheck | None:
    if dataset.id == DOSSIERS.id:
        return _dossier_check()
    return None
