"""sinks.ioc."""

__all__: list[str] = []
