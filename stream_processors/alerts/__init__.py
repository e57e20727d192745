"""stream_processors.alerts."""

__all__: list[str] = []
