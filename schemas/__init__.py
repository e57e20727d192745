"""The contract between sources, processor and sinks: the catalog of datasets
(``schemas.catalog``), their Avro schemas and pydantic models (``schemas.models``), the
codec (``schemas.codec``), topic and header names (``schemas.topics``,
``schemas.headers``), dead letters, and the domain rules they share
(``schemas.domain``). It stands on ``bus`` only."""

__all__: list[str] = []
