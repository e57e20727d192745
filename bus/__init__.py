"""The foundation every other package stands on: settings (``bus.settings``), the one
error root (``bus.errors``), metrics objects (``bus.metrics``), Kafka client
configuration and topic administration (``bus.kafka_client``, ``bus.topic_admin``,
``bus.consumers``), health checks, logs and traces. It imports no other package of
the project (the import-linter contract in pyproject.toml enforces it)."""

__all__: list[str] = []
