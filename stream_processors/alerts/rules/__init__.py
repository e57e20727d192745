"""The alert rules, one module per family, and their configuration (``config``).

``alert_rules.toml`` beside this file holds the packaged defaults; ``config.load_rules``
reads it (or the file ``DATABUS_ALERTS__RULES_FILE`` names) into a ``RulesConfig``.
"""

from __future__ import annotations

from stream_processors.alerts.rules.config import DEFAULT_RULES_FILE, RulesConfig, load_rules

__all__ = ["DEFAULT_RULES_FILE", "RulesConfig", "load_rules"]
