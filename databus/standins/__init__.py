"""Stand-ins for servers the province runs elsewhere, so the bus runs on one machine.

- ``registry_server``: a Confluent-compatible schema registry over the ``_schemas``
  topic (the embedded broker has none);
- ``health_receiver``: a FHIR server for the health axis that behaves as a standard one
  does (versions, ``If-Match``, conditional create);
- ``object_store``: the embedded broker's storage on disk (an S3 subset over files,
  with retention).

``databus up`` and the tests start them; production uses the real servers.
"""

from __future__ import annotations

# Nothing imported here: each stand-in runs as a process of its own, and importing
# one (``python -m databus.standins.object_store``) must not load the others.
__all__: list[str] = []
