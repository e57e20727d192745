"""PostgreSQL test helper: drop a client's connections, as a server restart would."""

from __future__ import annotations

import time

import sqlalchemy as sa

__all__ = ["terminate_backends"]


def terminate_backends(url: str, app_name: str) -> int:
    """Terminate the backends of ``application_name`` = ``app_name`` (only those: the
    database may be shared), wait until the server no longer lists them, and return
    how many there were."""
    # autocommit: pg_stat_activity is a snapshot kept for the whole transaction
    admin = sa.create_engine(url, poolclass=sa.NullPool, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            pids = conn.scalars(
                sa.text(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid() AND application_name = :app"
                ),
                {"app": app_name},
            ).all()
            for pid in pids:
                conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                alive = conn.scalar(
                    sa.text("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(:pids)"),
                    {"pids": list(pids)},
                )
                if not alive:
                    break
                time.sleep(0.02)  # polling the server's view, bounded by the deadline
            return len(pids)
    finally:
        admin.dispose()
