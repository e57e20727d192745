"""stream_processors.alerts.rules."""

__all__: list[str] = []
