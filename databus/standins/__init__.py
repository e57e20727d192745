"""Stand-ins for servers the province runs elsewhere, so the bus runs on one machine.

- ``registry_server``: a Confluent-compatible schema registry over the ``_schemas``
  topic (the embedded broker has none);
- ``health_receiver``: a FHIR server for the health axis that behaves as a standard one
  does (versions, ``If-Match``, conditional create).

``databus up`` and the tests start them; production uses the real servers.
"""

from __future__ import annotations

from databus.standins.health_receiver import HealthReceiver
from databus.standins.registry_server import RegistryServer

__all__ = ["HealthReceiver", "RegistryServer"]
