"""schemas.domain."""

__all__: list[str] = []
