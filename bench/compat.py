"""Import paths the benchmarks use, on this tree and on the tree before the layers.

The benchmarks run unchanged against an older checkout of the project (``bench/ab.py``
runs them on both, before/after), and a few names moved when the code was split into
layers (``bus`` > ``schemas`` > ``stream_processors | producers | sinks`` >
``databus``). Each name is imported from where it lives now, else from where it lived.
Nothing here changes behaviour: the same objects under one name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

try:  # the layered tree
    from bus.kafka_client import producer_config
    from bus.topic_admin import TopicSpec, ensure_topics
    from databus.dashboard import scrape
    from databus.local_stack import LocalStack, free_port, start_redis
    from producers.simulators import (
        DossierEvent,
        DossierSpec,
        generate_dossiers,
        publish_records,
    )
    from schemas.codec import compile_decoder, compile_encoder
    from schemas.dead_letters import DeadLetter, dlq_headers
    from schemas.domain.reference import load_reference
    from schemas.models.public_service import Dossier
    from schemas.topics import bus_topics
    from sinks.ioc.codec import field_text
    from sinks.ioc.store import IocStoreSink
    from stream_processors.alerts.facts import contributions

    CLI_MODULE = "databus"
    LAYERED = True
except ImportError:  # before the layers (43788e1 and earlier)
    if not TYPE_CHECKING:  # mypy checks the layered tree's names only
        from bus.dashboard import scrape
        from bus.local_stack import (
            LocalStack,
            free_port,
            start_redis,
        )
        from bus.topics import TopicSpec, bus_topics, ensure_topics
        from producers.dossier_simulator import (
            SimConfig as DossierSpec,
        )
        from producers.dossier_simulator import SimEvent as DossierEvent
        from producers.dossier_simulator import generate as generate_dossiers
        from producers.dossier_simulator import publish_events as publish_records
        from schemas.avro_compile import compile_encoder
        from schemas.avro_decode import compile_decoder
        from sinks.ioc_codec import field_text
        from sinks.ioc_store import IocStoreSink
        from stream_processors.alert_facts import contributions
        from stream_processors.dlq import DeadLetter, dlq_headers
        from stream_processors.reference import load_reference

        from producers.publisher import producer_config
        from schemas.models import Dossier

        CLI_MODULE = "bus"
        LAYERED = False

__all__ = [
    "CLI_MODULE",
    "LAYERED",
    "DeadLetter",
    "Dossier",
    "DossierEvent",
    "DossierSpec",
    "IocStoreSink",
    "LocalStack",
    "TopicSpec",
    "bus_topics",
    "compile_decoder",
    "compile_encoder",
    "contributions",
    "dlq_headers",
    "ensure_topics",
    "field_text",
    "free_port",
    "generate_dossiers",
    "load_reference",
    "producer_config",
    "publish_records",
    "scrape",
    "start_redis",
]
