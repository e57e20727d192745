"""The IOC store: every catalog dataset's latest state, the dashboards' KPIs, the
geo index and the alerts, in Redis (key layout: ``sinks/ioc/README.md``).

The public face: the sink (:class:`IocStoreSink`), what a rebuild needs
(:func:`forget_applied`, then a ``SinkRunner`` with ``rewind_all``; see
``databus sink ioc --rebuild``) and the readers the dashboards use.
"""

from sinks.ioc.alerts import ALERT_CHANNEL, ALERT_STREAM_KEY, OPEN_ALERTS_KEY
from sinks.ioc.dossier_kpis import UnitDayKpis, UnitKpis
from sinks.ioc.dossiers import read_sector_kpis, read_unit_day_kpis, read_unit_kpis
from sinks.ioc.geo import GeoHit, search
from sinks.ioc.ledger import read_ledger
from sinks.ioc.offsets import forget_applied, read_applied
from sinks.ioc.read import (
    CommuneEducation,
    CommuneHealth,
    FeedbackKpis,
    StationAqi,
    read_commune_education,
    read_commune_health,
    read_feedback_kpis,
    read_station_aqi,
)
from sinks.ioc.store import IocStoreSink

__all__ = [
    "ALERT_CHANNEL",
    "ALERT_STREAM_KEY",
    "OPEN_ALERTS_KEY",
    "CommuneEducation",
    "CommuneHealth",
    "FeedbackKpis",
    "GeoHit",
    "IocStoreSink",
    "StationAqi",
    "UnitDayKpis",
    "UnitKpis",
    "forget_applied",
    "read_applied",
    "read_commune_education",
    "read_commune_health",
    "read_feedback_kpis",
    "read_ledger",
    "read_sector_kpis",
    "read_station_aqi",
    "read_unit_day_kpis",
    "read_unit_kpis",
    "search",
]
