"""schemas.models."""

__all__: list[str] = []
