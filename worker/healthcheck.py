"""`python -m worker.healthcheck`: exit 0 while a worker on this host keeps its SQL heartbeat fresh."""

from __future__ import annotations

import socket
import sys
from datetime import timedelta

from sqlalchemy import select

from services.config import Settings
from services.registry.db import make_engine
from services.registry.tables import WorkerRow, utcnow


def main() -> int:
    settings = Settings()
    engine = make_engine(settings.database_url)
    since = utcnow() - timedelta(seconds=settings.worker_stale_after_s)
    with engine.connect() as conn:
        names = conn.scalars(select(WorkerRow.name).where(WorkerRow.last_seen >= since)).all()
    engine.dispose()
    host = socket.gethostname()
    return 0 if any(name.split("@", 1)[-1].rsplit(":", 1)[0] == host for name in names) else 1


if __name__ == "__main__":
    sys.exit(main())
