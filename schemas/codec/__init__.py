"""schemas.codec."""

__all__: list[str] = []
