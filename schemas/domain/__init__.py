"""Domain rules the sources, the processor and the sinks share, as pure functions.

- ``reference``: the reference data (units, communes and the 2025 crosswalk, CCCD
  province codes, public holidays) loaded from ``schemas/data/`` (``load_reference``);
- ``citizen_id``, ``insurance``, ``phone``: Vietnamese identifiers and phone numbers;
- ``text``: Unicode and Vietnamese tone-mark normalisation (``normalize_text``);
- ``timeparse``: the time forms sources send, read in Asia/Ho_Chi_Minh;
- ``working_days``: working days and deadlines under the administrative-procedure rules;
- ``code_lists``: the code lists of ``schemas/data/codes_*.csv``;
- ``freshness``: whether a dataset is live under its update obligation (``is_live``);
- ``delivery``: reconciliation and the per-unit delivery ledger (``build_ledger``).

Import from the module that holds a rule (``from schemas.domain.reference import
load_reference``); this package only names them.
"""

from __future__ import annotations

__all__: list[str] = []
