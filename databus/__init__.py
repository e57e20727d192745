"""databus."""

__all__: list[str] = []
