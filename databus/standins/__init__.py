"""databus.standins."""

__all__: list[str] = []
