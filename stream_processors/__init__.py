"""The processor: raw change events in, standardized events, dead letters, quality
reports and alerts out. ``batch_core`` is the pure batch logic, ``batch_loop`` its
Kafka I/O, ``app`` the Faust worker that hosts it; ``standardizers`` and ``alerts``
hold the per-dataset rules; ``share`` and ``share_loop`` mask std events for other
agencies. It stands on ``schemas`` and ``bus`` only."""

__all__: list[str] = []
